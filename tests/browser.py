"""A real headless Chromium (Debian's ``chromium``) driven through the DevTools protocol over
``--remote-debugging-pipe``: commands are JSON messages ended by a NUL byte, written to the
browser's file descriptor 3 and read from its descriptor 4. No WebSocket library needed."""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any


class BrowserError(RuntimeError):
    pass


class ScriptError(BrowserError):
    """The page's JavaScript threw."""


class Browser:
    """One headless Chromium with a page; :meth:`open` loads a URL in it."""

    def __init__(self, chromium: str, width: int = 1280, height: int = 960) -> None:
        self.profile = tempfile.TemporaryDirectory(prefix="gearsql-chromium-")
        to_browser, self._write = os.pipe()
        self._read, from_browser = os.pipe()
        # Out of the way of 3 and 4, which the child's dup2 calls below overwrite.
        to_browser_high = fcntl.fcntl(to_browser, fcntl.F_DUPFD, 10)
        from_browser_high = fcntl.fcntl(from_browser, fcntl.F_DUPFD, 10)
        os.close(to_browser)
        os.close(from_browser)

        def descriptors() -> None:
            os.dup2(to_browser_high, 3)
            os.dup2(from_browser_high, 4)

        self.stderr = open(Path(self.profile.name) / "stderr.log", "wb")
        self.proc = subprocess.Popen(
            [
                chromium,
                "--headless",
                "--no-sandbox",  # root in CI containers
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                f"--user-data-dir={self.profile.name}",
                f"--window-size={width},{height}",
                "--hide-scrollbars",
                "--remote-debugging-pipe",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self.stderr,
            pass_fds=(3, 4),
            preexec_fn=descriptors,
        )
        os.close(to_browser_high)
        os.close(from_browser_high)
        self._buffer = b""
        self._next_id = 0
        self.session: str | None = None

    def command(self, method: str, timeout: float = 60.0, **params: Any) -> dict[str, Any]:
        """Send one command (to the page once :meth:`open` attached to it) and wait for its
        answer; events in between are dropped."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if self.session is not None and not method.startswith("Target."):
            message["sessionId"] = self.session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self._buffer:
                raw, _, self._buffer = self._buffer.partition(b"\0")
                answer = json.loads(raw)
                if answer.get("id") == self._next_id:
                    if "error" in answer:
                        raise BrowserError(f"{method}: {answer['error']}")
                    return dict(answer["result"])
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"{method}: no answer within {timeout} s")
            ready, _, _ = select.select([self._read], [], [], left)
            if ready:
                chunk = os.read(self._read, 1 << 20)
                if not chunk:
                    raise BrowserError(f"chromium exited: {self.log()}")
                self._buffer += chunk

    def open(self, url: str) -> None:
        target = self.command("Target.createTarget", url=url)["targetId"]
        self.session = self.command("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (JSON-serialisable values)."""
        result = self.command("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise ScriptError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60.0) -> Any:
        """Poll a JavaScript expression until it is truthy (one that throws, e.g. before the
        page has a body, counts as false); its value."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = self.evaluate(expression)
            except ScriptError as exc:
                value, last = None, str(exc)
            else:
                last = repr(value)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"{expression} still false after {timeout} s: {last}")
            time.sleep(0.1)

    def screenshot(self, path: Path) -> None:
        data = self.command("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def log(self) -> str:
        self.stderr.flush()
        return (Path(self.profile.name) / "stderr.log").read_text(errors="replace")[-3000:]

    def close(self) -> None:
        try:
            self.proc.terminate()
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._write)
        os.close(self._read)
        self.stderr.close()
        self.profile.cleanup()
