"""Exceptions raised by the gearsql client and worker libraries.

Every exception is a :class:`GearmanError`. Bad arguments are caught before anything is sent and
are also :class:`ValueError` or :class:`TypeError`; a server that cannot be reached or a lost
connection is also a :class:`ConnectionError`; a timeout is also a :class:`TimeoutError`.
"""

from __future__ import annotations

__all__ = [
    "AdminConnectionError",
    "AdminError",
    "AdminProtocolError",
    "AdminTimeoutError",
    "ConnectionLost",
    "GearmanError",
    "InvalidArgument",
    "InvalidPayload",
    "JobException",
    "JobFailed",
    "JobTimeout",
    "ServerError",
    "ServerUnavailable",
]


class GearmanError(Exception):
    """Base class of every error the gearsql client and worker raise."""


class InvalidArgument(GearmanError, ValueError):
    """A function name, unique id, priority, epoch or option is not valid. Nothing was sent."""


class InvalidPayload(GearmanError, TypeError):
    """A payload is not bytes (``str`` needs an encoding, other types are refused). Nothing was
    sent."""


class ServerUnavailable(GearmanError, ConnectionError):
    """No job server could be reached: connection refused, unreachable, or connect timeout.

    ``errors`` maps each server address tried (``host:port``) to why it failed.
    """

    def __init__(self, message: str, errors: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.errors: dict[str, str] = dict(errors or {})


class ConnectionLost(ServerUnavailable):
    """The connection to the job server broke while a request or a foreground job was waiting.

    The job may still run elsewhere later (the server requeues it if it restarts with a durable
    store). Pass ``retry=N`` to resubmit a foreground job to another server instead.
    """


class JobTimeout(GearmanError, TimeoutError):
    """A wait ran out of time. The job itself is not cancelled on the server."""


class ServerError(GearmanError):
    """The job server answered with an ERROR packet (``code`` as gearmand names it, e.g.
    ``QUEUE_ERROR``, and its ``text``)."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(f"{code}: {text}" if text else code)
        self.code = code
        self.text = text


class JobFailed(GearmanError):
    """The worker reported WORK_FAIL (or the server gave up on the job, e.g. after too many
    retries, or it was cancelled by an administrator)."""

    def __init__(self, handle: bytes, message: str | None = None) -> None:
        super().__init__(message or f"job {handle.decode('utf-8', 'replace')} failed")
        self.handle = handle


class JobException(GearmanError):
    """The worker reported WORK_EXCEPTION; ``data`` is what it sent (usually the error text).

    Only clients created with ``exceptions=True`` (the default) receive these; others see
    :class:`JobFailed`.
    """

    def __init__(self, handle: bytes, data: bytes) -> None:
        super().__init__(data.decode("utf-8", "replace") or "worker raised an exception")
        self.handle = handle
        self.data = data


# ---------------------------------------------------------------------------- admin client
# Raised by gearsql.adminclient.AdminClient (the text admin protocol: status, workers, ...).


class AdminError(GearmanError):
    """The job server answered an admin command with an ``ERR`` line.

    ``code`` is the error's code word (``UNKNOWN_JOB``, ``UNKNOWN_COMMAND``, ...) or ``""`` when
    the server sent a bare sentence (gearmand's ``ERR function not found``); ``text`` is the rest
    of the line with gearmand's ``+`` for spaces turned back into spaces; ``line`` is the raw
    reply without its line ending.
    """

    def __init__(self, code: str, text: str, line: bytes = b"") -> None:
        super().__init__(" ".join(part for part in (code, text) if part) or "ERR")
        self.code = code
        self.text = text
        self.line = line


class AdminConnectionError(GearmanError, ConnectionError):
    """The admin connection could not be opened, or broke or was closed before the reply.

    ``address`` is the ``(host, port)`` the admin client talks to.
    """

    def __init__(self, message: str, address: tuple[str, int]) -> None:
        super().__init__(message)
        self.address = address


class AdminTimeoutError(AdminConnectionError, TimeoutError):
    """The server did not accept the admin connection, or finish its reply, within the
    timeout."""


class AdminProtocolError(GearmanError):
    """The server's admin reply did not have the format of docs/protocol.md §2."""
