"""Debian's `gearman` and `gearadmin` command-line tools, run as subprocesses against one server."""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import ServerProcess

TOOL_TIMEOUT = 10.0


class GearmanCli:
    """The `gearman` CLI pointed at one server; remembers its workers so they can be reaped."""

    def __init__(self, executable: str, server: ServerProcess, workdir: Path):
        self.base = [executable, "-h", server.host, "-p", str(server.port)]
        self.workdir = workdir
        self.workers: list[tuple[subprocess.Popen[bytes], Path]] = []

    def client(self, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
        """Run `gearman ARGS` in client mode to completion (TimeoutExpired if it hangs)."""
        return subprocess.run(
            [*self.base, *args], input=stdin, capture_output=True, timeout=TOOL_TIMEOUT
        )

    def start_worker(self, function: str, *command: str, count: int) -> subprocess.Popen[bytes]:
        """Start `gearman -w -f FUNCTION -c COUNT -- COMMAND...`, which pipes each job through
        COMMAND and exits after COUNT jobs."""
        log = self.workdir / f"gearman-worker-{len(self.workers)}.log"
        with log.open("wb") as output:
            proc = subprocess.Popen(
                [*self.base, "-w", "-f", function, "-c", str(count), "--", *command],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        self.workers.append((proc, log))
        return proc

    def wait_for_worker(self, proc: subprocess.Popen[bytes]) -> None:
        """Wait for a worker to finish its COUNT jobs and exit cleanly."""
        log = next(path for worker, path in self.workers if worker is proc)
        try:
            code = proc.wait(TOOL_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"gearman worker still running after {TOOL_TIMEOUT} s; output: {log.read_bytes()!r}"
            ) from None
        assert code == 0, f"gearman worker exited {code}; output: {log.read_bytes()!r}"

    def kill_workers(self) -> None:
        for proc, _ in self.workers:
            if proc.poll() is None:
                proc.kill()
            proc.wait(TOOL_TIMEOUT)


class Gearadmin:
    """The `gearadmin` CLI pointed at one server."""

    def __init__(self, executable: str, server: ServerProcess):
        self.base = [executable, "-h", server.host, "-p", str(server.port)]

    def __call__(self, *flags: str) -> subprocess.CompletedProcess[str]:
        """Run `gearadmin FLAGS`; gearadmin exits 0 even for server errors, so check the output."""
        return subprocess.run(
            [*self.base, *flags],
            capture_output=True,
            text=True,
            timeout=TOOL_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
