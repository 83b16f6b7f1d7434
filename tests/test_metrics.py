"""Prometheus metrics at GET /metrics on the HTTP port: what they count, against a real server and
real workers, and that Prometheus's own checker (``promtool check metrics``) accepts them."""

from __future__ import annotations

import http.client
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ServerProcess, free_port, need_tool
from test_http import _wait_listening
from wire import Peer

from gearsql.protocol import PacketType as P

SAMPLE = re.compile(r"^([a-z_]+)(\{[^}]*\})? (\S+)$")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[ServerProcess, int]]:
    http_port = free_port()
    process = ServerProcess(
        "gearsql",
        tmp_path / "gearsql.log",
        ["--store", "memory", "--http-port", str(http_port), "--retry-backoff", "0.05:0.05"],
    ).start()
    _wait_listening(http_port)
    try:
        yield process, http_port
    finally:
        process.stop()


def _scrape(http_port: int) -> tuple[str, str]:
    conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        assert response.status == 200
        return response.getheader("Content-Type") or "", response.read().decode()
    finally:
        conn.close()


def _samples(text: str) -> dict[str, float]:
    samples = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = SAMPLE.match(line)
        assert match is not None, line
        samples[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return samples


def _run(worker: Peer, answer: P, *args: bytes) -> None:
    worker.send(P.GRAB_JOB)
    handle = worker.expect(P.JOB_ASSIGN).args[0]
    worker.send(answer, handle, *args)


def test_metrics_count_what_happened_and_pass_promtool(
    server: tuple[ServerProcess, int],
) -> None:
    promtool = need_tool("promtool")
    process, http_port = server
    with Peer(process.address) as client, Peer(process.address) as worker:
        client.admin("retries flaky 2")
        for _ in range(3):
            client.send(P.SUBMIT_JOB_BG, b"ok", b"", b"x")
            client.expect(P.JOB_CREATED)
        client.send(P.SUBMIT_JOB_LOW_BG, b"ok", b"", b"later")
        client.expect(P.JOB_CREATED)
        client.send(P.SUBMIT_JOB_BG, b"flaky", b"", b"x")
        client.expect(P.JOB_CREATED)
        client.send(P.SUBMIT_JOB_HIGH_BG, b'odd"\xff', b"", b"x")
        client.expect(P.JOB_CREATED)
        worker.send(P.CAN_DO, b"ok")
        _run(worker, P.WORK_COMPLETE, b"done")
        _run(worker, P.WORK_FAIL)
        _run(worker, P.WORK_EXCEPTION, b"boom")
        worker.send(P.CANT_DO, b"ok")
        worker.send(P.CAN_DO, b"flaky")
        # Two failed runs: one retry, then a dead letter.
        _run(worker, P.WORK_FAIL)
        deadline = time.monotonic() + 10
        while True:
            worker.send(P.GRAB_JOB)
            packet = worker.recv()
            if packet.type == P.JOB_ASSIGN:
                worker.send(P.WORK_FAIL, packet.args[0])
                break
            assert packet.type == P.NO_JOB and time.monotonic() < deadline
            time.sleep(0.02)
        assert client.admin("status")  # a round trip: the WORK_FAIL has been handled
        # Scraped while the worker is connected: a function nobody uses is forgotten.
        content_type, text = _scrape(http_port)
    assert content_type.startswith("text/plain; version=0.0.4")
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    samples = _samples(text)
    ok = 'function="ok"'
    assert samples[f"gearsql_jobs_submitted_total{{{ok}}}"] == 4
    assert samples[f"gearsql_jobs_completed_total{{{ok}}}"] == 1
    assert samples[f"gearsql_jobs_failed_total{{{ok}}}"] == 1
    assert samples[f"gearsql_jobs_exceptions_total{{{ok}}}"] == 1
    assert samples[f'gearsql_jobs_queued{{{ok},priority="low"}}'] == 1
    assert samples[f'gearsql_jobs_queued{{{ok},priority="normal"}}'] == 0
    assert samples[f"gearsql_job_wait_seconds_count{{{ok}}}"] == 3
    assert samples[f"gearsql_job_run_seconds_count{{{ok}}}"] == 3
    assert samples[f'gearsql_job_run_seconds_bucket{{{ok},le="+Inf"}}'] == 3
    assert samples['gearsql_jobs_retried_total{function="flaky"}'] == 1
    assert samples['gearsql_jobs_dead_total{function="flaky"}'] == 1
    assert samples['gearsql_jobs_queued{function="odd\\"\\\\xff",priority="high"}'] == 1
    assert samples['gearsql_connections{protocol="http"}'] == 1
    assert samples["gearsql_received_bytes_total"] > 0
    assert samples["gearsql_sent_bytes_total"] > 0


def test_durable_commits_are_timed(tmp_path: Path) -> None:
    http_port = free_port()
    process = ServerProcess(
        "gearsql",
        tmp_path / "gearsql.log",
        ["--store", f"sqlite:///{tmp_path / 'q.sqlite3'}", "--http-port", str(http_port)],
    ).start()
    try:
        _wait_listening(http_port)
        with Peer(process.address) as client:
            client.send(P.SUBMIT_JOB_BG, b"kept", b"", b"x")
            client.expect(P.JOB_CREATED)
        samples = _samples(_scrape(http_port)[1])
        assert samples["gearsql_store_commit_seconds_count"] >= 1
        assert samples['gearsql_jobs_queued{function="kept",priority="normal"}'] == 1
    finally:
        process.stop()
