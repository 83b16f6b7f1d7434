"""TLS for the job server and for everything that connects to one.

One place builds the :class:`ssl.SSLContext` objects: :func:`server_context` for ``gearsql
server --ssl`` (gearmand's three files: CA, certificate, key), :func:`client_context` for the
client, the worker, the admin client, the CLI and the relay. A client context comes from
arguments or, when none are given, from the environment:

* ``GEARSQL_SSL_CA_FILE``: the CA that signed the server's certificate (else the system's CAs);
* ``GEARSQL_SSL_CERTIFICATE`` and ``GEARSQL_SSL_KEY``: the client's own certificate and key,
  for a server that verifies its clients;
* ``GEARSQL_SSL=1``: TLS with the system's CAs and no client certificate (any of the three
  files above turns TLS on as well; ``GEARSQL_SSL=0`` turns it off whatever else is set).

A client checks the server's certificate against the CA and the host name it connects to (the
certificate must name it, as a DNS name or IP address subjectAltName).
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Iterable, Mapping
from typing import Any, Union

from gearsql.errors import InvalidArgument

__all__ = [
    "ENV_CA_FILE",
    "ENV_CERTIFICATE",
    "ENV_KEY",
    "ENV_SSL",
    "HANDSHAKE_TIMEOUT",
    "SslArg",
    "TlsError",
    "client_context",
    "peer_identities",
    "server_context",
    "settle",
    "tls_arguments",
]

ENV_SSL = "GEARSQL_SSL"
ENV_CA_FILE = "GEARSQL_SSL_CA_FILE"
ENV_CERTIFICATE = "GEARSQL_SSL_CERTIFICATE"
ENV_KEY = "GEARSQL_SSL_KEY"

#: Seconds a peer gets to finish the TLS handshake before the server closes its connection.
HANDSHAKE_TIMEOUT = 10.0

#: What the ``ssl`` argument of the client, worker and admin client takes: None (the
#: ``GEARSQL_SSL*`` environment variables decide), False (plaintext), True (TLS), or a ready
#: :class:`ssl.SSLContext`.
SslArg = Union[bool, ssl.SSLContext, None]  # noqa: UP007 (a runtime alias on 3.10)

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


class TlsError(InvalidArgument):
    """A TLS file is missing, unreadable or does not fit (a key that is not the certificate's);
    the message names the option and the file."""


def _readable(path: str, option: str) -> str:
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise TlsError(f"{option}: cannot read {path}: {exc.strerror or exc}") from None
    return path


def _load_chain(context: ssl.SSLContext, certificate: str, key: str | None, prefix: str) -> None:
    _readable(certificate, f"{prefix}-certificate")
    if key:
        _readable(key, f"{prefix}-key")
    try:
        context.load_cert_chain(certificate, key or None)
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc):
            raise TlsError(
                f"{prefix}-key: {key} is not the key of the certificate {certificate}"
            ) from None
        raise TlsError(
            f"{prefix}-certificate/{prefix}-key: cannot load {certificate}"
            + (f" with {key}" if key else "")
            + f": {exc.reason or exc}; both must be PEM files"
        ) from None


def _load_ca(context: ssl.SSLContext, ca_file: str, option: str) -> None:
    _readable(ca_file, option)
    try:
        context.load_verify_locations(cafile=ca_file)
    except ssl.SSLError as exc:
        raise TlsError(
            f"{option}: no CA certificate in {ca_file}: {exc.reason or exc}; it must be a PEM file"
        ) from None


def server_context(
    certificate: str | None,
    key: str | None,
    ca_file: str | None = None,
    verify_client: bool = False,
) -> ssl.SSLContext:
    """The server's context: its certificate and key; with ``ca_file`` the certificates clients
    present are checked against it (and their identity is known to the ACL), and with
    ``verify_client`` a client without a valid certificate is refused in the handshake.

    Raises :class:`TlsError` (a ValueError) naming the option and the file at fault.
    """
    if not certificate:
        raise TlsError("--ssl needs --ssl-certificate (and --ssl-key unless it holds the key)")
    if verify_client and not ca_file:
        raise TlsError("--ssl-verify-client needs --ssl-ca-file, the CA of the client certificates")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(context, certificate, key, "--ssl")
    if ca_file:
        _load_ca(context, ca_file, "--ssl-ca-file")
        context.verify_mode = ssl.CERT_REQUIRED if verify_client else ssl.CERT_OPTIONAL
    return context


def client_context(
    ssl_arg: SslArg = None,
    ca_file: str | None = None,
    certificate: str | None = None,
    key: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> ssl.SSLContext | None:
    """The context to connect with, or None for plaintext.

    ``ssl_arg`` False is plaintext; an SSLContext is used as it is. Files given as arguments
    turn TLS on; with none of them and ``ssl_arg`` None, the ``GEARSQL_SSL*`` variables of
    ``environ`` (default ``os.environ``) decide. Raises :class:`TlsError` for a file that cannot
    be read or a key that does not fit.
    """
    if isinstance(ssl_arg, ssl.SSLContext):
        return ssl_arg
    if ssl_arg is False:
        return None
    if not (ca_file or certificate or key):
        env = os.environ if environ is None else environ
        switch = env.get(ENV_SSL, "").strip().lower()
        if ssl_arg is None and switch in _FALSE and switch != "":
            return None
        ca_file = env.get(ENV_CA_FILE) or None
        certificate = env.get(ENV_CERTIFICATE) or None
        key = env.get(ENV_KEY) or None
        if ssl_arg is None and not (ca_file or certificate or key):
            if switch not in _TRUE:
                if switch:
                    raise TlsError(f"${ENV_SSL} must be 1 or 0, not {switch!r}")
                return None
        prefix = "$GEARSQL_SSL"
    else:
        prefix = "--ssl"
    if key and not certificate:
        raise TlsError(f"{prefix}-key needs {prefix}-certificate as well")
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_file:
        _load_ca(context, ca_file, "$" + ENV_CA_FILE if prefix.startswith("$") else "--ssl-ca-file")
    if certificate:
        if prefix.startswith("$"):
            _load_env_chain(context, certificate, key)
        else:
            _load_chain(context, certificate, key, "--ssl")
    return context


def _load_env_chain(context: ssl.SSLContext, certificate: str, key: str | None) -> None:
    try:
        _load_chain(context, certificate, key, "--ssl")
    except TlsError as exc:
        message = str(exc).replace("--ssl-certificate", "$" + ENV_CERTIFICATE)
        raise TlsError(message.replace("--ssl-key", "$" + ENV_KEY)) from None


def peer_identities(peercert: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The names a verified peer certificate (``SSLSocket.getpeercert()``) gives its holder:
    the subject's common names, then its subjectAltName values (DNS names, e-mail addresses,
    URIs, IP addresses). Empty for no certificate."""
    if not peercert:
        return ()
    names: list[str] = []
    for rdn in peercert.get("subject", ()):
        for attribute, value in rdn:
            if attribute == "commonName" and value not in names:
                names.append(str(value))
    for _kind, value in peercert.get("subjectAltName", ()):
        if value not in names:
            names.append(str(value))
    return tuple(names)


def tls_arguments(context: ssl.SSLContext | None, host: str) -> dict[str, Any]:
    """The keyword arguments of ``loop.create_connection``/``asyncio.open_connection`` for
    ``context`` (none for plaintext)."""
    if context is None:
        return {}
    return {"ssl": context, "server_hostname": host}


async def settle(links: Iterable[Any], timeout: float = 1.0) -> None:
    """Wait until the connections just closed (objects with ``closed`` and ``transport``) have
    seen their end; abort those that have not within ``timeout`` seconds. A plaintext close ends
    at the next turn of the loop, a TLS close after the peer answered its close_notify: a loop
    that stopped before then would leave the socket open."""
    links = list(links)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    await asyncio.sleep(0)
    while any(not link.closed for link in links) and loop.time() < deadline:
        await asyncio.sleep(0.01)
    for link in links:
        if not link.closed and link.transport is not None:
            link.transport.abort()
    if any(not link.closed for link in links):
        await asyncio.sleep(0)
