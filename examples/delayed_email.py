"""Asynchronous queue: e-mail queued as a background job, sent later by a worker.

The client queues the message and returns at once; a worker delivers it to an SMTP server,
now or at a given time (an epoch job, SUBMIT_JOB_EPOCH). With a job server running
(``gearsql server``; its default SQLite store keeps queued mail across a restart)::

    python -m aiosmtpd -n -l 127.0.0.1:8025        # an SMTP server that prints what it gets
    python examples/delayed_email.py worker --smtp 127.0.0.1:8025 &
    python examples/delayed_email.py send --to bob@example.com --subject Hi --body "See you" \\
        --delay 10

``send`` prints the job handle and when the message is due; the worker prints each message it
delivers.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import smtplib
import sys
import time
import uuid
from email.message import EmailMessage

from gearsql import Client, Worker, WorkerJob


def send_email(job: WorkerJob, smtp_host: str, smtp_port: int) -> str:
    """The worker function: a JSON e-mail in, delivered over SMTP."""
    email = json.loads(job.data)
    message = EmailMessage()
    message["From"] = email["from"]
    message["To"] = email["to"]
    message["Subject"] = email["subject"]
    # Delivery is at-least-once: if this worker dies after the SMTP exchange but before it
    # reports back, the server gives the job to another worker. A stable Message-ID (the job's
    # unique id) lets mail systems recognise the second copy.
    message["Message-ID"] = f"<{job.unique.decode()}@gearsql.example>"
    message.set_content(email["body"])
    with smtplib.SMTP(smtp_host, smtp_port, timeout=30) as smtp:
        smtp.send_message(message)
    print(f"sent {message['Message-ID']} to {email['to']}: {email['subject']}", flush=True)
    return "sent"


def queue_email(
    servers: str, sender: str, to: str, subject: str, body: str, delay: float | None
) -> None:
    email = {"from": sender, "to": to, "subject": subject, "body": body}
    # Epoch jobs are due at a whole second: round up so the mail never leaves early.
    run_at = None if delay is None else math.ceil(time.time() + delay)
    with Client(servers) as client:
        # A background job: the server answers JOB_CREATED once it has queued (and, with a
        # durable store, committed) the job; nobody waits for the result. The unique id makes
        # a resubmission of the same mail coalesce with the queued one instead of sending twice.
        job = client.submit_background(
            "send_email", json.dumps(email), unique=uuid.uuid4().hex, run_at=run_at, timeout=10
        )
    when = "now" if run_at is None else time.strftime("%H:%M:%S", time.localtime(run_at))
    print(f"queued {job.handle.decode()} on {job.server}, due {when} (epoch {run_at or 0})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Queue e-mail for a Gearman worker to send.")
    parser.add_argument("--servers", default="127.0.0.1:4730", help="job servers, host:port,...")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("worker", help="send queued e-mail until Ctrl-C")
    serve.add_argument("--smtp", default="127.0.0.1:8025", help="SMTP server host:port")
    send = commands.add_parser("send", help="queue an e-mail")
    send.add_argument("--to", required=True)
    send.add_argument("--from", dest="sender", default="gearsql@localhost")
    send.add_argument("--subject", default="(no subject)")
    send.add_argument("--body", default="", help="text; '-' reads it from stdin")
    send.add_argument("--delay", type=float, help="send this many seconds from now")
    args = parser.parse_args(argv)

    if args.command == "worker":
        host, _, port = args.smtp.rpartition(":")
        worker = Worker(args.servers)
        worker.register(
            "send_email", functools.partial(send_email, smtp_host=host, smtp_port=int(port))
        )
        worker.run_forever()
        return 0
    body = sys.stdin.read() if args.body == "-" else args.body
    queue_email(args.servers, args.sender, args.to, args.subject, body, args.delay)
    return 0


if __name__ == "__main__":
    sys.exit(main())
