"""The blocking API mirrors the asyncio one: same names, parameters, defaults and annotations.

``Client``, ``Worker`` and ``SyncTask`` are written by hand over ``AsyncClient``, ``AsyncWorker``
and ``Task``; nothing but these tests keeps them from drifting apart when a parameter is added
to one side only (as psycopg checks its sync and async connection classes). Every difference
that is meant is listed here with its reason; any other difference fails.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator
from typing import Any

import pytest

from gearsql import AsyncClient, AsyncWorker, Client, Worker
from gearsql.client import Priority, SyncTask, Task

#: (blocking class, asyncio class) pairs.
PAIRS = [(Client, AsyncClient), (Worker, AsyncWorker), (SyncTask, Task)]

#: Blocking names that stand for an asyncio member of another name.
TWIN = {
    "__enter__": "__aenter__",
    "__exit__": "__aexit__",
    # Blocking until the result is there is what Task.wait does; SyncTask.result is that, as
    # concurrent.futures.Future.result(timeout) is.
    (SyncTask, "result"): "wait",
}

#: Members one side has and the other need not, with the reason.
ONE_SIDED = {
    (SyncTask, "task"): "the Task a SyncTask drives, for code that mixes both APIs",
    (Task, "result"): "the result of a finished Task without waiting; SyncTask.result waits",
    (Task, "__await__"): "awaiting is asyncio's; SyncTask.result blocks instead",
    (Task, "__aiter__"): "async for is asyncio's; SyncTask.updates() is a plain iterator",
    (AsyncClient, "start_background"): (
        "many submissions started in one pass of the event loop, without a Task each (the "
        "relay's batches); through a blocking client each call would be a thread hop anyway"
    ),
}

#: Parameters whose defaults differ on purpose, with the reason.
OWN_DEFAULTS = {
    (Worker, "run_forever", "handle_signals"): (
        "a blocking worker is a program's main loop and stops on SIGTERM/SIGINT by default; "
        "an AsyncWorker runs inside someone else's event loop, which owns the signals"
    ),
}

#: How an asyncio annotation reads in the blocking API.
BLOCKING_SPELLING = [
    (r"\bAsyncGenerator\[(.*), None\]", r"Iterator[\1]"),
    (r"\bAsyncClient\b", "Client"),
    (r"\bAsyncWorker\b", "Worker"),
    (r"(?<![.\w])Task\b", "SyncTask"),
]


def blocking_spelling(annotation: str) -> str:
    for pattern, replacement in BLOCKING_SPELLING:
        annotation = re.sub(pattern, replacement, annotation)
    return annotation


@pytest.fixture(scope="module")
def instances() -> Iterator[dict[type, Any]]:
    """One object of each class, to see the attributes __init__ sets (nothing connects)."""
    client = Client("127.0.0.1:1")
    task = Task(b"fn", b"", b"", Priority.NORMAL, 0)
    try:
        yield {
            Client: client,
            AsyncClient: AsyncClient("127.0.0.1:1"),
            Worker: Worker("127.0.0.1:1"),
            AsyncWorker: AsyncWorker("127.0.0.1:1"),
            SyncTask: SyncTask(client, task),
            Task: task,
        }
    finally:
        client.close()


def public_names(cls: type, instance: object) -> set[str]:
    names = {name for name in dir(cls) if not name.startswith("_")}
    names |= {name for name in vars(instance) if not name.startswith("_")}
    for dunder in (
        "__init__",
        "__enter__",
        "__exit__",
        "__aenter__",
        "__aexit__",
        "__await__",
        "__aiter__",
        "__iter__",
    ):
        if dunder in vars(cls):
            names.add(dunder)
    return names


def twin(blocking: type, name: str) -> str:
    found = TWIN.get((blocking, name), TWIN.get(name, name))
    assert isinstance(found, str)
    return found


@pytest.mark.parametrize(("blocking", "asyncio_"), PAIRS, ids=lambda cls: cls.__name__)
def test_both_sides_have_the_same_public_members(
    blocking: type, asyncio_: type, instances: dict[type, Any]
) -> None:
    mine = {twin(blocking, name) for name in public_names(blocking, instances[blocking])}
    theirs = public_names(asyncio_, instances[asyncio_])
    only_blocking = {n for n in mine - theirs if (blocking, n) not in ONE_SIDED}
    only_asyncio = {n for n in theirs - mine if (asyncio_, n) not in ONE_SIDED}
    assert only_blocking == set(), f"{blocking.__name__} has these, {asyncio_.__name__} not"
    assert only_asyncio == set(), f"{asyncio_.__name__} has these, {blocking.__name__} not"


#: Methods whose signatures differ on purpose, with the reason.
OWN_SIGNATURE = {
    (SyncTask, "__init__"): "a SyncTask wraps a Task (and its Client) instead of a job's parts",
}


def methods() -> Iterator[Any]:
    for blocking, asyncio_ in PAIRS:
        for name, member in sorted(vars(blocking).items()):
            public = not name.startswith("_") or name in ("__init__", "__enter__", "__exit__")
            if callable(member) and public and (blocking, name) not in OWN_SIGNATURE:
                yield pytest.param(blocking, asyncio_, name, id=f"{blocking.__name__}.{name}")


@pytest.mark.parametrize(("blocking", "asyncio_", "name"), list(methods()))
def test_each_method_takes_the_same_parameters_with_the_same_defaults(
    blocking: type, asyncio_: type, name: str
) -> None:
    mine = inspect.signature(getattr(blocking, name))
    theirs = inspect.signature(getattr(asyncio_, twin(blocking, name)))
    assert list(mine.parameters) == list(theirs.parameters), "parameter names and order"
    for param in mine.parameters.values():
        other = theirs.parameters[param.name]
        assert param.kind == other.kind, f"{param.name}: positional or keyword"
        assert str(param.annotation) == blocking_spelling(str(other.annotation)), param.name
        if (blocking, name, param.name) in OWN_DEFAULTS:
            assert param.default != other.default, "listed in OWN_DEFAULTS but equal"
        else:
            assert param.default == other.default, f"{param.name}: default"
    if name not in ("__enter__", "__exit__"):
        assert str(mine.return_annotation) == blocking_spelling(str(theirs.return_annotation))


@pytest.mark.parametrize(("blocking", "asyncio_"), PAIRS, ids=lambda cls: cls.__name__)
def test_the_blocking_attributes_read_the_asyncio_ones(
    blocking: type, asyncio_: type, instances: dict[type, Any]
) -> None:
    """Attributes that are not methods show the wrapped object's values, not copies."""
    mine, theirs = instances[blocking], instances[asyncio_]
    wrapped = {Client: "_async", Worker: "_async", SyncTask: "task"}[blocking]
    inner = getattr(mine, wrapped)
    shared = [
        name
        for name in public_names(asyncio_, theirs)
        if not name.startswith("_") and not callable(getattr(theirs, name))
    ]
    assert shared, "every pair has attributes"
    for name in shared:
        assert getattr(mine, name) == getattr(inner, name), name
