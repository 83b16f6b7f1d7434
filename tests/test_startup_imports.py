"""What a running ``gearsql server`` and a bare ``import gearsql`` load: each module is memory an
idle server holds for good (bench/README.md, the idle RSS), so what only some uses need is
imported when it is used. The client library, the HTTP protocol with the status page, and the
SQLite store with sqlite3 were about 3 MiB of a 31 MiB idle ``gearsql server --store memory``.
(tests/test_cli_docs.py checks the same of the command families.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import free_port

#: Prints the modules a real `gearsql server ARGS...` has loaded once it accepts connections on
#: PORT, then stops it with SIGTERM as a service manager would (a fresh interpreter: this one
#: has them all).
SERVER_SCRIPT = """
import os, signal, socket, sys, threading, time
from gearsql.cli import main

port = int(sys.argv[1])

def report_once_listening():
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    print(" ".join(sorted(list(sys.modules))), flush=True)
    os.kill(os.getpid(), signal.SIGTERM)

threading.Thread(target=report_once_listening, daemon=True).start()
sys.argv = ["gearsql", "server", "--port", str(port), "--log-file", "stderr", *sys.argv[2:]]
main()
"""

#: Loaded by none of a default server's work (the package's client, worker and admin client;
#: the HTTP port's modules; the SQLite store).
NOT_FOR_THE_SERVER = {
    "gearsql.client",
    "gearsql.worker",
    "gearsql.adminclient",
    "gearsql._clientlink",
    "gearsql.http",
    "gearsql.web",
    "gearsql.stores.sqlite",
    "sqlite3",
}


def _server_modules(*args: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", SERVER_SCRIPT, str(free_port()), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


def test_a_server_with_the_memory_store_loads_no_client_http_or_sqlite() -> None:
    loaded = _server_modules("--store", "memory")
    assert {"gearsql.server", "gearsql.core", "gearsql.stores.memory"} <= loaded
    assert not NOT_FOR_THE_SERVER & loaded


def test_the_http_port_and_the_sqlite_store_load_their_modules_when_asked_for(
    tmp_path: Path,
) -> None:
    loaded = _server_modules(
        "--store", f"sqlite:///{tmp_path}/queue.sqlite3", "--http-port", str(free_port())
    )
    assert {"gearsql.http", "gearsql.web", "gearsql.stores.sqlite", "sqlite3"} <= loaded
    assert not {"gearsql.client", "gearsql.worker"} & loaded


def test_import_gearsql_loads_a_public_name_s_module_on_first_use() -> None:
    script = (
        "import sys\n"
        "import gearsql\n"
        "before = sorted(m for m in sys.modules if m.startswith('gearsql'))\n"
        "from gearsql import Worker\n"
        "print(' '.join(before))\n"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('gearsql'))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    before, after = (set(line.split()) for line in done.stdout.splitlines())
    assert before == {"gearsql"}
    assert {"gearsql.worker", "gearsql.protocol"} <= after
    assert "gearsql.client" not in after


def test_every_public_name_of_the_package_resolves_to_its_module_s_object() -> None:
    import gearsql
    from gearsql import client, errors, protocol, worker

    modules = {module.__name__: module for module in (client, errors, protocol, worker)}
    assert set(gearsql.__all__) == {*gearsql._EXPORTS, "__version__"}
    for name, module in gearsql._EXPORTS.items():
        assert getattr(gearsql, name) is getattr(modules[module], name)
    assert set(gearsql.__all__) <= set(dir(gearsql))
    namespace: dict[str, object] = {}
    exec("from gearsql import *", namespace)
    assert namespace["Client"] is client.Client and namespace["pack"] is protocol.pack
    with pytest.raises(AttributeError, match="NoSuchName"):
        gearsql.NoSuchName  # type: ignore[attr-defined]  # noqa: B018
