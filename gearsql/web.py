"""The live status page on the HTTP port (``--http-port``): what the job server holds, in a
browser, updated every two seconds without a reload.

Routes (``GET`` only unless said; any other path is gearmand's ``/FUNCTION``):

* ``/``: the page, and ``/ui/status.js``, ``/ui/status.css``, ``/ui/icon.svg``: its script,
  style and icon. They are
  package data (``gearsql/static/``) served from here: the page loads nothing from elsewhere,
  and its Content-Security-Policy forbids it to.
* ``/api/status``: JSON of the functions (queued per priority, due later, running, workers,
  ``maxqueue``, the counters ``/metrics`` serves), the workers and what they can do, dead letter
  counts, schedules, relays (:class:`gearsql.relay.watch.RelayWatch`) and the server.
* ``/api/jobs?function=&unique=&state=&limit=``: live jobs and dead letters whose function and
  unique contain those texts (case-insensitive), at most ``limit`` of each, among the oldest
  ``MAX_SCAN`` of each (``partial`` when there were more).
* ``POST /api/action``: cancel a job, retry or purge dead letters, set ``maxqueue``, by running
  the admin command (:mod:`gearsql.admin`) under the admin rule: only a trusted peer (loopback,
  or any with ``--remote-admin``) may, others get 403. A browser's cross-site request cannot
  get through either: the body must be ``application/json`` (a cross-origin page cannot send
  that without a preflight, which is never granted), an ``Origin`` must be this server's, and
  the ``Host`` must be an IP address or ``localhost`` (a DNS rebinding attack uses a name).

Names and uniques are bytes on the wire and anyone who can submit picks them: they go out as
JSON strings (UTF-8, other bytes as ``\\xNN``) and the page only ever sets them as text.
A function literally named ``api/status`` is still reached with ``POST /api/status``, or with
``GET /api%2Fstatus``: routes match the path as sent, before percent-decoding.
"""

from __future__ import annotations

import ipaddress
import json
import time
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from gearsql import __version__
from gearsql._corestate import CANCELLED, RETRYING, RUNNING, SCHEDULED, STORING, Function, Job
from gearsql.admin import ADMIN_COMMANDS

if TYPE_CHECKING:
    from gearsql._httpparse import Request
    from gearsql._serverview import ServerView
    from gearsql.core import Session

__all__ = ["Answer", "route"]

#: (HTTP status, headers, body).
Answer = tuple[int, list[tuple[str, str]], bytes]

#: Served files: path -> (file in gearsql/static, content type).
FILES = {
    b"/": ("status.html", "text/html; charset=utf-8"),
    b"/ui/status.js": ("status.js", "text/javascript; charset=utf-8"),
    b"/ui/status.css": ("status.css", "text/css; charset=utf-8"),
    # Named by the page, so that a browser does not ask for /favicon.ico: a GET of it would
    # submit a job to a function called favicon.ico.
    b"/ui/icon.svg": ("icon.svg", "image/svg+xml"),
}

#: Sent with every answer of the page: nothing from elsewhere, no framing, no sniffing.
SECURITY_HEADERS = [
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
]

#: Most jobs (and dead letters) one ``/api/jobs`` answer lists; its default.
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
#: Most jobs one ``/api/jobs`` answer looks at (oldest first), so that a search through a deep
#: queue never holds the event loop for long; ``partial`` says when it stopped there.
MAX_SCAN = 20000
#: What ``state=scheduled`` finds: jobs due later, waiting for a retry, or being stored.
LATER = frozenset({SCHEDULED, RETRYING, STORING})
#: Most worker connections ``/api/status`` lists.
MAX_WORKERS = 500

_files: dict[str, bytes] = {}


def _file(name: str) -> bytes:
    data = _files.get(name)
    if data is None:
        data = (resources.files("gearsql") / "static" / name).read_bytes()
        _files[name] = data
    return data


def text(name: bytes) -> str:
    """A name or unique for display: UTF-8, with other bytes as ``\\xNN``."""
    return name.decode("utf-8", "backslashreplace")


def _json(value: Any, status: int = 200) -> Answer:
    body = json.dumps(value, separators=(",", ":")).encode()
    return status, [("Content-Type", "application/json"), *SECURITY_HEADERS], body


def route(server: ServerView, session: Session, request: Request) -> Answer | None:
    """The answer to a request for the page, its files or its API; None for any other path
    (a job for gearmand's ``/FUNCTION``)."""
    path, _, query = request.target.partition(b"?")
    if path == b"/api/action":
        if request.method != b"POST":
            return 405, [("Allow", "POST")], b"actions are POSTed\n"
        return _action(server, session, request)
    if request.method != b"GET":
        return None
    if path in FILES:
        name, content_type = FILES[path]
        return 200, [("Content-Type", content_type), *SECURITY_HEADERS], _file(name)
    if path == b"/api/status":
        return _json(status(server, session.trusted))
    if path == b"/api/jobs":
        return _json(jobs(server, parse_qs(query.decode("latin-1"))))
    return None


# ------------------------------------------------------------------ reading


def _queued(fn: Function) -> list[int]:
    """Per priority, the jobs in the queue now (the rest of ``waiting`` is due later)."""
    return [max(0, len(queue) - stale) for queue, stale in zip(fn.queues, fn.stale, strict=True)]


def status(server: ServerView, actions: bool) -> dict[str, Any]:
    """Everything the page shows but the job list."""
    core = server.core
    dead: dict[bytes, int] = {}
    for job in core.dead.values():
        dead[job.function.name] = dead.get(job.function.name, 0) + 1
    functions = []
    for fn in sorted(core.functions.values(), key=lambda fn: fn.name):
        queued = _queued(fn)
        functions.append(
            {
                "name": text(fn.name),
                "hex": fn.name.hex(),
                "queued": queued,
                "later": max(0, sum(fn.waiting) - sum(queued)),
                "running": fn.running,
                "workers": len(fn.workers),
                "maxqueue": list(fn.max_queue),
                "dead": dead.pop(fn.name, 0),
                "submitted": fn.submitted,
                "completed": fn.completed,
                "failed": fn.failed,
                "exceptions": fn.exceptions,
                "retried": fn.retried,
                "waits": sum(fn.wait_time.counts),
                "wait_seconds": fn.wait_time.sum,
                "runs": sum(fn.run_time.counts),
                "run_seconds": fn.run_time.sum,
            }
        )
    # Dead letters of functions the server no longer holds.
    for name, count in sorted(dead.items()):
        functions.append({"name": text(name), "hex": name.hex(), "dead": count, "gone": True})
    workers: list[dict[str, Any]] = []
    for session in core.sessions.values():
        if not session.abilities:
            continue
        if len(workers) == MAX_WORKERS:
            break
        workers.append(
            {
                "id": session.id,
                "peer": session.peer,
                "client_id": text(session.client_id),
                "functions": [text(fn.name) for fn in session.abilities],
                "running": len(session.holding),
                "sleeping": session.sleeping,
            }
        )
    schedules = [
        {
            "name": text(item.name),
            "function": text(item.function),
            "spec": item.spec.text,
            "due": item.due,
        }
        for item in core.schedules.values()
    ]
    watch = server.relay_watch
    return {
        "version": __version__,
        "pid": core.pid,
        "time": time.time(),
        "clock": time.monotonic(),
        "actions": actions,
        "store": server.store.description,
        "connections": {"gearman": len(server.connections), "http": len(server.http_connections)},
        "received_bytes": server.bytes_in,
        "sent_bytes": server.bytes_out,
        "store_pending": len(core.to_store),
        "functions": functions,
        "workers": workers,
        "worker_count": sum(1 for s in core.sessions.values() if s.abilities),
        "schedules": schedules,
        "relays": [] if watch is None else watch.report(),
    }


def _matches(job: Job, function: str, unique: str) -> bool:
    return (not function or function in text(job.function.name).casefold()) and (
        not unique or unique in text(job.unique).casefold()
    )


def jobs(server: ServerView, query: dict[str, list[str]]) -> dict[str, Any]:
    """Live jobs and dead letters matching the query (see the module docstring)."""

    def arg(name: str) -> str:
        return query.get(name, [""])[0]

    function, unique, wanted = arg("function").casefold(), arg("unique").casefold(), arg("state")
    try:
        limit = min(max(int(arg("limit") or DEFAULT_LIMIT), 1), MAX_LIMIT)
    except ValueError:
        limit = DEFAULT_LIMIT
    core = server.core
    now, clock = time.time(), time.monotonic()
    found: list[dict[str, Any]] = []
    more = partial = False
    if wanted != "dead":
        for scanned, job in enumerate(core.all_jobs()):
            if scanned == MAX_SCAN:
                more = partial = True
                break
            state = job.state
            if state is CANCELLED or not _matches(job, function, unique):
                continue
            if wanted and not (state in LATER if wanted == "scheduled" else state.value == wanted):
                continue
            if len(found) == limit:
                more = True
                break
            found.append(
                {
                    "handle": job.handle.decode("latin-1"),
                    "function": text(job.function.name),
                    "unique": text(job.unique),
                    "state": state.value,
                    "priority": job.priority.word,
                    "background": job.background,
                    "size": len(job.data),
                    "runs": job.retries + (job.state is RUNNING),
                    "error": text(job.error),
                    "due": job.when if job.when and job.when > now else None,
                    "since": clock - job.since if job.since else None,
                }
            )
    dead: list[dict[str, Any]] = []
    dead_more = False
    if wanted in ("", "dead"):
        for scanned, job in enumerate(core.dead.values()):
            if scanned == MAX_SCAN:
                dead_more = partial = True
                break
            if not _matches(job, function, unique):
                continue
            if len(dead) == limit:
                dead_more = True
                break
            dead.append(
                {
                    "id": job.dead_id,
                    "handle": job.handle.decode("latin-1"),
                    "function": text(job.function.name),
                    "unique": text(job.unique),
                    "runs": job.retries,
                    "died": job.died,
                    "size": len(job.data),
                    "error": text(job.error),
                }
            )
    return {
        "jobs": found,
        "more": more,
        "dead": dead,
        "dead_more": dead_more,
        "limit": limit,
        "partial": partial,
        "scan": MAX_SCAN,
    }


# ------------------------------------------------------------------ actions


def _host_allowed(host: bytes) -> bool:
    """An IP address literal or ``localhost``, with or without a port: not a DNS name."""
    name = urlsplit("//" + host.decode("latin-1")).hostname or ""
    if name == "localhost":
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _refuse(status: int, reason: str) -> Answer:
    return _json({"ok": False, "reply": reason}, status)


def _words(body: dict[str, Any]) -> list[bytes] | str:
    """The admin command an action runs, as words; or why the action is malformed."""
    action = body.get("action")
    if action == "cancel" and isinstance(body.get("handle"), str):
        return [b"cancel", b"job", body["handle"].encode("latin-1")]
    if action in ("retry", "purge"):
        target = body.get("dead")
        if isinstance(target, int) and not isinstance(target, bool) and target >= 0:
            return [action.encode(), b"dead", str(target).encode()]
        if target == "all":
            words = [action.encode(), b"dead", b"all"]
            if isinstance(body.get("function"), str):
                words.append(bytes.fromhex(body["function"]))
            return words
        return "dead is a dead letter's number or 'all'"
    if action == "maxqueue" and isinstance(body.get("function"), str):
        limits = body.get("limits")
        if (
            not isinstance(limits, list)
            or len(limits) != 3
            or not all(isinstance(n, int) and not isinstance(n, bool) for n in limits)
        ):
            return "limits are three integers (high, normal, low; 0: no limit)"
        return [b"maxqueue", bytes.fromhex(body["function"]), *(b"%d" % n for n in limits)]
    return "action is cancel (handle), retry or purge (dead), or maxqueue (function, limits)"


def _action(server: ServerView, session: Session, request: Request) -> Answer:
    headers = request.headers
    if not session.trusted:
        return _refuse(
            403,
            "actions are only accepted from loopback (or with --remote-admin); under an ACL, "
            "from a certificate it grants admin",
        )
    host = headers.get(b"host", b"")
    if not _host_allowed(host):
        return _refuse(403, "actions need a Host that is an IP address or localhost")
    origin = headers.get(b"origin")
    if origin is not None and origin not in (b"http://" + host, b"https://" + host):
        return _refuse(403, "actions are only accepted from this server's own page")
    content_type = headers.get(b"content-type", b"").partition(b";")[0].strip().lower()
    if content_type != b"application/json":
        return _refuse(415, "the body is application/json")
    try:
        body = json.loads(request.body)
        words = _words(body) if isinstance(body, dict) else "the body is a JSON object"
    except (ValueError, UnicodeError):
        return _refuse(400, "the body is a JSON object")
    if isinstance(words, str):
        return _refuse(400, words)
    reply = ADMIN_COMMANDS[words[0]](server.core, session, words)
    answer = reply.decode("latin-1").strip()
    if reply.startswith(b"OK"):
        return _json({"ok": True, "reply": answer})
    code = answer.split(" ")[1] if " " in answer else answer
    http_status = {"PERMISSION_DENIED": 403, "UNKNOWN_JOB": 404}.get(code, 400)
    return _refuse(http_status, answer.replace("+", " "))
