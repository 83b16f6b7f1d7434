"""The live status page (gearsql.web) of a real ``gearsql server --http-port``: its JSON API, the
admin rules of its actions, and the page itself in a real headless Chromium (tests/browser.py),
which must show what the server holds, update without a reload, show attacker-chosen names as
text, and leave a screenshot in the test artifacts (GEARSQL_TEST_ARTIFACTS, else
tests/artifacts/)."""

from __future__ import annotations

import http.client
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REQUIRE_TOOLS, ServerProcess, free_port, need_tool
from wire import Peer

from gearsql.protocol import PacketType as P

#: Chosen by whoever submits: must reach the page as text.
EVIL_FUNCTION = '<img src=x onerror="window.pwned=1">'
EVIL_UNIQUE = "</script><script>window.pwned=2</script>"
WAIT = 60.0


def artifacts_dir() -> Path:
    path = Path(os.environ.get("GEARSQL_TEST_ARTIFACTS") or Path(__file__).parent / "artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _start(tmp_path: Path, *extra: str) -> tuple[ServerProcess, int]:
    http_port = free_port()
    process = ServerProcess(
        "gearsql",
        tmp_path / "gearsql.log",
        ["--store", "memory", "--http-port", str(http_port), *extra],
    ).start()
    _wait_for("127.0.0.1", http_port)
    return process, http_port


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[ServerProcess, int]]:
    process, http_port = _start(tmp_path)
    try:
        yield process, http_port
    finally:
        process.stop()


def request(
    port: int,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    host: str = "127.0.0.1",
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        data = json.dumps(body).encode() if body is not None else None
        sent = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=data, headers={**sent, **(headers or {})})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def get_json(port: int, path: str) -> Any:
    status, headers, body = request(port, "GET", path)
    assert status == 200 and headers["Content-Type"] == "application/json", body
    return json.loads(body)


def eventually(check: Any, what: str, timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} not seen within {timeout} s"
        time.sleep(0.05)


def populate(address: tuple[str, int]) -> tuple[Peer, Peer]:
    """Queued, running, scheduled jobs and a dead letter; returns (client, worker), open: the
    worker holds the running job."""
    client, worker = Peer(address), Peer(address)
    assert client.admin("retries flaky 1") == b"OK\r\n"
    client.send(P.SUBMIT_JOB_BG, b"flaky", b"f1", b"x")
    client.expect(P.JOB_CREATED)
    worker.send(P.CAN_DO, b"flaky")
    worker.send(P.GRAB_JOB)
    worker.send(P.WORK_EXCEPTION, worker.expect(P.JOB_ASSIGN).args[0], b"KeyError: 'sku'")
    worker.send(P.CANT_DO, b"flaky")
    client.send(P.SUBMIT_JOB_HIGH_BG, b"resize", b"img-1", b"a")
    client.send(P.SUBMIT_JOB_BG, b"resize", b"img-2", b"bb")
    client.send(P.SUBMIT_JOB_BG, b"resize", b"img-3", b"ccc")
    client.send(P.SUBMIT_JOB_LOW_BG, EVIL_FUNCTION.encode(), EVIL_UNIQUE.encode(), b"x")
    client.send(
        P.SUBMIT_JOB_EPOCH, b"report", b"nightly", str(int(time.time()) + 3600).encode(), b""
    )
    for _ in range(5):
        client.expect(P.JOB_CREATED)
    worker.send(P.SET_CLIENT_ID, b"resizer-1")
    worker.send(P.CAN_DO, b"resize")
    worker.send(P.GRAB_JOB)
    assert worker.expect(P.JOB_ASSIGN).args[1] == b"resize"  # img-1, the high one
    return client, worker


# ------------------------------------------------------------------ the API


def test_status_and_jobs_api_show_what_the_server_holds(server: tuple[ServerProcess, int]) -> None:
    process, port = server
    client, worker = populate(process.address)
    try:
        status = get_json(port, "/api/status")
        functions = {fn["name"]: fn for fn in status["functions"]}
        resize = functions["resize"]
        assert (resize["queued"], resize["running"], resize["workers"]) == ([0, 2, 0], 1, 1)
        assert resize["submitted"] == 3 and resize["waits"] == 1
        assert functions["report"]["later"] == 1 and functions["report"]["queued"] == [0, 0, 0]
        # Forgotten (no worker, no job) but for its dead letter.
        assert functions["flaky"]["dead"] == 1 and functions["flaky"]["gone"] is True
        assert functions[EVIL_FUNCTION]["queued"] == [0, 0, 1]
        assert status["actions"] is True
        [shown] = [w for w in status["workers"] if w["client_id"] == "resizer-1"]
        assert shown["functions"] == ["resize"] and shown["running"] == 1

        found = get_json(port, "/api/jobs?function=RESIZE")
        assert sorted((j["unique"], j["state"]) for j in found["jobs"]) == [
            ("img-1", "running"),
            ("img-2", "queued"),
            ("img-3", "queued"),
        ]
        assert found["dead"] == []
        found = get_json(port, "/api/jobs?unique=img-3")
        assert [(j["function"], j["size"]) for j in found["jobs"]] == [("resize", 3)]
        found = get_json(port, "/api/jobs?state=scheduled")
        assert [(j["function"], j["unique"]) for j in found["jobs"]] == [("report", "nightly")]
        assert found["jobs"][0]["due"] > time.time()
        found = get_json(port, "/api/jobs?state=dead")
        assert found["jobs"] == []
        [dead] = found["dead"]
        assert (dead["function"], dead["unique"], dead["error"]) == (
            "flaky",
            "f1",
            "KeyError: 'sku'",
        )
        found = get_json(port, "/api/jobs?limit=2")
        assert len(found["jobs"]) == 2 and found["more"] is True
    finally:
        client.close()
        worker.close()


def test_the_page_and_its_files_are_served_by_gearsql_with_a_strict_policy(
    server: tuple[ServerProcess, int],
) -> None:
    _, port = server
    status, headers, page = request(port, "GET", "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    # Nothing from elsewhere: every src and href is a path of this server.
    assert b"http" not in page.replace(b"http-equiv", b"")
    for path, kind in (("/ui/status.js", "text/javascript"), ("/ui/status.css", "text/css")):
        status, headers, body = request(port, "GET", path)
        assert status == 200 and headers["Content-Type"].startswith(kind) and body
        assert path.encode() in page
    # Jobs still go to every other path; POST / is not a page.
    status, _, _ = request(port, "POST", "/")
    assert status == 404


def test_actions_run_the_admin_commands(server: tuple[ServerProcess, int]) -> None:
    process, port = server
    client, worker = populate(process.address)
    try:
        handle = next(j["handle"] for j in get_json(port, "/api/jobs?unique=img-3")["jobs"])
        status, _, body = request(
            port, "POST", "/api/action", {"action": "cancel", "handle": handle}
        )
        assert status == 200 and json.loads(body) == {"ok": True, "reply": "OK"}
        status, _, body = request(
            port, "POST", "/api/action", {"action": "cancel", "handle": handle}
        )
        assert status == 404 and "UNKNOWN_JOB" in json.loads(body)["reply"]
        assert get_json(port, "/api/jobs?unique=img-3")["jobs"] == []

        evil = EVIL_FUNCTION.encode().hex()
        limits = {"action": "maxqueue", "function": evil, "limits": [5, 6, 7]}
        assert request(port, "POST", "/api/action", limits)[0] == 200
        with Peer(process.address) as admin:
            assert admin.admin("prioritystatus").count(b"\t") >= 4
        functions = {f["name"]: f for f in get_json(port, "/api/status")["functions"]}
        assert functions[EVIL_FUNCTION]["maxqueue"] == [5, 6, 7]

        [dead] = get_json(port, "/api/jobs?state=dead")["dead"]
        retry = {"action": "retry", "dead": dead["id"]}
        status, _, body = request(port, "POST", "/api/action", retry)
        assert status == 200 and json.loads(body)["reply"] == "OK 1"
        found = get_json(port, "/api/jobs?function=flaky")
        assert found["dead"] == [] and [j["state"] for j in found["jobs"]] == ["queued"]
        status, _, body = request(port, "POST", "/api/action", {"action": "purge", "dead": "all"})
        assert status == 200 and json.loads(body)["reply"] == "OK 0"

        status, _, body = request(port, "POST", "/api/action", {"action": "drop"})
        assert status == 400
        status, _, _ = request(port, "GET", "/api/action")
        assert status == 405
    finally:
        client.close()
        worker.close()


def test_a_cross_site_request_cannot_act(server: tuple[ServerProcess, int]) -> None:
    process, port = server
    client, worker = populate(process.address)
    try:
        handle = get_json(port, "/api/jobs?unique=img-2")["jobs"][0]["handle"]
        cancel = {"action": "cancel", "handle": handle}
        # A form post (no preflight): not JSON.
        status, _, _ = request(
            port,
            "POST",
            "/api/action",
            headers={"Content-Type": "text/plain"},
            host="127.0.0.1",
        )
        assert status == 415
        status, _, _ = request(
            port, "POST", "/api/action", cancel, {"Origin": "http://attacker.example"}
        )
        assert status == 403
        # DNS rebinding: a name that resolves to 127.0.0.1, the page's own origin.
        rebound = {"Host": f"attacker.example:{port}", "Origin": f"http://attacker.example:{port}"}
        status, _, body = request(port, "POST", "/api/action", cancel, rebound)
        assert status == 403 and b"IP address or localhost" in body
        assert [j["state"] for j in get_json(port, "/api/jobs?unique=img-2")["jobs"]] == ["queued"]
        same = {"Host": f"localhost:{port}", "Origin": f"http://localhost:{port}"}
        assert request(port, "POST", "/api/action", cancel, same)[0] == 200
    finally:
        client.close()
        worker.close()


def _outside_address() -> str | None:
    """An address of this machine that is not loopback (the default route's source)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def test_a_peer_that_is_not_loopback_gets_a_read_only_page(tmp_path: Path) -> None:
    address = _outside_address()
    if address is None:
        message = "this machine has no address beyond loopback"
        if REQUIRE_TOOLS:
            pytest.fail(message)
        pytest.skip(message)
    process, port = _start(tmp_path, "--listen", address, "--allow-insecure-remote")
    try:
        _wait_for(address, port)
        with Peer(process.address) as client:
            client.send(P.SUBMIT_JOB_BG, b"remote", b"r1", b"x")
            client.expect(P.JOB_CREATED)
        status, _, body = request(port, "GET", "/api/status", host=address)
        assert status == 200 and json.loads(body)["actions"] is False
        status, _, body = request(port, "GET", "/api/jobs", host=address)
        handle = json.loads(body)["jobs"][0]["handle"]
        status, _, body = request(
            port,
            "POST",
            "/api/action",
            {"action": "cancel", "handle": handle},
            {"Host": f"{address}:{port}"},
            host=address,
        )
        assert status == 403 and b"loopback" in body
        assert len(json.loads(request(port, "GET", "/api/jobs", host=address)[2])["jobs"]) == 1
    finally:
        process.stop()


def _wait_for(host: str, port: int) -> None:
    deadline = time.monotonic() + WAIT
    while True:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            assert time.monotonic() < deadline
            time.sleep(0.05)


# ------------------------------------------------------------------ in a real browser


@pytest.fixture
def browser() -> Iterator[Any]:
    from browser import Browser

    chromium = need_tool("chromium")
    opened = Browser(chromium)
    try:
        yield opened
    finally:
        opened.close()


ROWS = (
    "[...document.querySelectorAll('#%s tbody tr')].map(r => [...r.cells].map(c => c.textContent))"
)


def test_chromium_shows_the_page_live(server: tuple[ServerProcess, int], browser: Any) -> None:
    process, port = server
    client, worker = populate(process.address)
    try:
        browser.open(f"http://127.0.0.1:{port}/")
        browser.wait_for("document.body.dataset.state === 'live'", WAIT)
        browser.evaluate("window.marker = 'same page'")
        functions = {row[0]: row for row in browser.evaluate(ROWS % "functions")}
        assert set(functions) == {"flaky", "report", "resize", EVIL_FUNCTION}
        # function, queued h/n/l, later, running, workers, dead
        assert functions["resize"][:6] == ["resize", "0 / 2 / 0", "0", "1", "1", "0"]
        assert functions["report"][2] == "1" and functions["flaky"][5] == "1"
        workers = browser.evaluate(ROWS % "workers")
        assert [w[2:] for w in workers] == [["resizer-1", "1", "resize"]]
        jobs = browser.evaluate(ROWS % "jobs")
        assert sorted((j[1], j[2], j[3]) for j in jobs) == [
            (EVIL_FUNCTION, EVIL_UNIQUE, "queued"),
            ("report", "nightly", "scheduled"),
            ("resize", "img-1", "running"),
            ("resize", "img-2", "queued"),
            ("resize", "img-3", "queued"),
        ]
        [dead] = browser.evaluate(ROWS % "dead")
        assert dead[1:3] == ["flaky", "f1"] and dead[6] == "KeyError: 'sku'"
        # The attacker's names are text: no element was made of them, nothing of theirs ran.
        assert browser.evaluate("document.querySelectorAll('main img, main script').length") == 0
        assert browser.evaluate("window.pwned === undefined") is True

        # Live: a job submitted now shows up without a reload.
        client.send(P.SUBMIT_JOB_BG, b"latecomer", b"late-1", b"x")
        client.expect(P.JOB_CREATED)
        browser.wait_for(
            "[...document.querySelectorAll('#jobs tbody tr')]"
            ".some(r => r.cells[1].textContent === 'latecomer')",
            WAIT,
        )
        assert browser.evaluate("window.marker") == "same page"
        # A worker lost: the page follows.
        worker.close()  # its job goes back to the queue
        browser.wait_for(
            "[...document.querySelectorAll('#functions tbody tr')]"
            ".some(r => r.cells[0].textContent === 'resize' && r.cells[3].textContent === '0')",
            WAIT,
        )

        # The search: uniques that contain what is typed.
        browser.evaluate(
            "const box = document.querySelector('#search input[name=unique]');"
            "box.value = 'IMG-2'; box.dispatchEvent(new Event('input'))"
        )
        browser.wait_for(
            "(rows => rows.length === 1 && rows[0].cells[2].textContent === 'img-2')"
            "(document.querySelectorAll('#jobs tbody tr'))",
            WAIT,
        )
        browser.evaluate(
            "const box2 = document.querySelector('#search input[name=unique]');"
            "box2.value = ''; box2.dispatchEvent(new Event('input'))"
        )

        # An action from the page (a loopback peer): cancel the latecomer.
        latecomer = (
            "[...document.querySelectorAll('#jobs tbody tr')]"
            ".find(r => r.cells[1].textContent === 'latecomer')"
        )
        browser.wait_for(latecomer + " !== undefined", WAIT)
        browser.evaluate("window.confirm = () => true")
        browser.evaluate(
            "[...document.querySelectorAll('#jobs tbody tr')]"
            ".find(r => r.cells[1].textContent === 'latecomer').querySelector('button').click()"
        )
        browser.wait_for("document.getElementById('message').textContent === 'cancel: OK'", WAIT)
        with Peer(process.address) as admin:
            eventually(lambda: b"latecomer\t" not in admin.admin("status"), "the cancel")
        # The page names its icon: the browser asked for no /favicon.ico (which would have
        # been a job).
        names = {f["name"] for f in get_json(port, "/api/status")["functions"]}
        assert "favicon.ico" not in names, names
        screenshot = artifacts_dir() / "status-page.png"
        browser.screenshot(screenshot)
        assert screenshot.read_bytes().startswith(b"\x89PNG")
    except Exception:
        # What the page showed when the test failed.
        browser.screenshot(artifacts_dir() / "status-page-failure.png")
        raise
    finally:
        client.close()
        worker.close()


def test_a_search_looks_at_a_bounded_number_of_jobs(server: tuple[ServerProcess, int]) -> None:
    from gearsql.protocol import pack_request
    from gearsql.web import MAX_SCAN

    process, port = server
    with Peer(process.address, timeout=60) as client:
        client.send_raw(
            b"".join(pack_request(P.SUBMIT_JOB_BG, b"bulk", b"", b"") for _ in range(MAX_SCAN))
        )
        client.send(P.SUBMIT_JOB_BG, b"needle", b"n1", b"")
        for _ in range(MAX_SCAN + 1):
            client.expect(P.JOB_CREATED, timeout=60)
    found = get_json(port, "/api/jobs?function=needle")
    assert (found["jobs"], found["partial"], found["more"]) == ([], True, True)
    found = get_json(port, "/api/jobs?limit=5")
    assert (len(found["jobs"]), found["partial"], found["more"]) == (5, False, True)
    dead = get_json(port, "/api/jobs?state=dead")
    assert (dead["jobs"], dead["dead"], dead["partial"]) == ([], [], False)
