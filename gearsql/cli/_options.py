"""What the command families share: help settings, the options that name job servers, the
log options, and the error that becomes one ``gearsql: ...`` line on stderr."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO, Literal

import click

from gearsql._log import NOTICE
from gearsql._servers import DEFAULT_PORT, parse_server, parse_servers
from gearsql.errors import GearmanError

CONTEXT = {"help_option_names": ["--help"], "max_content_width": 100}

VERBOSE_LEVELS = {
    "FATAL": logging.CRITICAL,
    "ALERT": logging.CRITICAL,
    "CRITICAL": logging.CRITICAL,
    "ERROR": logging.ERROR,
    "WARNING": logging.WARNING,
    "NOTICE": NOTICE,
    "INFO": logging.INFO,
    "DEBUG": logging.DEBUG,
}


def setup_logging(log_file: str, verbose: str) -> None:
    """Send the ``gearsql`` loggers to ``log_file`` (a path, "stderr" or "none") at the level
    named ``verbose`` (a key of VERBOSE_LEVELS)."""
    level = VERBOSE_LEVELS[verbose.upper()]
    root = logging.getLogger("gearsql")
    root.setLevel(level)
    for old in list(root.handlers):
        root.removeHandler(old)
    handler: logging.Handler
    if log_file == "none":
        handler = logging.NullHandler()
    elif log_file in ("stderr", "-", ""):
        handler = logging.StreamHandler(sys.stderr)
    else:
        handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root.addHandler(handler)
    root.propagate = False


LOG_FILE_OPTION = click.option(
    "-l",
    "--log-file",
    default="stderr",
    show_default=True,
    metavar="FILE",
    help="Log file; 'stderr', or 'none' for no log.",
)


class CommandError(click.ClickException):
    """A command failed for a reason the user can act on: shown as one ``gearsql: ...`` line
    on stderr, exit status 1, no traceback."""

    def show(self, file: Any = None) -> None:
        click.echo(f"gearsql: {self.message}", err=True)


class ConfigurationError(CommandError):
    """What a command was pointed at cannot work and waiting will not change that (a database
    without the outbox): shown like CommandError, with exit status 2."""

    exit_code = 2


@contextlib.contextmanager
def reported_errors() -> Iterator[None]:
    """Turn gearsql errors (admin client, client, worker) into :class:`CommandError`."""
    try:
        yield
    except GearmanError as exc:
        raise CommandError(str(exc)) from None


def _resolve_servers(
    ctx: click.Context, host: str, port: int, servers: str | None
) -> list[tuple[str, int]]:
    """The servers a command talks to: ``--servers`` (or ``$GEARMAN_SERVERS``), else -h/-p.

    -h/-p given on the command line win over ``$GEARMAN_SERVERS``; given together with
    ``--servers`` they are a usage error.
    """
    explicit = click.core.ParameterSource.COMMANDLINE
    host_or_port = explicit in (ctx.get_parameter_source("host"), ctx.get_parameter_source("port"))
    if servers is not None and ctx.get_parameter_source("servers") == explicit and host_or_port:
        raise click.UsageError("give either --servers or -h/--host and -p/--port, not both")
    if servers is not None and not host_or_port:
        try:
            return parse_servers(servers)
        except ValueError as exc:
            raise click.BadParameter(str(exc), ctx=ctx, param_hint="--servers") from None
    try:
        return [parse_server(host, port)]
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param_hint="-h/--host") from None


_ADDRESS_OPTIONS = [
    click.option(
        "-h",
        "--host",
        default="127.0.0.1",
        show_default=True,
        metavar="HOST",
        help="Job server host, or HOST:PORT.",
    ),
    click.option(
        "-p",
        "--port",
        default=DEFAULT_PORT,
        show_default=True,
        type=click.IntRange(1, 65535),
        metavar="PORT",
        help="Job server port.",
    ),
    click.option(
        "--servers",
        metavar="HOST:PORT[,...]",
        envvar="GEARMAN_SERVERS",
        help="Several job servers, comma-separated (also $GEARMAN_SERVERS; -h/-p win over "
        "the variable).",
    ),
]

_TIMEOUT_OPTION = click.option(
    "--timeout",
    default=10.0,
    show_default=True,
    type=click.FloatRange(0, min_open=True),
    metavar="SECONDS",
    help="How long to wait for a server to connect and reply.",
)


TLS_OPTIONS = [
    click.option(
        "--ssl",
        is_flag=True,
        envvar="GEARSQL_SSL",
        help="Connect with TLS (also $GEARSQL_SSL=1); the server's certificate is checked "
        "against the system's CAs unless --ssl-ca-file names one. Any of the three files "
        "below turns TLS on as well.",
    ),
    click.option(
        "--ssl-ca-file",
        metavar="FILE",
        envvar="GEARSQL_SSL_CA_FILE",
        help="CA certificates (PEM) the server's certificate is checked against (also "
        "$GEARSQL_SSL_CA_FILE).",
    ),
    click.option(
        "--ssl-certificate",
        metavar="FILE",
        envvar="GEARSQL_SSL_CERTIFICATE",
        help="This client's certificate (PEM), for a server that verifies its clients (also "
        "$GEARSQL_SSL_CERTIFICATE).",
    ),
    click.option(
        "--ssl-key",
        metavar="FILE",
        envvar="GEARSQL_SSL_KEY",
        help="The private key of --ssl-certificate (PEM; also $GEARSQL_SSL_KEY).",
    ),
]


def use_tls(
    ssl: bool, ssl_ca_file: str | None, ssl_certificate: str | None, ssl_key: str | None
) -> None:
    """Make the TLS options the process's: every client, worker and admin client this command
    makes reads them from the ``GEARSQL_SSL*`` variables (gearsql._tls), so no command passes
    them on by hand. CommandError for a file that cannot be read or a key that does not fit."""
    from gearsql._tls import (
        ENV_CA_FILE,
        ENV_CERTIFICATE,
        ENV_KEY,
        ENV_SSL,
        TlsError,
        client_context,
    )

    if not (ssl or ssl_ca_file or ssl_certificate or ssl_key):
        return
    try:
        client_context(True, ssl_ca_file, ssl_certificate, ssl_key)
    except TlsError as exc:
        raise CommandError(str(exc)) from None
    os.environ[ENV_SSL] = "1"
    for name, value in ((ENV_CA_FILE, ssl_ca_file), (ENV_CERTIFICATE, ssl_certificate)):
        os.environ[name] = value or ""
    os.environ[ENV_KEY] = ssl_key or ""


def tls_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--ssl``, ``--ssl-ca-file``, ``--ssl-certificate``, ``--ssl-key`` (and their variables),
    applied with :func:`use_tls` before the command runs."""

    @functools.wraps(command)
    def wrapper(
        *args: Any,
        ssl: bool,
        ssl_ca_file: str | None,
        ssl_certificate: str | None,
        ssl_key: str | None,
        **kwargs: Any,
    ) -> Any:
        use_tls(ssl, ssl_ca_file, ssl_certificate, ssl_key)
        return command(*args, **kwargs)

    decorated: Callable[..., Any] = wrapper
    for option in reversed(TLS_OPTIONS):
        decorated = option(decorated)
    return decorated


def _with_servers(
    command: Callable[..., Any], options: list[Callable[[Any], Any]]
) -> Callable[..., Any]:
    @functools.wraps(command)
    def wrapper(*args: Any, host: str, port: int, servers: str | None, **kwargs: Any) -> Any:
        kwargs["servers"] = _resolve_servers(click.get_current_context(), host, port, servers)
        with reported_errors():
            return command(*args, **kwargs)

    decorated: Callable[..., Any] = tls_options(wrapper)
    for option in reversed(options):
        decorated = option(decorated)
    return decorated


def server_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options that name the job servers a command talks to: ``-h/--host``, ``-p/--port``,
    ``--servers`` and ``--timeout``, and the TLS ones (:func:`tls_options`). The command
    receives ``servers`` (a list of ``(host, port)``) and ``timeout``; a GearmanError it
    raises becomes a ``gearsql: ...`` line on stderr and exit status 1."""
    return _with_servers(command, [*_ADDRESS_OPTIONS, _TIMEOUT_OPTION])


def server_address_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """:func:`server_options` without ``--timeout``, for the commands that take ``gearman``'s
    ``-t MS`` instead (``submit``)."""
    return _with_servers(command, _ADDRESS_OPTIONS)


def json_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--json``: print a JSON array of objects instead of a table."""
    return click.option("--json", "as_json", is_flag=True, help="Output JSON, not a table.")(
        command
    )


def library_logging() -> None:
    """Show the library's warnings (a server that cannot be reached, a retry) as ``gearsql: ...``
    lines on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("gearsql: %(message)s"))
    root = logging.getLogger("gearsql")
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    root.propagate = False


def per_line_options(client: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``-n`` and ``-N``, which mean different things in client and worker mode (as in
    `gearman`); the command receives ``per_line``: None, ``"keep"`` or ``"strip"``."""
    if client:
        keep = "One job per line of stdin, newline included; each sent as soon as it is read."
    else:
        keep = (
            "Send each line COMMAND prints as a WORK_DATA packet as soon as it is printed; the "
            "result is then empty."
        )
    options = [
        click.option("-n", "--lines", "per_line", flag_value="keep", default=None, help=keep),
        click.option(
            "-N",
            "--stripped-lines",
            "per_line",
            flag_value="strip",
            help="Same as -n, but strip off the newline.",
        ),
    ]

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def binary_stream(name: Literal["stdin", "stdout", "stderr"]) -> BinaryIO:
    """The byte stream under sys.stdin/stdout/stderr. Not click.get_binary_stream: its return type
    differs between click releases (``object`` in 8.5), and on POSIX it is this same buffer."""
    stream = {"stdin": sys.stdin, "stdout": sys.stdout, "stderr": sys.stderr}[name]
    return stream.buffer
