"""SQL bridges: the ``gman_*`` functions for PostgreSQL (PL/Python) and SQLite.

(MariaDB's are plain stored routines with nothing from ``udf/``: :mod:`gearsql.bridges.mysql`,
and the relay's side of its foreground calls, :mod:`gearsql.bridges.mysql_calls`.)

The functions' code lives in the repository's ``udf/`` folder, written against PL/Python's
``plpy`` API; ``sql/generate.py`` copies it into :mod:`gearsql.bridges._udf_sources` so that an
installed gearsql carries it. This module assembles the library the functions run: the codec
(:mod:`gearsql.protocol`), the sans-IO client connection (:mod:`gearsql._clientconn`) and
``udf/gman.py``, as source text to send into a database or to load here for SQLite.
"""

from __future__ import annotations

import hashlib
import re
import sys
import types
from importlib import resources
from typing import Any

from gearsql.bridges._udf_sources import UDF_SOURCES

__all__ = [
    "library_package",
    "library_sources",
    "load_library",
    "udf_module",
]

_GEARSQL_IMPORT = re.compile(r"^\s*(from|import)\s+gearsql\b", re.MULTILINE)


def _codec_source(name: str) -> str:
    return resources.files("gearsql").joinpath(f"{name}.py").read_text(encoding="utf-8")


def library_sources() -> dict[str, str]:
    """Module name -> source of every module of the library, as ``udf/loader.py`` loads them.

    ``_clientconn`` imports the codec as ``gearsql.protocol``; inside the library the codec is its
    sibling, so that one import is rewritten to ``.protocol``. Any other import of gearsql would
    fail inside the database, so it is refused here.
    """
    clientconn = _codec_source("_clientconn").replace(
        "from gearsql.protocol import", "from .protocol import"
    )
    sources = {
        "protocol": _codec_source("protocol"),
        "_clientconn": clientconn,
        "gman": UDF_SOURCES["gman"],
    }
    for name, text in sources.items():
        if _GEARSQL_IMPORT.search(text):
            raise RuntimeError(f"{name} imports gearsql, which the database's Python lacks")
    return sources


def library_package(sources: dict[str, str] | None = None) -> str:
    """The private package name of this library version: ``_gearsql_udf_<digest>``."""
    digest = hashlib.sha256()
    for name, text in sorted((sources or library_sources()).items()):
        digest.update(name.encode() + b"\0" + text.encode() + b"\0")
    return "_gearsql_udf_" + digest.hexdigest()[:12]


def udf_module(name: str) -> types.ModuleType:
    """A fresh module built from ``udf/<name>.py`` (``functions``, ``loader``, ``plpy_shim``)."""
    module = types.ModuleType(f"gearsql.bridges.udf_{name}")
    exec(compile(UDF_SOURCES[name], f"<udf/{name}.py>", "exec"), module.__dict__)
    return module


_library: Any = None


def load_library() -> Any:
    """The ``gman`` module of the library, loaded into this process by ``udf/loader.py``."""
    global _library
    if _library is None:
        sources = library_sources()
        package = udf_module("loader").load_package(library_package(sources), sources)
        _library = package.gman
        assert package.__name__ in sys.modules
    return _library
