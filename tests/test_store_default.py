"""One default store: a server made from Python keeps its jobs where ``gearsql server`` does."""

from __future__ import annotations

from pathlib import Path

import pytest

from gearsql.server import ServerConfig
from gearsql.stores import default_store_url, open_store
from gearsql.stores.sqlite import SQLiteStore


def test_server_config_defaults_to_the_clis_sqlite_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    config = ServerConfig()
    assert config.store == default_store_url() == f"sqlite:///{tmp_path}/gearsql/queue.sqlite3"
    store = open_store(config.store)
    assert isinstance(store, SQLiteStore) and store.durable
    assert store.path == tmp_path / "gearsql" / "queue.sqlite3"


def test_memory_must_be_asked_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert not open_store(ServerConfig(store="memory").store).durable
