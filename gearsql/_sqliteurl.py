"""``sqlite:///relative.db`` and ``sqlite:////absolute.db`` URLs, as ``--store`` and ``gearsql
relay --dsn`` take them, and the file ``gearsql server`` uses without ``--store``.

The convention is SQLAlchemy's, the one Python users know: the path is what follows
``sqlite:///``, so three slashes and a relative path name a file in the current directory, and a
fourth slash starts an absolute path. ``sqlite3://`` is accepted as the same scheme.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["SQLITE_SCHEMES", "default_sqlite_path", "sqlite_path", "sqlite_url"]

SQLITE_SCHEMES = ("sqlite", "sqlite3")

#: How the URL is written, for error messages.
FORMS = "sqlite:///relative/path.db or sqlite:////absolute/path.db"


def sqlite_path(url: str) -> str:
    """The file ``url`` names, made absolute against the current directory now (so that it
    does not change meaning if the process later changes directory); the query string
    (``?table=...``) is not part of it. Raises ValueError for a URL that is not of either form.
    """
    scheme, separator, rest = url.partition("://")
    if scheme not in SQLITE_SCHEMES or not separator:
        raise ValueError(f"{url!r} is not an SQLite URL: write {FORMS}")
    rest = rest.split("?", 1)[0]
    if not rest.startswith("/"):
        # sqlite://name.db would make "name.db" a host name, which SQLite has no use for.
        raise ValueError(f"{url!r}: the path follows three slashes: {FORMS}")
    path = rest[1:]
    if not path or path.endswith("/"):
        raise ValueError(f"{url!r} names no file: {FORMS}")
    return os.path.abspath(path)


def sqlite_url(path: str | os.PathLike[str]) -> str:
    """The URL of ``path``: ``sqlite:///`` followed by it, so an absolute path gets four slashes
    and a relative one three."""
    return f"sqlite:///{os.fspath(path)}"


def default_sqlite_path() -> Path:
    """Where ``gearsql server`` keeps its queue when not told otherwise:
    ``$XDG_STATE_HOME/gearsql/queue.sqlite3`` (``~/.local/state/gearsql/queue.sqlite3``)."""
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return Path(state) / "gearsql" / "queue.sqlite3"
