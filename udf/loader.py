"""Loads the udf library from source text into a private package of this Python process.

Runs inside PostgreSQL's PL/Python (as the body of ``_gman_load()``, with the sources embedded)
and in gearsql's SQLite shim. The package name carries a digest of the sources, so two installed
versions never mix in one backend, and nothing named ``gearsql`` is ever imported: PL/Python
runs in the database server's own Python, where gearsql is not installed.
"""

import sys
import types

#: Modules in load order: the codec, the sans-IO client connection (which imports the codec as
#: ``.protocol``), then the functions' library.
MODULES = ("protocol", "_clientconn", "gman")


def load_package(package, sources):
    """The package ``package`` with one submodule per entry of MODULES, built from ``sources``
    (module name -> source text) the first time and taken from ``sys.modules`` afterwards."""
    loaded = sys.modules.get(package)
    if loaded is not None and all(hasattr(loaded, name) for name in MODULES):
        return loaded
    root = types.ModuleType(package, "gearsql SQL bridge library")
    root.__path__ = []
    root.__package__ = package
    sys.modules[package] = root
    try:
        for name in MODULES:
            fullname = package + "." + name
            module = types.ModuleType(fullname)
            module.__package__ = package
            module.__file__ = "<" + fullname + ">"
            sys.modules[fullname] = module
            exec(compile(sources[name], module.__file__, "exec"), module.__dict__)
            setattr(root, name, module)
    except BaseException:
        for name in [package] + [package + "." + name for name in MODULES]:
            sys.modules.pop(name, None)
        raise
    return root
