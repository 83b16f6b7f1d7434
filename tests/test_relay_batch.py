"""The relay's decisions without I/O (gearsql.relay.batch) and the choice of source from a DSN."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

import pytest

import gearsql.relay.batch
from gearsql.client import Priority
from gearsql.errors import (
    ConnectionLost,
    InvalidArgument,
    JobTimeout,
    ServerError,
    ServerUnavailable,
)
from gearsql.relay import Source, open_source
from gearsql.relay.batch import (
    MAX_PREFIX,
    Outage,
    OutboxRow,
    Strikes,
    check_unique_prefix,
    default_unique_prefix,
    inline_bytes,
    row_from_values,
    rows_from_claim,
    settle,
    take_within,
    unique_for,
)
from gearsql.relay.engine import describe_error, priority_of


def row(id_: int, unique: bytes | None = None, priority: str = "normal") -> OutboxRow:
    return OutboxRow(id_, b"f", unique, b"w", priority)


def test_rows_from_any_driver_type() -> None:
    assert row_from_values((7, memoryview(b"f"), None, bytearray(b"\0w"), b"high")) == OutboxRow(
        7, b"f", None, b"\0w", "high"
    )
    assert row_from_values(("8", "f", b"", "w", "low")).unique is None


def test_a_rows_priority_column_picks_the_submission_priority_normal_when_unknown() -> None:
    assert priority_of(row(1, priority="high")) is Priority.HIGH
    assert priority_of(row(1, priority="low")) is Priority.LOW
    assert priority_of(row(1)) is Priority.NORMAL
    assert priority_of(row(1, priority="urgent")) is Priority.NORMAL


def test_the_decisions_module_imports_neither_asyncio_nor_the_client() -> None:
    tree = ast.parse(Path(gearsql.relay.batch.__file__).read_text(encoding="utf-8"))
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "asyncio" not in imported
    assert not {name for name in imported if name.startswith("gearsql.client")}


def test_a_source_must_implement_the_outbox_methods() -> None:
    class Incomplete(Source):
        def open(self) -> None:
            self.opened = True

    with pytest.raises(TypeError, match="abstract"):
        Incomplete()  # type: ignore[abstract]


def test_a_batch_takes_what_fits_in_the_byte_budget_but_at_least_one_row() -> None:
    assert take_within([(1, 10), (2, 10), (3, 10)], 25) == [1, 2]
    assert take_within([(1, 10), (2, 10)], 20) == [1, 2]
    assert take_within([(5, 100), (6, 1)], 10) == [5]  # alone, however large
    assert take_within([], 10) == []


def test_a_claim_reads_large_workloads_apart_and_only_those_within_the_budget() -> None:
    assert inline_bytes(500, 64 * 1024 * 1024) == 134217
    assert inline_bytes(1000, 10) == 1  # never 0
    asked: list[list[int]] = []

    def read_apart(ids: list[int]) -> dict[int, bytes]:
        asked.append(ids)
        return {id_: b"L" * 40 for id_ in ids}

    # (id, function, unique_key, workload or None when too large inline, priority, size)
    claimed = [
        (1, b"f", None, b"small", "high", 5),
        (2, b"f", b"u", None, "normal", 40),
        (3, b"f", None, b"tiny", "low", 4),
        (4, b"f", None, None, "normal", 40),  # past the budget: never read
    ]
    rows = rows_from_claim(claimed, 50, read_apart)
    assert rows == [
        OutboxRow(1, b"f", None, b"small", "high"),
        OutboxRow(2, b"f", b"u", b"L" * 40, "normal"),
        OutboxRow(3, b"f", None, b"tiny", "low"),
    ]
    assert asked == [[2]]
    assert rows_from_claim(claimed[:1], 50, read_apart) == rows[:1]
    assert asked == [[2]]  # nothing to read apart: not called
    # A single row larger than the budget still goes, alone.
    assert rows_from_claim(claimed[3:], 10, read_apart)[0].workload == b"L" * 40


def test_the_unique_is_the_rows_own_else_prefix_and_id() -> None:
    assert unique_for(row(12), b"outbox:ab:") == b"outbox:ab:12"
    assert unique_for(row(12, b"mine"), b"outbox:ab:") == b"mine"
    longest = check_unique_prefix("p" * MAX_PREFIX)
    assert len(unique_for(row(2**64 - 1), longest)) == 64


def test_a_prefix_that_could_cut_an_id_short_is_refused() -> None:
    with pytest.raises(ValueError, match="at most 44"):
        check_unique_prefix("p" * (MAX_PREFIX + 1))
    with pytest.raises(ValueError, match="NUL"):
        check_unique_prefix("a\0b")


def test_the_default_prefix_depends_on_the_outbox_only() -> None:
    one = default_unique_prefix("postgresql:1:app:gearsql")
    assert one == default_unique_prefix("postgresql:1:app:gearsql")
    assert one != default_unique_prefix("postgresql:1:other:gearsql")
    assert one.startswith("outbox:") and len(one) <= MAX_PREFIX


def test_settling_keeps_unconfirmed_rows_and_drops_impossible_ones() -> None:
    rows = [row(1), row(2), row(3), row(4), row(5)]
    bad = InvalidArgument("Function name contains a NUL byte")
    settlement = settle(
        rows, ["H:1", ConnectionLost("gone"), bad, JobTimeout("slow"), asyncio.CancelledError()]
    )
    assert settlement.done == [1]
    assert [r.id for r, _ in settlement.refused] == [3]
    assert [r.id for r, _ in settlement.failed] == [2, 4, 5]
    assert settlement.finished == [1, 3]


def test_a_server_refusal_that_retrying_cannot_change_makes_a_row_dead() -> None:
    rows = [row(1), row(2), row(3)]
    settlement = settle(
        rows,
        [
            ServerError("ARGUMENT_TOO_LARGE", "packet too large"),
            ServerError("QUEUE_ERROR", "queue full"),
            ConnectionLost("x"),
        ],
        Strikes(),
    )
    assert [(id_, reason.split(":")[0]) for id_, reason in settlement.dead] == [
        (1, "the job server refused it")
    ]
    assert "ARGUMENT_TOO_LARGE packet too large (1 bytes of workload)" in settlement.dead[0][1]
    assert [r.id for r, _ in settlement.failed] == [2, 3]
    assert settlement.finished == [1]


def test_a_batch_that_lost_its_connection_is_tried_one_row_at_a_time() -> None:
    strikes = Strikes(limit=3)
    lost = ConnectionLost("connection reset by peer")
    settle([row(1), row(2), row(3)], [lost, lost, lost], strikes)
    assert strikes.isolating and strikes.suspects == {1, 2, 3}
    assert settle([row(1)], ["H:1"], strikes).done == [1]
    # Row 2 breaks the connection whenever it goes alone: dead at the third time.
    for _ in range(2):
        assert settle([row(2)], [lost], strikes).refused == []
    # A server that is down (no connection at all) is no strike against the row.
    assert settle([row(2)], [ServerUnavailable("refused")], strikes).refused == []
    dead = settle([row(2)], [lost], strikes)
    assert [id_ for id_, _ in dead.dead] == [2]
    assert "closed the connection each of the 3 times" in dead.dead[0][1]
    assert strikes.isolating  # row 3 is still to be tried alone
    assert settle([row(3)], ["H:3"], strikes).done == [3]
    assert not strikes.isolating and strikes.counts == {}


def test_isolating_ends_when_the_suspects_went_elsewhere() -> None:
    strikes = Strikes()
    lost = ConnectionLost("gone")
    settle([row(5), row(6)], [lost, lost], strikes)
    strikes.claimed([7])  # another relay took 5 and 6
    assert not strikes.isolating


def test_a_refusal_explains_the_lost_connection_of_the_others() -> None:
    strikes = Strikes()
    settle([row(1), row(2)], [ServerError("ARGUMENT_TOO_LARGE", ""), ConnectionLost("x")], strikes)
    assert not strikes.isolating


def test_an_unconfirmed_submission_is_described_in_one_line() -> None:
    assert describe_error(asyncio.CancelledError()) == "stopped before the job server confirmed"
    assert describe_error(TimeoutError()) == "no JOB_CREATED in time"
    assert describe_error(ConnectionLost(" gone \n")) == "gone"
    assert describe_error(ValueError()) == "ValueError"


def test_an_outage_is_reported_once_at_its_start_and_end() -> None:
    outage = Outage()
    assert outage.recovered(1.0) is None
    assert outage.failed(2.0) is True
    assert outage.failed(3.0) is False
    assert outage.down
    assert outage.recovered(5.5) == 3.5
    assert not outage.down


@pytest.mark.parametrize(
    ("dsn", "source", "kind", "wake"),
    [
        ("postgresql://u@h/db", "auto", "PostgresSource", "listen"),
        ("postgres://u@h/db", "poll", "PostgresSource", "poll"),
        ("mysql://u@h/db", "auto", "MySQLSource", "poll"),  # until it has seen the server
        ("mariadb://u@h/db", "binlog", "MySQLSource", "binlog"),
        ("sqlite:///tmp/app.db", "auto", "SQLiteSource", "change counter"),
    ],
)
def test_the_dsn_picks_the_source(dsn: str, source: str, kind: str, wake: str) -> None:
    if kind == "MySQLSource":
        pytest.importorskip("mysql.connector")
    chosen = open_source(dsn, "gearsql", source)
    assert type(chosen).__name__ == kind
    assert chosen.wake == wake


def test_sqlite_dsns_follow_sqlalchemy_three_slashes_relative_four_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    relative = open_source("sqlite:///data/a.db")
    assert relative.path == str(tmp_path / "data" / "a.db")  # type: ignore[attr-defined]
    assert open_source("sqlite:////tmp/a.db").path == "/tmp/a.db"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("dsn", "source", "message"),
    [
        ("oracle://x/y", "auto", "unknown database"),
        ("postgresql://h/x", "binlog", "--source binlog is for MySQL"),
        ("mysql://h/x", "listen", "--source listen is for PostgreSQL"),
        ("sqlite:///x.db", "binlog", "an SQLite relay watches its file or polls"),
        ("sqlite://", "auto", "the path follows three slashes"),
        ("sqlite:///", "auto", "names no file"),
        ("sqlite://app.db", "auto", "the path follows three slashes"),
        ("sqlite:///x.db", "sometimes", "unknown source"),
    ],
)
def test_impossible_sources_are_refused(dsn: str, source: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        open_source(dsn, "gearsql", source)


def test_an_sqlite_claim_leaves_the_rows_of_the_functions_it_skips(tmp_path: Path) -> None:
    """The claim a relay makes while a function's own servers are down (PostgreSQL and MariaDB:
    tests/test_relay_servers.py, end to end)."""
    import gearsql.sqlite

    path = tmp_path / "app.db"
    app = gearsql.sqlite.connect(str(path), servers="127.0.0.1:1")
    with app:
        for function in ("down", "up", "down", "other", "up"):
            app.execute("SELECT gman_do_background(?, 'w')", (function,))
    app.close()
    source = open_source(f"sqlite:///{path}")
    source.open()
    try:
        rows = source.claim(10, 1 << 20, [b"down"])
        assert [(row.id, row.function) for row in rows] == [(2, b"up"), (4, b"other"), (5, b"up")]
        source.finish([], [], [])
        rows = source.claim(10, 1 << 20, [b"down", b"up"])
        assert [row.function for row in rows] == [b"other"]
        source.finish([], [], [])
        assert len(source.claim(10, 1 << 20)) == 5
        source.finish([], [], [])
    finally:
        source.close()
