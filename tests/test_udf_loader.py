"""udf/loader.py: compiled code and the stand-ins for typing, dataclasses, enum and collections
behave like the real modules for the library (PostgreSQL's first call depends on both being cheap
and right)."""

from __future__ import annotations

import dataclasses
import gc
import secrets
import sys
from typing import Any

import pytest

from gearsql import _clientconn, protocol
from gearsql.bridges import library_package, library_sources, udf_module


def _fresh(codes: dict[str, bytes] | None = None) -> Any:
    loader = udf_module("loader")
    sources = library_sources()
    package = library_package(sources) + "_" + secrets.token_hex(4)
    return loader, package, loader.load_package(package, sources, codes)


def test_events_and_packets_match_the_real_classes() -> None:
    _, package, lib = _fresh()
    try:
        cc, proto = lib._clientconn, lib.protocol
        assert "dataclasses" not in vars(cc) or vars(cc)["dataclass"] is not dataclasses.dataclass
        packet = proto.Packet(proto.PacketType.WORK_COMPLETE, (b"H:1", b"ok"))
        real_packet = protocol.Packet(protocol.PacketType.WORK_COMPLETE, (b"H:1", b"ok"))
        assert packet == real_packet and packet.request is True
        assert packet._fields == real_packet._fields
        assert packet._field_defaults == real_packet._field_defaults
        assert packet._replace(request=False).request is False
        assert repr(packet) == repr(real_packet) and packet._asdict() == real_packet._asdict()
        assert proto.Packet._make(real_packet) == packet and packet.args is packet[1]
        # Its constructor binds arguments as the real one does (by keyword, with defaults).
        keywords = {"args": (b"H:1", b"ok"), "type": proto.PacketType.WORK_COMPLETE}
        assert proto.Packet(**keywords) == packet == protocol.Packet(**keywords)
        assert proto.Packet(proto.PacketType.NOOP, (), False).request is False
        for args, kwargs in (
            ((), {}),
            ((1, 2, 3, 4), {}),
            ((1, 2), {"kind": 3}),
            ((1,), {"type": 1}),
        ):
            with pytest.raises(TypeError):
                protocol.Packet(*args, **kwargs)
            with pytest.raises(TypeError):
                proto.Packet(*args, **kwargs)
        with pytest.raises(TypeError, match="Expected 3 arguments, got 2"):
            proto.Packet._make((1, 2))
        with pytest.raises(ValueError, match="unexpected field names"):
            packet._replace(kind=1)
        assert repr(proto.AdminLine(b"x")) == repr(protocol.AdminLine(b"x"))
        assert proto.Packet.__doc__ == protocol.Packet.__doc__
        for name in ("JobCreated", "JobUpdate", "JobDone", "Answer", "ErrorReply"):
            mine, real = getattr(cc, name), getattr(_clientconn, name)
            fields = [f.name for f in dataclasses.fields(real)]
            values = [f"v{i}" for i in range(len(fields))]
            a, b = mine(*values), real(*values)
            assert repr(a) == repr(b)
            assert a == mine(**dict(zip(fields, values, strict=True))) and hash(a) == hash(b)
            assert a != mine(*values[:-1], "other") and a.__match_args__ == b.__match_args__
            with pytest.raises(AttributeError):
                a.token = "x"  # type: ignore[misc]
            with pytest.raises(TypeError):
                mine(*values, "one too many")
        broken = cc.ProtocolBroken("bad")
        assert repr(broken) == repr(_clientconn.ProtocolBroken("bad"))
        # The connection works: a submission's packet is the real codec's.
        conn = cc.ClientConnection()
        conn.submit(0, b"f", b"", b"data", proto.Priority.NORMAL, False)
        real = _clientconn.ClientConnection()
        real.submit(0, b"f", b"", b"data", protocol.Priority.NORMAL, False)
        assert conn.data_to_send() == real.data_to_send()
    finally:
        for name in [n for n in sys.modules if n.startswith(package)]:
            del sys.modules[name]


def test_the_codecs_enums_match_the_real_ones() -> None:
    _, package, lib = _fresh()
    try:
        proto = lib.protocol
        assert vars(proto)["enum"].__file__ == "<udf/loader.py stand-in for enum>"
        for mine_enum, real_enum in (
            (proto.PacketType, protocol.PacketType),
            (proto.Priority, protocol.Priority),
            (proto.ArgumentProblem, protocol.ArgumentProblem),
        ):
            assert len(mine_enum) == len(real_enum)
            assert list(mine_enum.__members__) == list(real_enum.__members__)
            for mine, real in zip(mine_enum, real_enum, strict=True):
                assert (mine.name, mine.value) == (real.name, real.value)
                assert (repr(mine), str(mine), f"{mine}") == (repr(real), str(real), f"{real}")
                assert hash(mine) == hash(real) and mine_enum(real.value) is mine
                assert mine_enum.__members__[real.name] is mine and isinstance(mine, mine_enum)
            with pytest.raises(ValueError, match=f"99 is not a valid {real_enum.__name__}"):
                mine_enum(99)
        assert proto.PacketType.SUBMIT_JOB == 7 and {7: "x"}[proto.PacketType.SUBMIT_JOB] == "x"
        assert proto.Priority("High") is proto.Priority.HIGH and proto.Priority.LOW.word == "low"
        assert proto.Priority.from_word("normal") is proto.Priority.NORMAL
        with pytest.raises(ValueError, match="not a priority"):
            proto.Priority.from_word("urgent")
        problem = proto.check_unique(b"\0")
        assert problem is proto.ArgumentProblem.UNIQUE_HAS_NUL and problem != 0
        assert (problem.code, problem.text) == (
            b"INVALID_ARGUMENT",
            protocol.check_unique(b"\0").text,
        )
        # The parser hands out the stand-in's members.
        data = protocol.pack_response(protocol.PacketType.JOB_CREATED, b"H:1")
        (event,) = proto.Parser().feed(data)
        assert (
            event.type is proto.PacketType.JOB_CREATED and event == protocol.Parser().feed(data)[0]
        )
    finally:
        for name in [n for n in sys.modules if n.startswith(package)]:
            del sys.modules[name]


def test_no_garbage_collection_while_loading_and_the_collectors_state_is_kept() -> None:
    loader = udf_module("loader")
    sources = dict(library_sources())
    sources["gman"] += "\nimport gc\nCOLLECTING = gc.isenabled()\n"
    try:
        for enabled in (True, False):
            (gc.enable if enabled else gc.disable)()
            package = library_package(sources) + "_" + secrets.token_hex(4)
            try:
                assert loader.load_package(package, sources).gman.COLLECTING is False
                assert gc.isenabled() is enabled
            finally:
                for name in [n for n in sys.modules if n.startswith(package)]:
                    del sys.modules[name]
        gc.enable()
        broken = dict(sources, gman="raise SystemError('broken')")
        with pytest.raises(SystemError, match="broken"):
            loader.load_package("_gearsql_udf_test_" + secrets.token_hex(4), broken)
        assert gc.isenabled()
    finally:
        gc.enable()


def test_compiled_code_is_used_and_bad_code_falls_back_to_the_source() -> None:
    loader = udf_module("loader")
    sources = library_sources()
    package = library_package(sources) + "_" + secrets.token_hex(4)
    codes = loader.compile_sources(package, sources)
    assert set(codes) == set(loader.MODULES) and isinstance(loader.bytecode_magic(), bytes)
    try:
        lib = loader.load_package(package, {name: "raise SystemError" for name in sources}, codes)
        assert lib.gman.parse_servers("h:1") == [("h", 1)]
    finally:
        for name in [n for n in sys.modules if n.startswith(package)]:
            del sys.modules[name]
    broken = {name: b"not marshal data" for name in codes}
    _, package, lib = _fresh(broken)
    try:
        assert lib.gman.parse_servers("h:2") == [("h", 2)]
    finally:
        for name in [n for n in sys.modules if n.startswith(package)]:
            del sys.modules[name]


def test_a_module_asking_the_stand_ins_for_more_fails_loudly() -> None:
    loader = udf_module("loader")
    package = "_gearsql_udf_test_" + secrets.token_hex(4)
    sources = dict(library_sources())
    sources["protocol"] = sources["protocol"].replace(
        "from typing import NamedTuple", "from typing import Protocol, NamedTuple"
    )
    with pytest.raises(ImportError, match="stand-in for typing"):
        loader.load_package(package, sources)
    assert not [n for n in sys.modules if n.startswith(package)]
    sources = dict(library_sources())
    sources["_clientconn"] = sources["_clientconn"].replace(
        "@dataclass(frozen=True)\nclass ProtocolBroken", "@dataclass\nclass ProtocolBroken"
    )
    with pytest.raises(TypeError, match="frozen=True only"):
        loader.load_package(package, sources)
    sources = dict(library_sources())
    sources["_clientconn"] = sources["_clientconn"].replace(
        "from collections import deque", "from collections import OrderedDict, deque"
    )
    with pytest.raises(ImportError, match="stand-in for collections"):
        loader.load_package(package, sources)
    sources = dict(library_sources())
    sources["protocol"] = sources["protocol"].replace(
        "class ArgumentProblem(enum.Enum)", "class ArgumentProblem(enum.Flag)"
    )
    with pytest.raises(AttributeError, match="Flag"):
        loader.load_package(package, sources)
