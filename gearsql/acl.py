"""Access control by client-certificate identity: the ACL file's rules as a table, and the
decisions taken from it. No I/O: the server reads the file and asks.

The file is INI (docs/security.md)::

    # Each section names an identity: a certificate's subject common name or one of its
    # subjectAltNames; glob patterns (*, ?, [...]) are allowed.
    [app-*]
    submit = reports.*, resize     # functions it may submit jobs to
    admin = no                     # mutating admin commands (cancel, drop, retries, ...)

    [worker-1]
    work = resize                  # functions it may work on (CAN_DO)

    [anonymous]                    # connections that presented no certificate
    submit = ping

A connection may do what any section matching one of its identities allows; what no section
allows is denied. ``[anonymous]`` matches only connections without a certificate, and no other
section matches them.
"""

from __future__ import annotations

import configparser
import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass

from gearsql.protocol import PacketType

__all__ = ["ANONYMOUS", "Acl", "AclError", "Grants", "parse_acl", "permission_for"]

P = PacketType

#: The section for connections without a client certificate.
ANONYMOUS = "anonymous"

_SUBMIT = frozenset(
    {
        P.SUBMIT_JOB,
        P.SUBMIT_JOB_BG,
        P.SUBMIT_JOB_HIGH,
        P.SUBMIT_JOB_HIGH_BG,
        P.SUBMIT_JOB_LOW,
        P.SUBMIT_JOB_LOW_BG,
        P.SUBMIT_JOB_SCHED,
        P.SUBMIT_JOB_EPOCH,
        P.SUBMIT_REDUCE_JOB,
        P.SUBMIT_REDUCE_JOB_BACKGROUND,
    }
)
_WORK = frozenset({P.CAN_DO, P.CAN_DO_TIMEOUT})

_KEYS = ("submit", "work", "admin")
_TRUE = ("yes", "true", "on", "1")
_FALSE = ("no", "false", "off", "0", "")


class AclError(ValueError):
    """The ACL text cannot be used; the message says where."""


def permission_for(packet_type: PacketType) -> str | None:
    """``"submit"`` or ``"work"`` for the packets the ACL governs (their first argument is the
    function), None for the others."""
    if packet_type in _SUBMIT:
        return "submit"
    if packet_type in _WORK:
        return "work"
    return None


def _patterns(text: str) -> tuple[re.Pattern[str], ...]:
    words = [word for word in re.split(r"[,\s]+", text) if word]
    return tuple(re.compile(fnmatch.translate(word)) for word in words)


@dataclass(frozen=True)
class Rule:
    """One section: an identity glob and what matching connections may do."""

    identity: str
    submit: tuple[re.Pattern[str], ...]
    work: tuple[re.Pattern[str], ...]
    admin: bool

    def matches(self, identities: tuple[str, ...]) -> bool:
        if not identities:
            return self.identity == ANONYMOUS
        if self.identity == ANONYMOUS:
            return False
        return any(fnmatch.fnmatchcase(name, self.identity) for name in identities)


class Grants:
    """What one connection (one tuple of identities) may do under one ACL; decisions per
    function are remembered (a connection asks about the same few functions)."""

    __slots__ = ("_decided", "admin", "submit", "work")

    def __init__(self, rules: Iterable[Rule]) -> None:
        rules = list(rules)
        self.submit = tuple(p for rule in rules for p in rule.submit)
        self.work = tuple(p for rule in rules for p in rule.work)
        self.admin = any(rule.admin for rule in rules)
        self._decided: dict[tuple[str, bytes], bool] = {}

    def allows(self, permission: str, function: bytes) -> bool:
        """Whether ``permission`` (``"submit"`` or ``"work"``) is granted on ``function``."""
        key = (permission, function)
        decided = self._decided.get(key)
        if decided is None:
            name = function.decode("utf-8", "surrogateescape")
            patterns = self.submit if permission == "submit" else self.work
            decided = any(pattern.match(name) for pattern in patterns)
            if len(self._decided) < 1024:
                self._decided[key] = decided
        return decided


class Acl:
    """The rules of one ACL file, in file order."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules = tuple(rules)

    def grants(self, identities: tuple[str, ...]) -> Grants:
        """What a connection with these identities (empty: no certificate) may do."""
        return Grants(rule for rule in self.rules if rule.matches(identities))


def parse_acl(text: str, source: str = "<acl>") -> Acl:
    """The ACL in ``text`` (INI). Raises :class:`AclError` for a syntax error, an unknown key or
    a bad ``admin`` value, naming ``source``."""
    parser = configparser.ConfigParser(
        default_section="\0none",  # no inherited defaults: every section says what it grants
        interpolation=None,
        inline_comment_prefixes=("#", ";"),
        strict=True,
    )
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        parser.read_string(text, source)
    except configparser.Error as exc:
        raise AclError(f"{source}: {_first_line(exc)}") from None
    rules = []
    for identity in parser.sections():
        section = parser[identity]
        unknown = [key for key in section if key not in _KEYS]
        if unknown:
            raise AclError(
                f"{source}: [{identity}]: unknown key {unknown[0]!r}; the keys are submit, "
                "work and admin"
            )
        admin = section.get("admin", "no").strip().lower()
        if admin not in _TRUE + _FALSE:
            raise AclError(f"{source}: [{identity}]: admin must be yes or no, not {admin!r}")
        rules.append(
            Rule(
                identity.strip(),
                _patterns(section.get("submit", "")),
                _patterns(section.get("work", "")),
                admin in _TRUE,
            )
        )
    return Acl(rules)


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0]
