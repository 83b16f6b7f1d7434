"""Blog to tweet: the worker that posts each ``send_tweet`` job's text as a status update.

The jobs come from SQL: a trigger on ``blog_entries`` calls
``gman_do_background('send_tweet', title || ' - ' || url)`` (``sql/examples/*/tweets.sql``), and
the relay submits the job once the insert has committed. This worker POSTs the text as
``{"text": ...}`` to an HTTP endpoint shaped like the Twitter API v2 ``POST /2/tweets``; point
``--api-url`` at the real one (with ``--token``) or, to try it, at the stand-in in
``examples/http_sink.py``::

    python examples/http_sink.py --port 8080 &
    python examples/tweet_worker.py --api-url http://127.0.0.1:8080/2/tweets

A network error or an answer 429 or 5xx is tried again (``--retries``); a job fails
(WORK_EXCEPTION, which the job server does not retry) when the endpoint refuses the text or keeps
failing. Delivery is at least once: a worker that dies after posting but before reporting back
gets its job run again, so the endpoint may see a status twice.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
import urllib.error
import urllib.request

from gearsql import Worker, WorkerJob

DEFAULT_API_URL = "http://127.0.0.1:8080/2/tweets"


def send_tweet(
    job: WorkerJob, api_url: str, token: str | None, timeout: float, retries: int
) -> str:
    """The worker function: the job's text (UTF-8) posted as ``{"text": ...}``; returns the
    endpoint's answer. A network error, 429 or 5xx is tried again up to ``retries`` times (1, 2,
    4... s apart), because a background job that fails is not run again by the job server.
    Raises urllib's errors when the endpoint refuses the text or keeps failing."""
    text = job.text
    request = urllib.request.Request(
        api_url,
        data=json.dumps({"text": text}).encode("utf-8"),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    for attempt in range(retries + 1):
        try:
            # urlopen raises HTTPError for an answer outside 2xx/3xx.
            with urllib.request.urlopen(request, timeout=timeout) as response:
                answer: bytes = response.read()
            break
        except urllib.error.HTTPError as exc:
            if attempt == retries or not (exc.code == 429 or exc.code >= 500):
                raise
            print(f"send_tweet: {exc}; trying again", flush=True)
        except OSError as exc:  # URLError, a refused connection, a timeout
            if attempt == retries:
                raise
            print(f"send_tweet: {exc}; trying again", flush=True)
        time.sleep(2**attempt)
    print(f"tweeted: {text}", flush=True)
    return answer.decode("utf-8", "replace")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (also used by tests/test_docker.py to check docker/compose.yaml)."""
    parser = argparse.ArgumentParser(
        description="Serve send_tweet jobs: POST each job's text to a tweet API until stopped."
    )
    parser.add_argument("--servers", default="127.0.0.1:4730", help="job servers, host:port,...")
    parser.add_argument(
        "--api-url",
        default=os.environ.get("TWEET_API_URL", DEFAULT_API_URL),
        help=f'endpoint to POST {{"text": ...}} to ($TWEET_API_URL; default {DEFAULT_API_URL})',
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("TWEET_API_TOKEN"),
        help="sent as 'Authorization: Bearer TOKEN' ($TWEET_API_TOKEN)",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="HTTP timeout in seconds")
    parser.add_argument(
        "--retries",
        type=int,
        default=3,
        help="tries again after a network error, 429 or 5xx (default 3)",
    )
    parser.add_argument("--concurrency", type=int, default=4, help="jobs run at once")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    worker = Worker(args.servers, concurrency=args.concurrency, client_id="tweet_worker")
    worker.register(
        "send_tweet",
        functools.partial(
            send_tweet,
            api_url=args.api_url,
            token=args.token,
            timeout=args.timeout,
            retries=args.retries,
        ),
    )
    print(f"serving send_tweet from {args.servers}, posting to {args.api_url}", flush=True)
    worker.run_forever()  # until SIGTERM or Ctrl-C, finishing the jobs in hand
    return 0


if __name__ == "__main__":
    sys.exit(main())
