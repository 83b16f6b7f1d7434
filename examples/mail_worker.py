"""Outgoing mail queue: the worker that sends each ``send_mail`` job over SMTP.

The jobs come from SQL: a trigger on ``outgoing_mail`` calls
``gman_do_background('send_mail', <the row as JSON>)`` (``sql/examples/*/mail.sql``), and the
relay submits the job once the insert has committed, so the application's transaction never
waits for an SMTP server and a rolled-back insert sends nothing. The workload is a JSON object
with ``recipient``, ``subject``, ``body`` and optionally ``sender`` and ``id``::

    python -m aiosmtpd -n -l 127.0.0.1:8025 &       # an SMTP server that prints what it gets
    python examples/mail_worker.py --smtp 127.0.0.1:8025

Delivery is at least once: a worker that dies after the SMTP exchange but before reporting back
gets its job run again. The Message-ID is made from the job's unique id (the relay uses the
outbox row's id), so a second copy carries the same Message-ID as the first.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import smtplib
import sys
import time
from email.message import EmailMessage
from email.utils import make_msgid

from gearsql import Worker, WorkerJob


def message_id(job: WorkerJob, domain: str) -> str:
    """A Message-ID that stays the same when the job is run again (from its unique id)."""
    unique = job.unique.decode("utf-8", "replace")
    if not unique:
        return make_msgid(domain=domain)
    return f"<{re.sub(r'[^A-Za-z0-9.!#$%&*+/=?^_`{|}~-]', '.', unique)}@{domain}>"


def temporary(exc: OSError) -> bool:
    """Whether sending again later may work: no connection, or the server answered 4xx."""
    if isinstance(exc, smtplib.SMTPResponseException):
        return 400 <= exc.smtp_code < 500
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return all(400 <= code < 500 for code, _ in exc.recipients.values())
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return True
    return not isinstance(exc, smtplib.SMTPException)  # refused, reset, timed out


def send_mail(
    job: WorkerJob, smtp_host: str, smtp_port: int, default_sender: str, domain: str, retries: int
) -> str:
    """The worker function: a JSON row in, a message delivered over SMTP. A temporary failure
    (no connection, a 4xx answer) is tried again up to ``retries`` times (1, 2, 4... s apart),
    because a background job that fails is not run again by the job server. Raises KeyError for
    a workload without ``recipient`` and smtplib's errors when the server refuses the message
    or keeps failing."""
    row = json.loads(job.data)
    message = EmailMessage()
    message["From"] = row.get("sender") or default_sender
    message["To"] = row["recipient"]
    message["Subject"] = row.get("subject") or ""
    message["Message-ID"] = message_id(job, domain)
    message.set_content(row.get("body") or "")
    for attempt in range(retries + 1):
        try:
            with smtplib.SMTP(smtp_host, smtp_port, timeout=30) as smtp:
                smtp.send_message(message)
            break
        except OSError as exc:  # smtplib's errors are OSErrors too
            if attempt == retries or not temporary(exc):
                raise
            print(f"send_mail: {exc}; trying again", flush=True)
        time.sleep(2**attempt)
    print(f"sent {message['Message-ID']} to {message['To']}: {message['Subject']}", flush=True)
    return "sent"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (also used by tests/test_docker.py to check docker/compose.yaml)."""
    parser = argparse.ArgumentParser(
        description="Serve send_mail jobs: send each queued row over SMTP until stopped."
    )
    parser.add_argument("--servers", default="127.0.0.1:4730", help="job servers, host:port,...")
    parser.add_argument("--smtp", default="127.0.0.1:8025", help="SMTP server host:port")
    parser.add_argument(
        "--from", dest="sender", default="gearsql@localhost", help="sender when the row has none"
    )
    parser.add_argument("--domain", default="gearsql.example", help="domain of Message-IDs")
    parser.add_argument(
        "--retries",
        type=int,
        default=3,
        help="tries again after a temporary SMTP failure (default 3)",
    )
    parser.add_argument("--concurrency", type=int, default=4, help="jobs run at once")
    args = parser.parse_args(argv)
    host, _, port = args.smtp.rpartition(":")
    if not host or not port.isdigit():
        parser.error(f"--smtp must be host:port, not {args.smtp!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    host, _, port = args.smtp.rpartition(":")
    worker = Worker(args.servers, concurrency=args.concurrency, client_id="mail_worker")
    worker.register(
        "send_mail",
        functools.partial(
            send_mail,
            smtp_host=host,
            smtp_port=int(port),
            default_sender=args.sender,
            domain=args.domain,
            retries=args.retries,
        ),
    )
    print(f"serving send_mail from {args.servers}, sending through {args.smtp}", flush=True)
    worker.run_forever()  # until SIGTERM or Ctrl-C, finishing the jobs in hand
    return 0


if __name__ == "__main__":
    sys.exit(main())
