"""The text admin protocol of the job server: ``status``, ``workers``, ``show jobs`` and the rest.

Formats are byte for byte those of C gearmand 1.1.x (``libgearman-server/text.cc``), because
``gearadmin`` and monitoring scripts parse them: lists end with ``.\\n``, ``OK``/``ERR`` replies
with ``\\r\\n``, and values in error texts use ``+`` for spaces.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from gearsql._corestate import RUNNING, RetryPolicy
from gearsql._cron import MAX_SCHEDULE_NAME, CronError, next_tick, parse_cron
from gearsql.protocol import split_admin_words

if TYPE_CHECKING:  # for hints only; never gearsql.core, which imports this module
    from gearsql._coreclients import ClientRules
    from gearsql._corestate import Session

__all__ = ["ADMIN_COMMANDS", "escape_name", "parse_backoff", "run_admin_command"]

OK = b"OK\r\n"
ERR_UNKNOWN_JOB = b"ERR UNKNOWN_JOB\r\n"
ERR_UNKNOWN_SHOW = b"ERR UNKNOWN_SHOW_ARGUMENTS\r\n"
ERR_PERMISSION = (
    b"ERR PERMISSION_DENIED Mutating+admin+commands+are+only+accepted+from+loopback\r\n"
)


def _unknown(word: bytes) -> bytes:
    return b"ERR UNKNOWN_COMMAND Unknown+server+command" + word + b"\r\n"


def _incomplete(word: bytes) -> bytes:
    return (
        b"ERR INVALID_ARGUMENTS An+incomplete+set+of+arguments+was+sent+to+this+command+"
        + word
        + b"\r\n"
    )


_PRINTABLE = bytes(range(0x21, 0x7F))
# What escape_name writes for a character (of a name that is UTF-8) or for a byte (of one that is
# not), looked up in C (str.translate, map): a listing must not hold the event loop for long
# (docs/reliability.md case 47).
_TEXT_ESCAPES = {code: f"\\x{code:02x}" for code in (*range(0x21), 0x7F)} | {0x5C: "\\\\"}
_BYTE_ESCAPES = tuple(
    b"\\\\" if code == 0x5C else bytes([code]) if 0x21 <= code < 0x7F else b"\\x%02x" % code
    for code in range(256)
)


def escape_name(name: bytes) -> bytes:
    """A function name or unique as shown in list output.

    Names are any bytes on the wire; in a tab- and newline-separated listing, control bytes, spaces
    and bytes that are not UTF-8 are written as ``\\xNN`` (and a backslash as ``\\\\``) so that one
    odd name cannot break the format for every other line. Printable UTF-8 is shown as it is.
    """
    if not name.translate(None, _PRINTABLE) and b"\\" not in name:
        return name
    try:
        text = name.decode("utf-8")
    except UnicodeDecodeError:
        return b"".join(map(_BYTE_ESCAPES.__getitem__, name))
    return text.translate(_TEXT_ESCAPES).encode("utf-8")


#: Function names that needed escaping, escaped: ``status`` lists every function each time, and
#: thousands of odd names (a fuzzer's) escaped anew each time held the event loop for tens of
#: milliseconds. Emptied when full; names are at most 512 bytes, so it holds at most ~40 MiB.
_SHOWN: dict[bytes, bytes] = {}
_SHOWN_MAX = 16384


def _shown(name: bytes) -> bytes:
    """:func:`escape_name` of a function name, remembered."""
    shown = _SHOWN.get(name)
    if shown is None:
        shown = escape_name(name)
        if shown is not name:
            if len(_SHOWN) >= _SHOWN_MAX:
                _SHOWN.clear()
            _SHOWN[name] = shown
    return shown


# The counts: ``status`` shows each function's live jobs (waiting or running), running jobs and
# workers; ``prioritystatus`` splits the waiting ones by priority, so that total = HIGH + NORMAL +
# LOW + running. A cancelled job, or a foreground job whose clients all left before it started,
# is counted nowhere, though ``show jobs`` lists it (ignore column 1) until the server lets go of
# it. C gearmand counts such jobs everywhere until a worker meets them; gearsql counts only jobs
# that will still run. See gearsql._corestate.Function.


def _status(core: ClientRules, session: Session, words: list[bytes]) -> bytes:
    lines = [
        b"%s\t%d\t%d\t%d\n" % (_shown(fn.name), fn.total, fn.running, len(fn.workers))
        for fn in core.functions.values()
    ]
    lines.append(b".\n")
    return b"".join(lines)


def _priority_status(core: ClientRules, session: Session, words: list[bytes]) -> bytes:
    lines = []
    for fn in core.functions.values():
        high, normal, low = fn.waiting
        lines.append(
            b"%s\t%d\t%d\t%d\t%d\n" % (_shown(fn.name), high, normal, low, len(fn.workers))
        )
    lines.append(b".\n")
    return b"".join(lines)


def _workers(core: ClientRules, session: Session, words: list[bytes]) -> bytes:
    lines = []
    for other in core.sessions.values():
        names = b"".join(b" " + _shown(fn.name) for fn in other.abilities)
        lines.append(
            b"%d %s %s :%s\n"
            % (other.fd, other.peer.encode("ascii", "replace"), other.client_id, names)
        )
    lines.append(b".\n")
    return b"".join(lines)


def _show(core: ClientRules, session: Session, words: list[bytes]) -> bytes:
    if len(words) < 2:
        return _unknown(words[0])
    what = [word.lower() for word in words[1:]]
    if what == [b"jobs"]:
        # The fourth column is gearmand's job_queued: a background job held by the queue (a
        # cancelled one no longer is). gearsql adds three at the end, where a reader of
        # gearmand's four stops: runs so far (failed ones, plus the one under way), the
        # state, and the last run's error (``-`` for none).
        lines = [
            b"%s\t%d\t%d\t%d\t%d\t%s\t%s\n"
            % (
                job.handle,
                job.retries,
                job.ignore,
                job.background and not job.ignore,
                job.retries + (job.state is RUNNING),
                job.state.value.encode(),
                escape_name(job.error) if job.error else b"-",
            )
            for job in core.all_jobs()
        ]
    elif what[0] == b"dead" and len(words) <= 3:
        # Dead letters: number, handle, function, unique, failed runs, time of death (epoch
        # seconds), payload size, last error.
        name = words[2] if len(words) == 3 else None
        lines = [
            b"%d\t%s\t%s\t%s\t%d\t%d\t%d\t%s\n"
            % (
                job.dead_id,
                job.handle,
                escape_name(job.function.name),
                escape_name(job.unique),
                job.retries,
                int(job.died),
                len(job.data),
                escape_name(job.error) if job.error else b"-",
            )
            for job in core.dead_letters(name)
        ]
    elif what == [b"unique", b"jobs"]:
        lines = [escape_name(job.unique) + b"\n" for job in core.jobs.values() if job.unique]
    else:
        return ERR_UNKNOWN_SHOW
    lines.append(b".\n")
    return b"".join(lines)


def _cancel(core: ClientRules, session: Session, words: list[bytes]) -> bytes:
    if len(words) != 3 or words[1].lower() != b"job":
        return _unknown(words[0])
    if not session.trusted:
        return ERR_PERMISSION
    if core.cancel(words[2]):
        core.notice("INFO", f"Cancelled job {words[2].decode('latin-1')} by admin command")
        return OK
    return ERR_UNKNOWN_JOB


def _dead_status(core: ClientRules, session: Session, words: list[bytes]) -> bytes:
    """``deadstatus``: dead letters per function (``status`` keeps gearmand's four columns)."""
    counts: dict[bytes, int] = {}
    for job in core.dead.values():
        name = job.function.name
        counts[name] = counts.get(name, 0) + 1
    lines = [b"%s\t%d\n" % (escape_name(name), count) for name, count in counts.items()]
    lines.append(b".\n")
    return b"".join(lines)


def _counters(core: ClientRules, session: Session, words: list[bytes]) -> bytes:
    """``counters``: per function, the event counters and the job wait and run times (count and
    sum of seconds) since the function was created, the figures ``/metrics`` serves; ``top``
    turns two of them into rates."""
    lines = []
    for fn in core.functions.values():
        wait, run = fn.wait_time, fn.run_time
        lines.append(
            b"%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%.6f\t%d\t%.6f\n"
            % (
                escape_name(fn.name),
                fn.submitted,
                fn.completed,
                fn.failed,
                fn.exceptions,
                fn.retried,
                fn.dead,
                sum(wait.counts),
                wait.sum,
                sum(run.counts),
                run.sum,
            )
        )
    lines.append(b".\n")
    return b"".join(lines)


def _dead_targets(core: ClientRules, words: list[bytes]) -> list[int] | bytes:
    """The dead letters ``retry dead``/``purge dead`` name (``ID`` or ``all [FUNCTION]``), or
    the ERR reply."""
    if len(words) < 3 or words[1].lower() != b"dead":
        return _incomplete(words[0])
    target = words[2]
    if target.lower() == b"all" and len(words) <= 4:
        name = words[3] if len(words) == 4 else None
        return [job.dead_id for job in core.dead_letters(name)]
    if len(words) != 3 or not target.isdigit():
        return _incomplete(words[0])
    if int(target) not in core.dead:
        return ERR_UNKNOWN_JOB
    return [int(target)]


def _on_dead(
    core: ClientRules, session: Session, words: list[bytes], act: Callable[[int], object]
) -> list[int] | bytes:
    """``act`` on each dead letter ``words`` names, for a trusted session; the numbers acted
    on, or the ERR reply."""
    targets = _dead_targets(core, words)
    if isinstance(targets, bytes):
        return targets
    if not session.trusted:
        return ERR_PERMISSION
    for dead_id in targets:
        act(dead_id)
    return targets


def _retry(core: ClientRules, session: Session, words: list[bytes]) -> bytes:
    targets = _on_dead(core, session, words, core.revive)
    if isinstance(targets, bytes):
        return targets
    return b"OK %d\r\n" % len(targets)


def _purge(core: ClientRules, session: Session, words: list[bytes]) -> bytes:
    targets = _on_dead(core, session, words, core.purge)
    if isinstance(targets, bytes):
        return targets
    if targets:
        core.notice("INFO", f"Purged {len(targets)} dead letters by admin command")
    return b"OK %d\r\n" % len(targets)


def parse_backoff(text: str, default: tuple[float, float] = (1.0, 300.0)) -> tuple[float, float]:
    """``BASE`` or ``BASE:MAX`` seconds, as ``--retry-backoff`` and ``retries`` take them; MAX
    defaults to ``default``'s (raised to BASE if lower). Raises ValueError."""
    base_text, colon, limit_text = text.partition(":")
    base = float(base_text)
    limit = float(limit_text) if colon else max(default[1], base)
    if not (0 < base <= limit) or limit != limit or limit == float("inf"):
        raise ValueError(f"backoff {text!r}: want BASE[:MAX] seconds with 0 < BASE <= MAX")
    return base, limit


def _format_policy(policy: RetryPolicy) -> bytes:
    return b"%d %s:%s" % (policy.attempts, b"%g" % policy.base, b"%g" % policy.limit)


def _retries(core: ClientRules, session: Session, words: list[bytes]) -> bytes:
    """``retries FUNCTION``: its policy (``OK ATTEMPTS BASE:MAX [default]``);
    ``retries FUNCTION N [BASE[:MAX]]`` sets its own, ``retries FUNCTION default`` drops it."""
    if len(words) < 2 or len(words) > 4:
        return _incomplete(words[0])
    name = words[1]
    if len(words) == 2:
        own = core.retry_policies.get(name)
        if own is None:
            return b"OK " + _format_policy(core.retry_policy) + b" default\n"
        return b"OK " + _format_policy(own) + b"\n"
    if not session.trusted:
        return ERR_PERMISSION
    if len(name) > core.max_function_name:
        return _incomplete(words[0])
    if len(words) == 3 and words[2].lower() == b"default":
        core.set_retry_policy(name, None)
        return OK
    if not words[2].isdigit():
        return _incomplete(words[0])
    default = core.retry_policy
    base, limit = default.base, default.limit
    if len(words) == 4:
        try:
            base, limit = parse_backoff(words[3].decode("ascii"), (base, limit))
        except (ValueError, UnicodeDecodeError):
            return _incomplete(words[0])
    core.set_retry_policy(name, RetryPolicy(int(words[2]), base, limit))
    return OK


def _unique_window(core: ClientRules, session: Session, words: list[bytes]) -> bytes:
    """``uniquewindow FUNCTION``: its unique window (``OK SECONDS [default]``);
    ``uniquewindow FUNCTION SECONDS`` sets its own (0 turns it off for that function),
    ``uniquewindow FUNCTION default`` drops it."""
    if len(words) not in (2, 3):
        return _incomplete(words[0])
    name = words[1]
    if len(words) == 2:
        own = core.unique_windows.get(name)
        if own is None:
            return b"OK %s default\n" % (b"%g" % core.unique_window)
        return b"OK %s\n" % (b"%g" % own)
    if not session.trusted:
        return ERR_PERMISSION
    if len(name) > core.max_function_name:
        return _incomplete(words[0])
    if words[2].lower() == b"default":
        core.set_unique_window(name, None)
        return OK
    try:
        seconds = float(words[2].decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        return _incomplete(words[0])
    if not 0 <= seconds < float("inf"):
        return _incomplete(words[0])
    core.set_unique_window(name, seconds)
    return OK


def _schedule(core: ClientRules, session: Session, words: list[bytes]) -> bytes:
    """``schedule list``: ``NAME\tFUNCTION\tSPEC\tNEXT\tSIZE`` per schedule (SPEC: ``M H
    DOM MON DOW``, then ``catch-up=MODE`` unless it is ``one``); ``schedule add
    [catch-up=MODE] NAME FUNCTION M H DOM MON DOW [DATA...]`` (``OK NEXT``) and ``schedule
    remove NAME``."""
    action = words[1].lower() if len(words) > 1 else b""
    if action == b"list" and len(words) == 2:
        lines = [
            b"%s\t%s\t%s\t%d\t%d\n"
            % (
                escape_name(item.name),
                escape_name(item.function),
                item.spec.text.encode(),
                item.due or 0,
                len(item.data),
            )
            for item in core.schedules.values()
        ]
        return b"".join(lines) + b".\n"
    if action not in (b"add", b"remove"):
        return _incomplete(words[0])
    if not session.trusted:
        return ERR_PERMISSION
    if action == b"remove":
        if len(words) != 3:
            return _incomplete(words[0])
        return OK if core.remove_schedule(words[2]) else b"ERR UNKNOWN_SCHEDULE\r\n"
    option = b""
    if len(words) > 2 and words[2].lower().startswith(b"catch-up="):
        option = b" " + words.pop(2).lower()
    if len(words) < 9:
        return _incomplete(words[0])
    name, function = words[2], words[3]
    if len(name) > MAX_SCHEDULE_NAME or b"@" in name or len(function) > core.max_function_name:
        return _incomplete(words[0])
    try:
        spec = parse_cron((b" ".join(words[4:9]) + option).decode("ascii"))
    except (CronError, UnicodeDecodeError):
        return _incomplete(words[0])
    if next_tick(spec, core.clock()) is None:  # February 30 and the like
        return _incomplete(words[0])
    schedule = core.add_schedule(name, function, spec, b" ".join(words[9:]))
    return b"OK %d\r\n" % (schedule.due or 0)


def _create(core: ClientRules, session: Session, words: list[bytes]) -> bytes:
    if len(words) != 3 or words[1].lower() != b"function":
        return _incomplete(words[0])
    if not session.trusted:
        return ERR_PERMISSION
    name = words[2]
    if len(name) > core.max_function_name:
        return b"ERR CREATE_FUNCTION " + name + b"\r\n"
    core.function(name)
    return OK


def _drop(core: ClientRules, session: Session, words: list[bytes]) -> bytes:
    if len(words) != 3 or words[1].lower() != b"function":
        return _incomplete(words[0])
    if not session.trusted:
        return ERR_PERMISSION
    fn = core.functions.get(words[2])
    if fn is None:
        return b"ERR function not found\r\n"
    if fn.workers or fn.running:
        return b"ERR there are still connected workers or executing clients\r\n"
    # gearmand frees the function and leaves its queued jobs behind, unreachable. We cancel
    # them instead (clients get WORK_FAIL, durable rows go), so nothing stays stuck.
    cancelled = core.drop_function(fn)
    if cancelled:
        core.notice("WARNING", f"drop function {fn.name!r} cancelled {cancelled} queued jobs")
    return OK


def _maxqueue(core: ClientRules, session: Session, words: list[bytes]) -> bytes:
    if len(words) < 2:
        return _incomplete(words[0])
    if not session.trusted:
        return ERR_PERMISSION
    limits = []
    for priority in range(3):
        index = priority + 2
        if len(words) > index:
            try:
                value = int(words[index])
            except ValueError:
                value = 0
            limits.append(max(value, 0))
        else:
            limits.append(0)
    if len(words) <= 3:
        # One number applies to every priority, as in gearmand.
        limits = [limits[0]] * 3
    fn = core.functions.get(words[1])
    if fn is not None:
        fn.max_queue = limits
    return OK


def _version(core: ClientRules, session: Session, words: list[bytes]) -> bytes:
    return b"OK %s\n" % core.version.encode()


def _getpid(core: ClientRules, session: Session, words: list[bytes]) -> bytes:
    return b"OK %d\n" % core.pid


def _verbose(core: ClientRules, session: Session, words: list[bytes]) -> bytes:
    return b"OK %s\n" % core.verbose.encode()


ADMIN_COMMANDS: dict[bytes, Callable[[ClientRules, Session, list[bytes]], bytes]] = {
    b"status": _status,
    b"prioritystatus": _priority_status,
    b"workers": _workers,
    b"show": _show,
    b"cancel": _cancel,
    b"create": _create,
    b"drop": _drop,
    b"maxqueue": _maxqueue,
    b"version": _version,
    b"getpid": _getpid,
    b"verbose": _verbose,
    # gearsql's own: retries and dead letters.
    b"retries": _retries,
    b"uniquewindow": _unique_window,
    b"schedule": _schedule,
    b"retry": _retry,
    b"purge": _purge,
    b"deadstatus": _dead_status,
    # gearsql's own: event counters (rates for top).
    b"counters": _counters,
}


def run_admin_command(core: ClientRules, session: Session, line: bytes) -> bytes:
    """Answer one admin line. Unknown commands (``shutdown`` among them: it was removed from
    gearmand in 1.1.15 and gearsql never had it) get ``ERR UNKNOWN_COMMAND``."""
    words = split_admin_words(line)
    if not words:
        return _unknown(b"")
    command = ADMIN_COMMANDS.get(words[0].lower())
    if command is None:
        return _unknown(words[0])
    return command(core, session, words)
