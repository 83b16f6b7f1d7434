"""A stand-in for the Twitter API: an HTTP server that prints every POST body it receives.

For trying ``examples/tweet_worker.py`` without a Twitter account::

    python examples/http_sink.py --port 8080
    python examples/tweet_worker.py --api-url http://127.0.0.1:8080/2/tweets

Each POST is answered ``201`` with ``{"data": {"id": N, "text": ...}}`` (the shape of
``POST /2/tweets``) and printed as one line: the path and the body.
"""

from __future__ import annotations

import argparse
import http.server
import itertools
import json
import sys
import threading
from typing import Any

_ids = itertools.count(1)
_ids_lock = threading.Lock()


class SinkHandler(http.server.BaseHTTPRequestHandler):
    """Prints each POST and answers it like the tweet API."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        print(f"POST {self.path} {body.decode('utf-8', 'replace')}", flush=True)
        try:
            text = json.loads(body).get("text")
        except (ValueError, AttributeError):
            text = None
        with _ids_lock:
            tweet_id = next(_ids)
        answer = json.dumps({"data": {"id": str(tweet_id), "text": text}}).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the POST line above is the log


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (also used by tests/test_docker.py to check docker/compose.yaml)."""
    parser = argparse.ArgumentParser(description="Print every HTTP POST body received.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    httpd = http.server.ThreadingHTTPServer((args.host, args.port), SinkHandler)
    print(f"listening on http://{args.host}:{httpd.server_address[1]}", flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
