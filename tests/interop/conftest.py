"""Fixtures for interop tests: other people's Gearman tools, bound to the server under test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ServerProcess, need_tool

from .gearman_tools import Gearadmin, GearmanCli


@pytest.fixture
def gearman_cli(any_server: ServerProcess, tmp_path: Path) -> Iterator[GearmanCli]:
    """Debian's `gearman` CLI for the server under test; its workers are killed afterwards."""
    cli = GearmanCli(need_tool("gearman"), any_server, tmp_path)
    try:
        yield cli
    finally:
        cli.kill_workers()


@pytest.fixture
def gearadmin(any_server: ServerProcess) -> Gearadmin:
    """Debian's `gearadmin` CLI for the server under test."""
    return Gearadmin(need_tool("gearadmin"), any_server)
