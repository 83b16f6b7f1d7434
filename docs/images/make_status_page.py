"""Makes docs/images/status-page.png: a real ``gearsql server`` with a relay, workers, queued,
scheduled and dead jobs, shown by headless Chromium (the test suite's tests/browser.py).

    python docs/images/make_status_page.py   # needs chromium; takes about half a minute
"""

from __future__ import annotations

import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from browser import Browser  # noqa: E402

from gearsql import Client, Worker, WorkerJob  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="gearsql-shot-"))
    outbox = work / "shop.db"
    import gearsql.sqlite

    conn = gearsql.sqlite.connect(str(outbox), None, isolation_level=None)
    conn.execute("SELECT gman_do_background('send_invoice', 'creates the outbox')")
    conn.execute("DELETE FROM gman_outbox")
    port, http_port = free_port(), free_port()
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "gearsql", "server", "--port", str(port)),
            *("--store", "memory", "--http-port", str(http_port)),
            *("--relay", f"sqlite:///{outbox}", "--retry-backoff", "0.1:0.1"),
            *("--log-file", str(work / "server.log")),
        ]
    )
    address = f"127.0.0.1:{port}"
    try:
        time.sleep(1.5)
        with Client(address) as client:
            admin = socket.create_connection(("127.0.0.1", port))
            admin.sendall(
                b"retries charge_card 2\r\ncreate function send_invoice\r\n"
                b"maxqueue send_invoice 10\r\n"
                b"schedule add nightly-report build_report 0 3 * * *\r\n"
            )

            def resize(job: WorkerJob) -> bytes:
                time.sleep(random.uniform(0.3, 1.2))
                return b"ok"

            def charge(job: WorkerJob) -> bytes:
                time.sleep(0.2)
                if job.data.endswith(b"7"):
                    raise ValueError("card declined: insufficient funds")
                return b"ok"

            workers = []
            for name, handler, count in (("resize_image", resize, 2), ("charge_card", charge, 1)):
                for _ in range(count):
                    worker = Worker(address, concurrency=2)
                    worker.register(name, handler)
                    threading.Thread(
                        target=worker.run_forever, kwargs={"handle_signals": False}, daemon=True
                    ).start()
                    workers.append(worker)
            for i in range(60):
                client.submit_background("resize_image", f"img-{i}.jpg", unique=f"img-{i}")
                client.submit_background("charge_card", f"payment-{i}", unique=f"pay-{i}")
            for i in range(12):
                client.submit_background(
                    "resize_image", f"thumb-{i}", unique=f"thumb-{i}", priority="high"
                )
            # The invoices' queue holds 10: the relay keeps the rest in the outbox.
            for i in range(40):
                conn.execute("SELECT gman_do_background('send_invoice', ?)", (f"order-{i}",))
            conn.close()
            client.submit_background(
                "send_newsletter", "weekly", unique="newsletter-2026-w49", run_at=time.time() + 7200
            )
            browser = Browser("chromium", 1280, 1200)
            try:
                browser.open(f"http://127.0.0.1:{http_port}/")
                browser.wait_for("document.body.dataset.state === 'live'")
                for i in range(60, 90):
                    client.submit_background("resize_image", f"img-{i}.jpg", unique=f"img-{i}")
                    time.sleep(0.1)
                # The search: uniques containing img-8.
                browser.evaluate(
                    "const box = document.querySelector('input[name=unique]');"
                    "box.value = 'img-8'; box.dispatchEvent(new Event('input'))"
                )
                time.sleep(4)
                browser.screenshot(ROOT / "docs" / "images" / "status-page.png")
            finally:
                browser.close()
                for worker in workers:
                    worker.stop()
                admin.close()
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
