"""Loads the udf library from source text into a private package of this Python process.

Runs inside PostgreSQL's PL/Python (the first call of a backend runs it from ``_gman_library``,
then :func:`load_rows`) and in gearsql's SQLite shim.
The package name carries a digest of the sources, so two installed versions never mix in one
backend, and nothing named ``gearsql`` is ever imported: PL/Python runs in the database server's
own Python, where gearsql is not installed.

A new PostgreSQL backend pays for this load on its first gman_* call, so it is kept cheap:

- the modules' code can come compiled (``marshal`` data made by :func:`compile_sources` in the
  same interpreter, which ``_gman_compile()`` stores at install time; see
  :func:`bytecode_magic`), so nothing is compiled;
- no garbage collection runs while the modules are built (:func:`load_package`);
- ``typing``, ``dataclasses``, ``enum``, ``collections`` and ``__future__``, which the codec
  and the client connection import for their annotations, event classes, packet types and
  queue, are served to the library's modules by small stand-ins here (``_STANDINS``) instead of
  the standard modules, whose import (``dataclasses`` pulls in ``inspect``, ``ast``, ``dis``...;
  ``enum`` ``functools`` and ``collections``) cost more than everything else together. The
  stand-ins build the same things at run time: ``NamedTuple`` classes as
  ``collections.namedtuple`` makes them (:func:`_named_tuple_class`), ``@dataclass(frozen=True)``
  classes with the same ``__init__``, ``__repr__``, ``__eq__``, ``__hash__`` and frozen
  attributes, ``Enum`` and ``IntEnum`` classes whose members have the same names, values,
  ``repr``, ``str`` and hash and are looked up by value the same way (``_missing_`` included),
  and ``collections.deque`` is the C one. They compile nothing (the constructors bind their
  arguments at run time, :func:`_arguments`). Anything else they are asked for is an ImportError
  naming the stand-in (an AttributeError for ``enum.<name>``), so a module that starts using
  more of them fails every bridge test until the stand-in learns it.
"""

import builtins
import gc
import marshal
import sys

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


# types.ModuleType and types.CodeType, without importing types (0.3 ms in a new backend). Not
# from compile(): its first call in a process costs 1 ms (it sets up the _ast module).
ModuleType = type(sys)
CodeType = type(bytecode_magic.__code__)


def load_package(package, sources, codes=None):
    """The package ``package`` with one submodule per entry of MODULES, built the first time and
    taken from ``sys.modules`` afterwards. ``sources``: module name -> source text; ``codes``:
    module name -> :func:`compile_sources` data of this interpreter, used instead of compiling
    (a module missing there, or data that does not load, is compiled from its source)."""
    loaded = sys.modules.get(package)
    if loaded is not None and all(hasattr(loaded, name) for name in MODULES):
        return loaded
    root = ModuleType(package, "gearsql SQL bridge library")
    root.__path__ = []
    root.__package__ = package
    sys.modules[package] = root
    # No garbage collection while the modules are built: all they make is kept, and the passes
    # it set off (one per 700 new objects) cost a new backend's first call 0.5 ms.
    collecting = gc.isenabled()
    gc.disable()
    try:
        for name in MODULES:
            fullname = package + "." + name
            module = ModuleType(fullname)
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
    finally:
        if collecting:
            gc.enable()
    return root


def load_rows(package, rows, plpy, query):
    """:func:`load_package` from the rows a PostgreSQL backend read from ``_gman_library``
    (``module``, and ``code`` where it fits this interpreter, else ``source``). ``query``
    reads them again with ``{magic}`` in it, filled with nothing here: every module's source,
    for when some compiled code does not load after all."""
    codes = {row["module"]: row["code"] for row in rows if row["code"] is not None}
    sources = {row["module"]: row["source"] for row in rows}
    try:
        return load_package(package, sources, codes)
    except _NoSource:
        rows = plpy.execute(query.replace("{magic}", ""))
        return load_package(package, {row["module"]: row["source"] for row in rows})


class _NoSource(Exception):
    """A module's compiled code did not load, and its source was not read."""


def _code(filename, source, data):
    if data is not None:
        try:
            code = marshal.loads(data)
        except (EOFError, ValueError, TypeError):
            code = None
        if isinstance(code, CodeType) and code.co_filename == filename:
            return code
    if source is None:
        raise _NoSource(filename)
    return compile(source, filename, "exec")


# ------------------------------------------------------------------------------ stand-ins


def _arguments(name, fields, defaults, args, kwargs):
    """The values of ``fields`` from a call's ``args`` and ``kwargs`` (``defaults``: field ->
    value of those that may be left out), or the TypeError a function of that signature raises.
    The stand-ins' constructors take ``*args, **kwargs`` and come here unless given exactly one
    value per field by position: writing each constructor out and compiling it, as
    ``collections`` and ``dataclasses`` do, cost a new backend 0.9 ms."""
    if len(args) > len(fields):
        raise TypeError(
            f"{name}() takes {len(fields)} positional arguments but {len(args)} were given"
        )
    values = list(args)
    for field in fields[len(args) :]:
        if field in kwargs:
            values.append(kwargs.pop(field))
        elif field in defaults:
            values.append(defaults[field])
        else:
            raise TypeError(f"{name}() missing required argument: {field!r}")
    for field in kwargs:
        if field in fields:
            raise TypeError(f"{name}() got multiple values for argument {field!r}")
        raise TypeError(f"{name}() got an unexpected keyword argument {field!r}")
    return values


def _named_tuple_class(typename, fields, defaults):
    """The class ``collections.namedtuple(typename, fields, defaults=defaults)`` makes (a tuple
    with a property per field, ``_make``, ``_replace``, ``_asdict``, the same ``repr``), made
    without importing ``collections``, whose import cost a new backend about 2 ms."""
    from _collections import _tuplegetter

    fields = tuple(fields)
    defaults = tuple(defaults)
    count = len(fields)
    field_defaults = dict(zip(fields[count - len(defaults) :], defaults, strict=True))

    def __new__(_cls, *args, **kwargs):
        if kwargs or len(args) != count:
            args = _arguments(typename, fields, field_defaults, args, kwargs)
        return tuple.__new__(_cls, args)

    __new__.__qualname__ = typename + ".__new__"

    def _make(cls, iterable):
        made = tuple.__new__(cls, iterable)
        if len(made) != count:
            raise TypeError(f"Expected {count} arguments, got {len(made)}")
        return made

    def _replace(self, /, **changes):
        made = self._make(map(changes.pop, fields, self))
        if changes:
            raise ValueError(f"Got unexpected field names: {list(changes)!r}")
        return made

    def __repr__(self):
        inner = ", ".join(f"{name}={value!r}" for name, value in zip(fields, self, strict=True))
        return f"{type(self).__name__}({inner})"

    def _asdict(self):
        return dict(zip(fields, self, strict=True))

    def __getnewargs__(self):
        return tuple(self)

    body = {
        "__doc__": f"{typename}({', '.join(fields)})",
        "__slots__": (),
        "_fields": fields,
        "_field_defaults": field_defaults,
        "__new__": __new__,
        "_make": classmethod(_make),
        "_replace": _replace,
        "__repr__": __repr__,
        "_asdict": _asdict,
        "__getnewargs__": __getnewargs__,
        "__match_args__": fields,
    }
    for index, name in enumerate(fields):
        body[name] = _tuplegetter(index, f"Alias for field number {index}")
    return type(typename, (tuple,), body)


def _standin_typing():
    module = ModuleType("typing", "udf/loader.py's stand-in for typing")

    class Generic:
        __slots__ = ()

        def __class_getitem__(cls, params):
            return cls

    def TypeVar(name, *constraints, **options):
        return name

    class _Union:
        def __getitem__(self, params):
            return params if isinstance(params, tuple) else (params,)

    # typing.NamedTuple's run-time part: a named tuple class with the class body's fields
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
            made = _named_tuple_class(typename, fields, [ns[name] for name in defaults])
            made.__module__ = ns["__module__"]
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
    module = ModuleType("dataclasses", "udf/loader.py's stand-in for dataclasses")

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
            count = len(names)

            def __init__(self, *args, **kwargs):
                if kwargs or len(args) != count:
                    args = _arguments(cls.__name__, names, {}, args, kwargs)
                for name, value in zip(names, args, strict=True):
                    object.__setattr__(self, name, value)

            def values(self):
                return tuple([getattr(self, name) for name in names])

            def __repr__(self):
                inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in names)
                return f"{type(self).__qualname__}({inner})"

            def __eq__(self, other):
                if other.__class__ is self.__class__:
                    return values(self) == values(other)
                return NotImplemented

            def __hash__(self):
                return hash(values(self))

            __init__.__qualname__ = cls.__qualname__ + ".__init__"
            cls.__init__ = __init__
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


def _standin_enum():
    module = ModuleType("enum", "udf/loader.py's stand-in for enum")
    mappingproxy = type(type.__dict__)

    class EnumType(type):
        """Makes a member of each public class attribute that is a plain value (not a function,
        property or classmethod): an instance of the class holding ``_name_`` and ``_value_``.
        A name whose value was taken already is an alias of that member, as in enum."""

        def __new__(mcls, name, bases, namespace):
            values = {
                key: value
                for key, value in namespace.items()
                if not key.startswith("_") and not hasattr(value, "__get__")
            }
            body = {key: value for key, value in namespace.items() if key not in values}
            cls = super().__new__(mcls, name, bases, body)
            cls._member_map_ = {}
            cls._value2member_map_ = {}
            members = []
            for key, value in values.items():
                member = cls._value2member_map_.get(value)
                if member is None:
                    if issubclass(cls, int):
                        member = int.__new__(cls, value)
                    else:
                        member = object.__new__(cls)
                    member._name_ = key
                    member._value_ = value
                    cls._value2member_map_[value] = member
                    members.append(member)
                cls._member_map_[key] = member
                type.__setattr__(cls, key, member)
            cls._members_ = tuple(members)
            return cls

        def __call__(cls, value):
            try:
                member = cls._value2member_map_.get(value)
            except TypeError:  # unhashable: no member has it
                member = None
            if member is None:
                member = cls._missing_(value)
            if isinstance(member, cls):
                return member
            raise ValueError(f"{value!r} is not a valid {cls.__qualname__}")

        def __iter__(cls):
            return iter(cls._members_)

        def __len__(cls):
            return len(cls._members_)

        @property
        def __members__(cls):
            return mappingproxy(cls._member_map_)

        def __repr__(cls):
            return f"<enum {cls.__name__!r}>"

    class Enum(metaclass=EnumType):
        name = property(lambda self: self._name_, doc="The member's name.")
        value = property(lambda self: self._value_, doc="The member's value.")

        @classmethod
        def _missing_(cls, value):
            return None

        def __repr__(self):
            return f"<{type(self).__name__}.{self._name_}: {self._value_!r}>"

        def __str__(self):
            return f"{type(self).__name__}.{self._name_}"

        def __hash__(self):
            return hash(self._name_)

    class IntEnum(int, Enum):
        # int's comparisons, hash, str and format (as enum's IntEnum since Python 3.11), with
        # the member's repr.
        __repr__ = Enum.__repr__
        __str__ = int.__repr__
        __format__ = int.__format__

    module.EnumType = module.EnumMeta = EnumType
    module.Enum = Enum
    module.IntEnum = IntEnum
    return module


def _standin_collections():
    from _collections import deque

    module = ModuleType("collections", "udf/loader.py's stand-in for collections")
    module.deque = deque
    return module


def _standin_future():
    module = ModuleType("__future__", "udf/loader.py's stand-in for __future__")
    module.annotations = "annotations"  # the compiler reads the import; nothing uses the value
    return module


_STANDINS = {
    "collections": _standin_collections,
    "enum": _standin_enum,
    "typing": _standin_typing,
    "dataclasses": _standin_dataclasses,
    "__future__": _standin_future,
}
_made = {}


#: Modules whose C part the library gets instead: ``struct`` only re-exports ``_struct``, but
#: reading it from disk cost a new backend's first call 0.1 ms.
_C_MODULES = {"struct": "_struct"}


def _import(name, globals=None, locals=None, fromlist=(), level=0):
    """``__import__`` of the library's modules: the stand-ins, else the real import."""
    if level == 0 and name in _C_MODULES:
        return builtins.__import__(_C_MODULES[name])
    if level == 0 and name in _STANDINS:
        module = _made.get(name)
        if module is None:
            module = _made[name] = _STANDINS[name]()
            module.__file__ = "<udf/loader.py stand-in for " + name + ">"
        return module
    return builtins.__import__(name, globals, locals, fromlist, level)


_BUILTINS = dict(builtins.__dict__)
_BUILTINS["__import__"] = _import
