"""udf/loader.py: compiled code and the stand-ins for typing and dataclasses behave like the real
modules for the library (PostgreSQL's first call depends on both being cheap and right)."""

from __future__ import annotations

import dataclasses
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
