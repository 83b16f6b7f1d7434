"""Loads the udf library from source text into a private package of this Python process.

Runs inside PostgreSQL's PL/Python (as the body of ``_gman_load()``) and in gearsql's SQLite shim.
The package name carries a digest of the sources, so two installed versions never mix in one
backend, and nothing named ``gearsql`` is ever imported: PL/Python runs in the database server's
own Python, where gearsql is not installed.

A new PostgreSQL backend pays for this load on its first gman_* call, so it is kept cheap:

- the modules' code can come compiled (``marshal`` data made by :func:`compile_sources` in the
  same interpreter, which ``_gman_compile()`` stores at install time; see
  :func:`bytecode_magic`), so nothing is compiled;
- ``typing``, ``dataclasses`` and ``__future__``, which the codec and the client connection
  import for their annotations and event classes, are served to the library's modules by small
  stand-ins here (``_STANDINS``) instead of the standard modules, whose import (``dataclasses``
  pulls in ``inspect``, ``ast``, ``dis``...) cost more than everything else together. The
  stand-ins build the same things at run time: ``NamedTuple`` classes through
  ``collections.namedtuple`` as ``typing`` does, and ``@dataclass(frozen=True)`` classes with
  the same ``__init__``, ``__repr__``, ``__eq__``, ``__hash__`` and frozen attributes. Anything
  else they are asked for is an ImportError naming the stand-in, so a module that starts using
  more of ``typing`` or ``dataclasses`` fails every bridge test until the stand-in learns it.
"""

import builtins
import marshal
import sys
import types

#: Modules in load order: the codec, the sans-IO client connection (which imports the codec as
#: ``.protocol``), then the functions' library.
MODULES = ("protocol", "_clientconn", "gman")


def bytecode_magic():
    """The marshal/bytecode version of this interpreter (a ``.pyc`` file's magic number): code
    compiled by :func:`compile_sources` loads only where this is the same."""
    try:
        from _frozen_importlib_external import MAGIC_NUMBER
    except ImportError:  # not CPython's import system
        from importlib.util import MAGIC_NUMBER
    return bytes(MAGIC_NUMBER)


def compile_sources(package, sources):
    """Module name -> the module compiled for ``package`` by this interpreter, as marshal data,
    for every module of ``sources`` (name -> source text)."""
    return {
        name: marshal.dumps(compile(source, "<" + package + "." + name + ">", "exec"))
        for name, source in sources.items()
    }


def load_package(package, sources, codes=None):
    """The package ``package`` with one submodule per entry of MODULES, built the first time and
    taken from ``sys.modules`` afterwards. ``sources``: module name -> source text; ``codes``:
    module name -> :func:`compile_sources` data of this interpreter, used instead of compiling
    (a module missing there, or data that does not load, is compiled from its source)."""
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
            module.__builtins__ = _BUILTINS
            sys.modules[fullname] = module
            exec(_code(module.__file__, sources[name], (codes or {}).get(name)), module.__dict__)
            setattr(root, name, module)
    except BaseException:
        for name in [package] + [package + "." + name for name in MODULES]:
            sys.modules.pop(name, None)
        raise
    return root


def _code(filename, source, data):
    if data is not None:
        try:
            code = marshal.loads(data)
        except (EOFError, ValueError, TypeError):
            code = None
        if isinstance(code, types.CodeType) and code.co_filename == filename:
            return code
    return compile(source, filename, "exec")


# ------------------------------------------------------------------------------ stand-ins


def _standin_typing():
    import collections

    module = types.ModuleType("typing", "udf/loader.py's stand-in for typing")

    class Generic:
        __slots__ = ()

        def __class_getitem__(cls, params):
            return cls

    def TypeVar(name, *constraints, **options):
        return name

    class _Union:
        def __getitem__(self, params):
            return params if isinstance(params, tuple) else (params,)

    # typing.NamedTuple's run-time part: a collections.namedtuple with the class body's fields
    # (defaults from the trailing assigned ones) and the rest of the body copied onto it.
    prohibited = frozenset(
        (
            "__new__",
            "__init__",
            "__slots__",
            "__getnewargs__",
            "_fields",
            "_field_defaults",
            "_make",
            "_replace",
            "_asdict",
            "_source",
        )
    )
    special = frozenset(("__module__", "__name__", "__annotations__"))

    class NamedTupleMeta(type):
        def __new__(mcls, typename, bases, ns):
            fields = list(ns.get("__annotations__", {}))
            defaults = [name for name in fields if name in ns]
            if defaults != fields[len(fields) - len(defaults) :]:
                raise TypeError(f"{typename}: a field without a default follows one with")
            made = collections.namedtuple(
                typename, fields, defaults=[ns[name] for name in defaults], module=ns["__module__"]
            )
            made.__annotations__ = dict(ns.get("__annotations__", {}))
            for key, value in ns.items():
                if key in prohibited:
                    raise AttributeError("cannot overwrite NamedTuple attribute " + key)
                if key not in special and key not in made._fields:
                    setattr(made, key, value)
            return made

    base = type.__new__(NamedTupleMeta, "NamedTuple", (), {})

    def NamedTuple(typename, fields=None, /, **kwargs):
        raise TypeError("udf/loader.py's stand-in for typing has no functional NamedTuple")

    NamedTuple.__mro_entries__ = lambda bases: (base,)
    module.Generic = Generic
    module.TypeVar = TypeVar
    module.Union = _Union()
    module.NamedTuple = NamedTuple
    return module


def _standin_dataclasses():
    module = types.ModuleType("dataclasses", "udf/loader.py's stand-in for dataclasses")

    class FrozenInstanceError(AttributeError):
        pass

    def _frozen_setattr(self, name, value):
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def _frozen_delattr(self, name):
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def dataclass(cls=None, /, *, frozen=False, **options):
        """@dataclass(frozen=True) of classes whose fields have no defaults: nothing else."""
        if not frozen or options:
            raise TypeError("udf/loader.py's stand-in for dataclasses does frozen=True only")

        def wrap(cls):
            names = tuple(cls.__dict__.get("__annotations__", {}))  # noqa: RUF063 (no inspect)
            if any(name in cls.__dict__ for name in names):
                raise TypeError(f"{cls.__name__}: the stand-in dataclass takes no defaults")
            source = (
                "def __init__(self"
                + "".join(", " + name for name in names)
                + "):\n"
                + "".join(f"    _set(self, {name!r}, {name})\n" for name in names)
                + ("    pass\n" if not names else "")
                + "def _values(self):\n"
                + "    return ("
                + "".join(f"self.{name}, " for name in names)
                + ")\n"
            )
            namespace = {"_set": object.__setattr__}
            exec(source, namespace)
            values = namespace["_values"]

            def __repr__(self):
                inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in names)
                return f"{type(self).__qualname__}({inner})"

            def __eq__(self, other):
                if other.__class__ is self.__class__:
                    return values(self) == values(other)
                return NotImplemented

            def __hash__(self):
                return hash(values(self))

            namespace["__init__"].__qualname__ = cls.__qualname__ + ".__init__"
            cls.__init__ = namespace["__init__"]
            cls.__repr__ = __repr__
            cls.__eq__ = __eq__
            cls.__hash__ = __hash__
            cls.__setattr__ = _frozen_setattr
            cls.__delattr__ = _frozen_delattr
            cls.__match_args__ = names
            return cls

        return wrap if cls is None else wrap(cls)

    module.dataclass = dataclass
    module.FrozenInstanceError = FrozenInstanceError
    return module


def _standin_future():
    module = types.ModuleType("__future__", "udf/loader.py's stand-in for __future__")
    module.annotations = "annotations"  # the compiler reads the import; nothing uses the value
    return module


_STANDINS = {
    "typing": _standin_typing,
    "dataclasses": _standin_dataclasses,
    "__future__": _standin_future,
}
_made = {}


def _import(name, globals=None, locals=None, fromlist=(), level=0):
    """``__import__`` of the library's modules: the stand-ins, else the real import."""
    if level == 0 and name in _STANDINS:
        module = _made.get(name)
        if module is None:
            module = _made[name] = _STANDINS[name]()
            module.__file__ = "<udf/loader.py stand-in for " + name + ">"
        return module
    return builtins.__import__(name, globals, locals, fromlist, level)


_BUILTINS = dict(builtins.__dict__)
_BUILTINS["__import__"] = _import
