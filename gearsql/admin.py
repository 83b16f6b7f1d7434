"""The text admin protocol of the job server: ``status``, ``workers``, ``show jobs`` and the rest.

Formats are byte for byte those of C gearmand 1.1.x (``libgearman-server/text.cc``), because
``gearadmin`` and monitoring scripts parse them: lists end with ``.\\n``, ``OK``/``ERR`` replies
with ``\\r\\n``, and values in error texts use ``+`` for spaces.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from gearsql.protocol import split_admin_words

if TYPE_CHECKING:  # the core imports this module; this one needs the core for hints only
    from gearsql.core import JobServerCore, Session

__all__ = ["ADMIN_COMMANDS", "escape_name", "run_admin_command"]

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
        text = None
    out = bytearray()
    if text is not None:
        for char in text:
            code = ord(char)
            if char == "\\":
                out += b"\\\\"
            elif code <= 0x20 or code == 0x7F:
                out += b"\\x%02x" % code
            else:
                out += char.encode("utf-8")
        return bytes(out)
    for byte in name:
        if byte == 0x5C:
            out += b"\\\\"
        elif 0x21 <= byte < 0x7F:
            out.append(byte)
        else:
            out += b"\\x%02x" % byte
    return bytes(out)


# The counts: ``status`` shows each function's live jobs (waiting or running), running jobs and
# workers; ``prioritystatus`` splits the waiting ones by priority, so that total = HIGH + NORMAL +
# LOW + running. A cancelled job, or a foreground job whose clients all left before it started,
# is counted nowhere, though ``show jobs`` lists it (ignore column 1) until the server lets go of
# it. C gearmand counts such jobs everywhere until a worker meets them; gearsql counts only jobs
# that will still run. See gearsql._corestate.Function.


def _status(core: JobServerCore, session: Session, words: list[bytes]) -> bytes:
    lines = [
        b"%s\t%d\t%d\t%d\n" % (escape_name(fn.name), fn.total, fn.running, len(fn.workers))
        for fn in core.functions.values()
    ]
    lines.append(b".\n")
    return b"".join(lines)


def _priority_status(core: JobServerCore, session: Session, words: list[bytes]) -> bytes:
    lines = []
    for fn in core.functions.values():
        high, normal, low = fn.waiting
        lines.append(
            b"%s\t%d\t%d\t%d\t%d\n" % (escape_name(fn.name), high, normal, low, len(fn.workers))
        )
    lines.append(b".\n")
    return b"".join(lines)


def _workers(core: JobServerCore, session: Session, words: list[bytes]) -> bytes:
    lines = []
    for other in core.sessions.values():
        names = b"".join(b" " + escape_name(fn.name) for fn in other.abilities)
        lines.append(
            b"%d %s %s :%s\n"
            % (other.fd, other.peer.encode("ascii", "replace"), other.client_id, names)
        )
    lines.append(b".\n")
    return b"".join(lines)


def _show(core: JobServerCore, session: Session, words: list[bytes]) -> bytes:
    if len(words) < 2:
        return _unknown(words[0])
    what = [word.lower() for word in words[1:]]
    if what == [b"jobs"]:
        # The last column is gearmand's job_queued: a background job held by the queue (a
        # cancelled one no longer is).
        lines = [
            b"%s\t%d\t%d\t%d\n"
            % (job.handle, job.retries, job.ignore, job.background and not job.ignore)
            for job in core.jobs.values()
        ]
    elif what == [b"unique", b"jobs"]:
        lines = [escape_name(job.unique) + b"\n" for job in core.jobs.values() if job.unique]
    else:
        return ERR_UNKNOWN_SHOW
    lines.append(b".\n")
    return b"".join(lines)


def _cancel(core: JobServerCore, session: Session, words: list[bytes]) -> bytes:
    if len(words) != 3 or words[1].lower() != b"job":
        return _unknown(words[0])
    if not session.trusted:
        return ERR_PERMISSION
    if core.cancel(words[2]):
        core.notice("INFO", f"Cancelled job {words[2].decode('latin-1')} by admin command")
        return OK
    return ERR_UNKNOWN_JOB


def _create(core: JobServerCore, session: Session, words: list[bytes]) -> bytes:
    if len(words) != 3 or words[1].lower() != b"function":
        return _incomplete(words[0])
    if not session.trusted:
        return ERR_PERMISSION
    name = words[2]
    if len(name) > core.max_function_name:
        return b"ERR CREATE_FUNCTION " + name + b"\r\n"
    core.function(name)
    return OK


def _drop(core: JobServerCore, session: Session, words: list[bytes]) -> bytes:
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


def _maxqueue(core: JobServerCore, session: Session, words: list[bytes]) -> bytes:
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


def _version(core: JobServerCore, session: Session, words: list[bytes]) -> bytes:
    return b"OK %s\n" % core.version.encode()


def _getpid(core: JobServerCore, session: Session, words: list[bytes]) -> bytes:
    return b"OK %d\n" % core.pid


def _verbose(core: JobServerCore, session: Session, words: list[bytes]) -> bytes:
    return b"OK %s\n" % core.verbose.encode()


ADMIN_COMMANDS: dict[bytes, Callable[[JobServerCore, Session, list[bytes]], bytes]] = {
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
}


def run_admin_command(core: JobServerCore, session: Session, line: bytes) -> bytes:
    """Answer one admin line. Unknown commands (``shutdown`` among them: it was removed from
    gearmand in 1.1.15 and gearsql never had it) get ``ERR UNKNOWN_COMMAND``."""
    words = split_admin_words(line)
    if not words:
        return _unknown(b"")
    command = ADMIN_COMMANDS.get(words[0].lower())
    if command is None:
        return _unknown(words[0])
    return command(core, session, words)
