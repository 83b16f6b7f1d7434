"""The client library against real job servers: gearsql and C gearmand, real sockets, no mocks."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import signal
import threading
import time
import zlib
from collections.abc import AsyncIterator, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from conftest import ServerProcess, free_port
from wire import Peer

import gearsql._loopthread
from gearsql import (
    AsyncClient,
    AsyncWorker,
    Client,
    ConnectionLost,
    InvalidArgument,
    InvalidPayload,
    JobException,
    JobFailed,
    JobTimeout,
    Priority,
    ServerError,
    ServerUnavailable,
    WorkData,
    WorkerJob,
    WorkStatus,
    WorkWarning,
)
from gearsql._loopthread import EventLoopThread
from gearsql._servers import parse_servers

T = TypeVar("T")
WAIT = 15.0


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a test coroutine with an overall deadline."""
    return asyncio.run(asyncio.wait_for(coro, 40))


def url(*servers: ServerProcess) -> str:
    return ",".join(f"{s.host}:{s.port}" for s in servers)


@contextlib.asynccontextmanager
async def serving(worker: AsyncWorker) -> AsyncIterator[AsyncWorker]:
    """Run ``worker`` on this loop for the duration of the block, then stop it gracefully."""
    task = asyncio.get_running_loop().create_task(worker.run_forever())
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, WAIT)


@contextlib.contextmanager
def worker_in_thread(
    server: ServerProcess, function: str, fn: Any, concurrency: int = 1
) -> Iterator[None]:
    """An AsyncWorker doing ``function`` with ``fn``, on an event loop of its own in another
    thread, for the duration of the block (for tests of the blocking Client)."""
    stop = threading.Event()

    async def work() -> None:
        worker = AsyncWorker(url(server), concurrency=concurrency)
        worker.register(function, fn)
        async with serving(worker):
            while not stop.is_set():
                await asyncio.sleep(0.02)

    thread = threading.Thread(target=lambda: asyncio.run(work()))
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(WAIT)


def reverse(job: WorkerJob) -> bytes:
    return job.data[::-1]


# -- submitting ------------------------------------------------------------------------------


@pytest.mark.parametrize("priority", list(Priority))
def test_foreground_job_returns_the_result_in_each_priority(
    any_server: ServerProcess, priority: Priority
) -> None:
    async def main() -> None:
        worker = AsyncWorker(url(any_server))
        worker.register("reverse", reverse)
        async with serving(worker), AsyncClient(url(any_server)) as client:
            result = await client.submit("reverse", b"hello", priority=priority, timeout=WAIT)
            assert result == b"olleh"
            # str payloads are encoded with the client's encoding (UTF-8)
            assert await client.submit("reverse", "åb", timeout=WAIT) == "åb".encode()[::-1]

    run(main())


def test_background_jobs_run_high_before_normal_before_low(any_server: ServerProcess) -> None:
    async def main() -> None:
        seen: list[bytes] = []
        async with AsyncClient(url(any_server)) as client:
            for level in ("low", "normal", "high"):
                await client.submit_background("order", level, priority=level, timeout=WAIT)
            done = asyncio.Event()

            async def record(job: WorkerJob) -> None:
                seen.append(job.data)
                if len(seen) == 3:
                    done.set()

            worker = AsyncWorker(url(any_server))
            worker.register("order", record)
            async with serving(worker):
                await asyncio.wait_for(done.wait(), WAIT)
        assert seen == [b"high", b"normal", b"low"]

    run(main())


def test_updates_arrive_through_callbacks_and_the_async_iterator(any_server: ServerProcess) -> None:
    async def chatty(job: WorkerJob) -> bytes:
        job.send_status(1, 3)
        job.send_data(b"part1")
        job.send_warning("careful")
        job.send_status(3, 3)
        return b"end"

    async def main() -> None:
        worker = AsyncWorker(url(any_server))
        worker.register("chatty", chatty)
        async with serving(worker), AsyncClient(url(any_server)) as client:
            got: list[object] = []
            result = await client.submit(
                "chatty",
                b"",
                timeout=WAIT,
                on_data=lambda d: got.append(("data", d)),
                on_warning=lambda d: got.append(("warning", d)),
                on_status=lambda n, d: got.append(("status", n, d)),
            )
            assert result == b"end"
            assert got == [
                ("status", 1, 3),
                ("data", b"part1"),
                ("warning", b"careful"),
                ("status", 3, 3),
            ]
            task = client.submit_task("chatty")
            updates = [update async for update in task.updates(timeout=WAIT)]
            assert updates == [
                WorkStatus(1, 3),
                WorkData(b"part1"),
                WorkWarning(b"careful"),
                WorkStatus(3, 3),
            ]
            assert await task.wait(WAIT) == b"end"
            assert (task.numerator, task.denominator) == (3, 3)
            assert task.handle is not None and task.done()

    run(main())


@pytest.mark.parametrize("exceptions", [True, False])
def test_worker_exception_is_job_exception_only_with_the_option(
    any_server: ServerProcess, exceptions: bool
) -> None:
    def broken(job: WorkerJob) -> bytes:
        raise ValueError("no such image")

    async def main() -> None:
        worker = AsyncWorker(url(any_server))
        worker.register("broken", broken)
        async with serving(worker), AsyncClient(url(any_server), exceptions=exceptions) as client:
            if exceptions:
                with pytest.raises(JobException, match="ValueError: no such image") as info:
                    await client.submit("broken", b"x", timeout=WAIT)
                assert info.value.data == b"ValueError: no such image"
            else:
                with pytest.raises(JobFailed):
                    await client.submit("broken", b"x", timeout=WAIT)
            # the connection is still good afterwards
            assert not (await client.get_status(b"H:nobody:1", timeout=WAIT)).known

    run(main())


def test_work_fail_raises_job_failed(any_server: ServerProcess) -> None:
    def refuse(job: WorkerJob) -> bytes:
        job.fail()
        return b"ignored"

    async def main() -> None:
        worker = AsyncWorker(url(any_server))
        worker.register("refuse", refuse)
        async with serving(worker), AsyncClient(url(any_server)) as client:
            with pytest.raises(JobFailed) as info:
                await client.submit("refuse", timeout=WAIT)
            assert info.value.handle

    run(main())


def test_background_job_status_by_handle_and_by_unique(any_server: ServerProcess) -> None:
    async def main() -> None:
        async with AsyncClient(url(any_server)) as client:
            job = await client.submit_background("later", b"x", unique="order-17", timeout=WAIT)
            assert job.server == url(any_server)
            status = await client.get_status(job, timeout=WAIT)
            assert status.known and not status.running
            by_unique = await client.get_status_unique("order-17", timeout=WAIT)
            assert by_unique.known and not by_unique.running
            assert by_unique.clients == 0
            # a background resubmission with the same unique coalesces
            again = await client.submit_background("later", b"y", unique="order-17", timeout=WAIT)
            assert again.handle == job.handle
            assert not (await client.get_status_unique("nothing-here", timeout=WAIT)).known
            assert not (await client.get_status(b"H:nowhere:999", timeout=WAIT)).known
            # Without a unique (gearsql keeps such a queued job packed), between two others.
            plain = await client.submit_background("later", b"z", timeout=WAIT)
            await client.submit_background("later", b"after", timeout=WAIT)
            status = await client.get_status(plain, timeout=WAIT)
            assert status.known and not status.running

    run(main())


def test_background_jobs_started_without_waiting_resolve_to_their_handles_or_errors(
    any_server: ServerProcess,
) -> None:
    async def main() -> None:
        async with AsyncClient(url(any_server)) as client:
            with pytest.raises(InvalidArgument, match="NUL"):  # before anything is sent
                client.start_background("f", b"x", unique="a\0b")
            # Not connected yet: the first goes through submit_background in a Task.
            first = client.start_background("many", b"0", unique="many-0")
            assert (await asyncio.wait_for(first, WAIT)).server == url(any_server)
            # Connected: many at once, one write, no Task each.
            futures = [
                client.start_background("many", b"x", unique=f"many-{n}", priority="low")
                for n in range(1, 200)
            ]
            assert not any(isinstance(future, asyncio.Task) for future in futures)
            handles = await asyncio.wait_for(asyncio.gather(*futures), WAIT)
            assert len({job.handle for job in handles}) == 199
            assert (await client.get_status_unique("many-150", timeout=WAIT)).known
            again = client.start_background("many", b"y", unique="many-7")
            assert (await asyncio.wait_for(again, WAIT)).handle == handles[6].handle
            assert (await asyncio.wait_for(client.start_background("capped"), WAIT)).handle
            with Peer(any_server.address) as admin:
                assert admin.admin("maxqueue capped 1", list_reply=False).startswith(b"OK")
            with pytest.raises(ServerError) as info:
                await asyncio.wait_for(client.start_background("capped"), WAIT)
            assert info.value.code == "QUEUE_ERROR"

    run(main())


def test_epoch_jobs_run_when_due_and_wait_otherwise(any_server: ServerProcess) -> None:
    async def main() -> None:
        async with AsyncClient(url(any_server)) as client:
            future = await client.submit_background(
                "at", b"future", run_at=time.time() + 3600, timeout=WAIT
            )
            await client.submit_background("at", b"past", run_at=time.time() - 60, timeout=WAIT)
            ran: list[bytes] = []
            second = asyncio.Event()

            async def record(job: WorkerJob) -> bytes:
                ran.append(job.data)
                if job.data == b"fg":
                    second.set()
                return job.data

            worker = AsyncWorker(url(any_server))
            worker.register("at", record)
            async with serving(worker):
                # a foreground job behind the due one: when it is done, the due one ran first
                assert await client.submit("at", b"fg", timeout=WAIT) == b"fg"
                status = await client.get_status(future, timeout=WAIT)
            assert ran == [b"past", b"fg"]
            assert status.known and not status.running
            with pytest.raises(InvalidArgument):
                await client.submit_background("at", run_at=1, priority="high")

    run(main())


def test_same_unique_coalesces_into_one_job(any_server: ServerProcess) -> None:
    async def main() -> None:
        release = asyncio.Event()
        runs: list[bytes] = []

        async def slow(job: WorkerJob) -> bytes:
            runs.append(job.unique)
            await release.wait()
            return b"shared"

        worker = AsyncWorker(url(any_server))
        worker.register("slow", slow)
        async with (
            serving(worker),
            AsyncClient(url(any_server)) as one,
            AsyncClient(url(any_server)) as two,
        ):
            first = one.submit_task("slow", b"a", unique="same")
            second = two.submit_task("slow", b"b", unique="same")
            while first.handle is None or second.handle is None:
                await asyncio.sleep(0.01)
            assert first.handle == second.handle
            release.set()
            assert await one.gather([first], timeout=WAIT) == [b"shared"]
            assert await second.wait(WAIT) == b"shared"
        assert runs == [b"same"]

    run(main())


def test_a_wait_without_worker_times_out(any_server: ServerProcess) -> None:
    async def main() -> None:
        async with AsyncClient(url(any_server)) as client:
            with pytest.raises(JobTimeout):
                await client.submit("nobody-works-here", b"x", timeout=0.3)
            task = client.submit_task("nobody-works-here")
            with pytest.raises(JobTimeout):
                await task.wait(0.3)
            with pytest.raises(JobTimeout):
                await client.gather([task], timeout=0.3)
            with pytest.raises(JobTimeout):
                async for _ in client.as_completed([task], timeout=0.3):
                    pass
            assert not task.done()
            task.cancel()

    run(main())


def test_cancelling_an_awaiter_of_a_task_leaves_the_job_running(any_server: ServerProcess) -> None:
    async def main() -> None:
        releases: list[asyncio.Event] = []

        async def slow(job: WorkerJob) -> bytes:
            releases.append(asyncio.Event())
            await releases[-1].wait()
            return job.data

        worker = AsyncWorker(url(any_server), concurrency=4)
        worker.register("slow", slow)
        async with serving(worker), AsyncClient(url(any_server)) as client:
            loop = asyncio.get_running_loop()
            # The first task connects (a runner Task of its own); the second goes out on the
            # connection at once (its submission's future is its outcome).
            for data in (b"first", b"second"):
                task = client.submit_task("slow", data)
                gone = loop.create_task(_await(task))
                staying = [loop.create_task(_await(task)) for _ in range(2)]
                while not releases:
                    await asyncio.sleep(0.01)
                gone.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await gone
                assert not task.done()
                releases.pop().set()
                assert await asyncio.wait_for(_await(task), WAIT) == data
                assert [await t for t in staying] == [data, data]
                assert await task == data  # once more, after the end

            stopped = client.submit_task("slow")
            waiting = loop.create_task(_await(stopped))
            await asyncio.sleep(0)
            stopped.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            assert stopped.done()

            left = client.submit_task("slow")
            waiting = loop.create_task(_await(left))
            while len(releases) < 2:
                await asyncio.sleep(0.01)
            await client.close()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            assert left.done()
            for release in releases:
                release.set()

    run(main())


async def _await(awaitable: Any) -> Any:
    return await awaitable


def test_scatter_gather_over_one_connection(any_server: ServerProcess) -> None:
    async def square(job: WorkerJob) -> str:
        return str(int(job.data) ** 2)

    async def main() -> None:
        worker = AsyncWorker(url(any_server), concurrency=4)
        worker.register("square", square)
        async with serving(worker), AsyncClient(url(any_server)) as client:
            tasks = [client.submit_task("square", str(n)) for n in range(50)]
            results = await client.gather(tasks, timeout=WAIT)
            assert results == [str(n * n).encode() for n in range(50)]
            more = [client.submit_task("square", str(n)) for n in range(10)]
            finished = [t async for t in client.as_completed(more, timeout=WAIT)]
            assert sorted(int(t.result()) for t in finished) == [n * n for n in range(10)]
            servers = {server.link for server in client._servers}
            assert len(servers) == 1  # one connection carried all of them

    run(main())


def test_gather_returns_exceptions_in_place_when_asked(any_server: ServerProcess) -> None:
    def maybe(job: WorkerJob) -> bytes:
        if job.data == b"bad":
            raise RuntimeError("bad input")
        return job.data

    async def main() -> None:
        worker = AsyncWorker(url(any_server))
        worker.register("maybe", maybe)
        async with serving(worker), AsyncClient(url(any_server)) as client:
            tasks = [client.submit_task("maybe", d) for d in (b"ok", b"bad", b"fine")]
            results = await client.gather(tasks, timeout=WAIT, return_exceptions=True)
            assert results[0] == b"ok" and results[2] == b"fine"
            assert isinstance(results[1], JobException)
            with pytest.raises(JobException):
                await client.gather(tasks, timeout=WAIT)

    run(main())


def test_sync_client_does_everything_the_async_one_does(any_server: ServerProcess) -> None:
    def chatty(job: WorkerJob) -> bytes:
        job.send_data(b"d")
        job.send_status(1, 1)
        return job.data.upper()

    with worker_in_thread(any_server, "upper", chatty, concurrency=2):
        with Client(url(any_server)) as client:
            data: list[bytes] = []
            assert client.submit("upper", b"abc", timeout=WAIT, on_data=data.append) == b"ABC"
            assert data == [b"d"]
            tasks = [client.submit_task("upper", f"x{n}") for n in range(10)]
            assert client.gather(tasks, timeout=WAIT) == [f"X{n}".encode() for n in range(10)]
            more = [client.submit_task("upper", "q") for _ in range(3)]
            assert [t.result() for t in client.as_completed(more, timeout=WAIT)] == [b"Q"] * 3
            task = client.submit_task("upper", "it")
            assert list(task.updates(timeout=WAIT)) == [WorkData(b"d"), WorkStatus(1, 1)]
            assert task.result(WAIT) == b"IT"
            handle = client.submit_background("queued-only", b"x", unique="u1", timeout=WAIT)
            assert client.get_status(handle, timeout=WAIT).known
            assert client.get_status_unique("u1", timeout=WAIT).known
            with pytest.raises(JobTimeout):
                client.submit("queued-only", timeout=0.2)


@pytest.mark.parametrize("kind", ["stdlib", "uvloop"])
def test_sync_client_shared_by_threads_passes_results_exceptions_and_ctrl_c(
    gearsql_server: ServerProcess, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The main thread runs a stdlib loop itself (Ctrl-C then comes in the loop); uvloop's it
    # leaves to the caretaker and waits (Ctrl-C then comes in that wait).
    if kind == "stdlib":
        monkeypatch.setattr(gearsql._loopthread, "new_event_loop", asyncio.new_event_loop)
    else:
        pytest.importorskip("uvloop")

    def answer(job: WorkerJob) -> bytes:
        if job.data.startswith(b"fail"):
            job.fail()
        return job.data.upper()

    interrupted = threading.Event()

    def on_sigint(signum: int, frame: object) -> None:
        if not interrupted.is_set():  # only the first one: the sender keeps trying until seen
            interrupted.set()
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        with worker_in_thread(gearsql_server, "answer", answer, concurrency=4):
            with Client(url(gearsql_server)) as client:
                # Many threads at once, each with its own results, one of them with failures.
                outcomes: dict[int, list[object]] = {}

                def caller(n: int) -> None:
                    got: list[object] = []
                    for k in range(20):
                        data = f"{'fail' if n == 0 and k % 5 == 0 else 'ok'}-{n}-{k}"
                        try:
                            got.append(client.submit("answer", data, timeout=WAIT))
                        except JobFailed as exc:
                            got.append(exc)
                    outcomes[n] = got

                callers = [threading.Thread(target=caller, args=(n,)) for n in range(8)]
                for t in callers:
                    t.start()
                for t in callers:
                    t.join(4 * WAIT)
                assert sorted(outcomes) == list(range(8))
                for n, got in outcomes.items():
                    for k, value in enumerate(got):
                        if n == 0 and k % 5 == 0:
                            assert isinstance(value, JobFailed)
                        else:
                            assert value == f"OK-{n}-{k}".encode()

                # Ctrl-C interrupts a blocking wait in the main thread, as before; the client
                # stays usable.
                main = threading.main_thread().ident
                assert main is not None and threading.current_thread() is threading.main_thread()

                def press_ctrl_c() -> None:
                    while not interrupted.wait(0.05):
                        signal.pthread_kill(main, signal.SIGINT)

                sender = threading.Thread(target=press_ctrl_c)
                sender.start()
                with pytest.raises(KeyboardInterrupt):
                    client.submit("nobody-serves-this", timeout=None)
                sender.join(WAIT)
                assert client.submit("answer", "again", timeout=WAIT) == b"AGAIN"
            with pytest.raises(RuntimeError, match="closed"):
                client.submit("answer", "late", timeout=WAIT)
    finally:
        signal.signal(signal.SIGINT, previous)


def test_the_loop_thread_hands_back_results_exceptions_and_cancellation() -> None:
    thread = EventLoopThread("gearsql-test")
    try:

        async def value() -> int:
            await asyncio.sleep(0)
            return 42

        async def fails() -> None:
            raise JobFailed(b"H:1")

        async def cancelled() -> None:
            raise asyncio.CancelledError

        async def nested() -> int:
            return thread.run(value())

        assert thread.run(value()) == 42
        with pytest.raises(JobFailed):
            thread.run(fails())
        with pytest.raises(concurrent.futures.CancelledError):
            thread.run(cancelled())
        with pytest.raises(RuntimeError, match="own event loop"):
            thread.run(nested())
    finally:
        thread.close()
    with pytest.raises(RuntimeError, match="closed"):
        thread.run(value())


@pytest.mark.parametrize("kind", ["stdlib", "uvloop"])
def test_a_blocking_call_runs_the_loop_in_its_own_thread_and_hands_it_to_a_waiting_one(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if kind == "stdlib":
        monkeypatch.setattr(gearsql._loopthread, "new_event_loop", asyncio.new_event_loop)
    else:
        pytest.importorskip("uvloop")
    thread = EventLoopThread("gearsql-test")
    try:

        async def where() -> int:
            return threading.get_ident()

        async def named() -> str:
            return threading.current_thread().name

        # No thread hop, except from the main thread on uvloop, whose every run there sets up
        # its signal handling: the caretaker runs those calls.
        assert thread.run(named()) == ("MainThread" if kind == "stdlib" else "gearsql-test")
        others: list[str] = []
        other = threading.Thread(target=lambda: others.append(thread.run(named())), name="other")
        other.start()
        other.join(WAIT)
        assert others == ["other"]

        # "a" runs the loop until its gate opens; "b" calls meanwhile: its coroutine starts on
        # a's thread, and when a's call returns, b's thread is handed the loop and finishes it.
        started = {name: threading.Event() for name in "ab"}
        gates = {name: threading.Event() for name in "ab"}
        seen: dict[str, tuple[int, int, int]] = {}

        async def hold(name: str) -> tuple[int, int]:
            first = threading.get_ident()
            started[name].set()
            while not gates[name].is_set():
                await asyncio.sleep(0.005)
            return first, threading.get_ident()

        def call(name: str) -> None:
            seen[name] = (threading.get_ident(), *thread.run(hold(name)))

        callers = {name: threading.Thread(target=call, args=(name,)) for name in "ab"}
        callers["a"].start()
        assert started["a"].wait(WAIT)
        callers["b"].start()
        assert started["b"].wait(WAIT)
        gates["a"].set()
        callers["a"].join(WAIT)
        gates["b"].set()
        callers["b"].join(WAIT)
        a_thread, a_first, a_last = seen["a"]
        b_thread, b_first, b_last = seen["b"]
        assert a_first == a_last == a_thread
        assert (b_first, b_last) == (a_thread, b_thread)
    finally:
        thread.close()


def test_closing_while_another_thread_is_in_a_call_lets_that_call_finish() -> None:
    thread = EventLoopThread("gearsql-test")
    started, gate = threading.Event(), threading.Event()

    async def hold() -> str:
        started.set()
        while not gate.is_set():
            await asyncio.sleep(0.005)
        return "done"

    got: list[str] = []
    caller = threading.Thread(target=lambda: got.append(thread.run(hold())))
    caller.start()
    assert started.wait(WAIT)
    closer = threading.Thread(target=thread.close)
    closer.start()
    deadline = time.monotonic() + WAIT
    while not thread._closed and time.monotonic() < deadline:
        time.sleep(0.005)
    with pytest.raises(RuntimeError, match="closed"):
        thread.run(hold())
    gate.set()
    caller.join(WAIT)
    closer.join(WAIT)
    assert got == ["done"] and not closer.is_alive() and thread.loop.is_closed()


def test_jobs_started_without_waiting_go_on_between_blocking_calls(
    gearsql_server: ServerProcess,
) -> None:
    def chatty(job: WorkerJob) -> bytes:
        job.send_data(job.data)
        return job.data.upper()

    with worker_in_thread(gearsql_server, "chatty", chatty):
        with Client(url(gearsql_server)) as client:
            # During a blocking call its callbacks run in the calling thread (the main one
            # excepted on uvloop: see the test above).
            threads: list[str] = []

            def call() -> None:
                result = client.submit(
                    "chatty", "a", timeout=WAIT, on_data=lambda d: threads.append(current())
                )
                assert result == b"A"

            caller = threading.Thread(target=call, name="caller")
            caller.start()
            caller.join(WAIT)
            assert threads == ["caller"]
            # Without one, the client's caretaker thread sends the job, takes its updates and
            # finishes it: nobody calls the client until the task is done.
            arrived = threading.Event()

            def on_data(data: bytes) -> None:
                threads.append(current())
                arrived.set()

            task = client.submit_task("chatty", "b", on_data=on_data)
            assert arrived.wait(WAIT)
            deadline = time.monotonic() + WAIT
            while not task.done() and time.monotonic() < deadline:
                time.sleep(0.01)
            assert task.done()
            assert threads[1] == "gearsql-client"
            assert task.result(WAIT) == b"B"


def current() -> str:
    return threading.current_thread().name


def test_a_server_that_went_away_while_the_client_was_idle_is_not_written_to(
    tmp_path: Path,
) -> None:
    servers = two_servers(tmp_path)
    victim, survivor = servers
    try:
        to_victim = next(
            u for u in (f"u{n}" for n in range(100)) if zlib.crc32(u.encode()) % 2 == 0
        )
        with Client(url(victim, survivor), backoff=(5, 5)) as client:
            assert client.submit_background("f", b"x", unique=to_victim, timeout=WAIT).server == (
                url(victim)
            )
            victim.stop(signal.SIGKILL)
            # Nobody ran the client's loop since: the call takes in the closed connection first,
            # so the job fails over instead of going down the dead connection.
            # (Without a timeout: asyncio.wait_for would start the call one iteration late.)
            job = client.submit_background("f", b"y", unique=to_victim)
            assert job.server == url(survivor)
    finally:
        for server in servers:
            server.stop()


# -- bad input and failures ------------------------------------------------------------------


def test_bad_arguments_raise_before_anything_is_sent() -> None:
    # Nobody listens on this port: an argument error must come before any connection attempt.
    client = Client(f"127.0.0.1:{free_port()}")
    try:
        with pytest.raises(InvalidArgument, match="empty"):
            client.submit("", b"x")
        with pytest.raises(InvalidArgument, match="NUL"):
            client.submit("a\0b", b"x")
        with pytest.raises(InvalidArgument, match="NUL"):
            client.submit_background("f", b"x", unique="a\0b")
        with pytest.raises(InvalidArgument, match="too large"):
            client.submit("f", b"x", unique="u" * 65)
        with pytest.raises(InvalidPayload):
            client.submit("f", 42)
        with pytest.raises(InvalidArgument):
            client.submit("f", b"x", priority="urgent")
        with pytest.raises(InvalidArgument):
            client.submit("f", b"x", timeout=0)
        with pytest.raises(ValueError):  # InvalidArgument is a ValueError
            client.submit_task("", b"x")
        with pytest.raises(ServerUnavailable):  # a valid request then fails to connect
            client.submit("f", b"x", unique="u" * 64, timeout=WAIT)
    finally:
        client.close()
    with Client(f"127.0.0.1:{free_port()}", encoding=None) as raw:
        with pytest.raises(InvalidPayload, match="encoding"):
            raw.submit("f", "text")
        with pytest.raises(TypeError):  # InvalidPayload is a TypeError
            raw.submit_background("f", "text")


def test_refused_connection_raises_server_unavailable() -> None:
    port = free_port()
    with Client(f"127.0.0.1:{port}") as client:
        with pytest.raises(ServerUnavailable) as info:
            client.submit("f", b"x", timeout=WAIT)
        assert f"127.0.0.1:{port}" in info.value.errors
        assert isinstance(info.value, ConnectionError)


def test_error_packet_raises_server_error(any_server: ServerProcess) -> None:
    with Client(url(any_server)) as client:
        client.submit_background("capped", b"1", timeout=WAIT)
        with Peer(any_server.address) as admin:
            assert admin.admin("maxqueue capped 1", list_reply=False).startswith(b"OK")
        with pytest.raises(ServerError) as info:
            client.submit_background("capped", b"2", timeout=WAIT)
        assert info.value.code == "QUEUE_ERROR"
        # the connection stays usable after the ERROR
        assert not client.get_status(b"H:x:1", timeout=WAIT).known


def test_server_lists_and_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_servers("a,b:4731, [::1]:7003,c") == [
        ("a", 4730),
        ("b", 4731),
        ("::1", 7003),
        ("c", 4730),
    ]
    assert parse_servers([("h", 1), "h:1", "k"]) == [("h", 1), ("k", 4730)]
    monkeypatch.setenv("GEARMAN_SERVERS", "10.0.0.1:5000,10.0.0.2")
    assert AsyncClient().servers == ["10.0.0.1:5000", "10.0.0.2:4730"]
    monkeypatch.delenv("GEARMAN_SERVERS")
    assert AsyncClient().servers == ["127.0.0.1:4730"]
    for bad in ("", "h:x", "h:70000", ","):
        with pytest.raises(InvalidArgument):
            parse_servers(bad)


# -- several servers -------------------------------------------------------------------------


def two_servers(tmp_path: Path) -> list[ServerProcess]:
    return [
        ServerProcess("gearsql", tmp_path / f"s{n}.log", ["--store", "memory"]).start()
        for n in range(2)
    ]


def test_jobs_go_to_the_server_their_unique_hashes_to(
    gearsql_server: ServerProcess, gearmand_server: ServerProcess
) -> None:
    servers = [gearsql_server, gearmand_server]
    with Client(url(*servers)) as one, Client(url(*servers)) as two:
        for n in range(8):
            unique = f"key-{n}"
            expected = servers[zlib.crc32(unique.encode()) % 2]
            first = one.submit_background("spread", b"x", unique=unique, timeout=WAIT)
            again = two.submit_background("spread", b"y", unique=unique, timeout=WAIT)
            assert first.server == again.server == url(expected)
            assert first.handle == again.handle  # coalesced on that server
            assert one.get_status_unique(unique, timeout=WAIT).known
        # jobs without unique are spread over both
        places = {one.submit_background("spread", b"z", timeout=WAIT).server for _ in range(4)}
        assert places == {url(gearsql_server), url(gearmand_server)}
    # ... and so are the first jobs of many short-lived clients (one `gearsql submit` each):
    # each starts its round robin at a server picked at random (all 24 on one: p = 2**-23).
    firsts = set()
    for _ in range(24):
        with Client(url(*servers)) as client:
            firsts.add(client.submit_background("spread", b"w", timeout=WAIT).server)
    assert firsts == {url(gearsql_server), url(gearmand_server)}


def test_a_dead_server_in_the_list_is_skipped(gearsql_server: ServerProcess) -> None:
    dead = f"127.0.0.1:{free_port()}"
    with Client(f"{dead},{url(gearsql_server)}") as client:
        for n in range(6):
            job = client.submit_background("f", b"x", unique=f"u{n}", timeout=WAIT)
            assert job.server == url(gearsql_server)


def test_killing_a_server_mid_run_the_client_carries_on_with_the_other(tmp_path: Path) -> None:
    servers = two_servers(tmp_path)
    try:
        run(_carry_on(servers))
    finally:
        for server in servers:
            server.stop()


async def _carry_on(servers: list[ServerProcess]) -> None:
    victim, survivor = servers
    started: dict[bytes, asyncio.Event] = {}
    release = asyncio.Event()

    async def echo(job: WorkerJob) -> bytes:
        if job.data.startswith(b"hold"):
            started.setdefault(job.data, asyncio.Event()).set()
            await release.wait()
        return job.data

    # unique ids that hash to the victim, so their first attempt goes there
    to_victim = [u for u in (f"u{n}" for n in range(100)) if zlib.crc32(u.encode()) % 2 == 0]
    worker = AsyncWorker(url(victim, survivor), concurrency=8, backoff=(0.05, 0.2))
    worker.register("echo", echo)
    async with serving(worker), AsyncClient(url(victim, survivor), backoff=(5, 5)) as client:
        before = [client.submit_task("echo", f"b{n}") for n in range(10)]
        assert await client.gather(before, timeout=WAIT) == [f"b{n}".encode() for n in range(10)]
        lost = client.submit_task("echo", b"hold-1", unique=to_victim[0])
        retried = client.submit_task("echo", b"hold-2", unique=to_victim[1], retry=1)
        for key in (b"hold-1", b"hold-2"):
            while key not in started:
                await asyncio.sleep(0.01)
        assert lost.server == retried.server == url(victim)
        victim.stop(signal.SIGKILL)
        with pytest.raises(ConnectionLost):
            await lost.wait(WAIT)
        release.set()
        assert await retried.wait(WAIT) == b"hold-2"
        assert retried.server == url(survivor)
        keys = to_victim[2:12]
        after = [client.submit_task("echo", f"a{n}", unique=u) for n, u in enumerate(keys)]
        assert await client.gather(after, timeout=WAIT) == [f"a{n}".encode() for n in range(10)]
        assert {t.server for t in after} == {url(survivor)}
