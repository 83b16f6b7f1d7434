"""Pipeline: a small search engine. Insert URLs, drop duplicates, fetch, index, search.

With a job server running (``gearsql server``), one command crawls with fetcher and indexer
worker threads started in this process, and another searches the index::

    python examples/search_engine.py crawl https://example.com/ https://example.org/
    python examples/search_engine.py search "example domain"

The stages:

1. ``crawl`` submits one ``fetch_page`` job per URL with the URL as the unique id, so the server
   coalesces duplicates in flight: one job, and every submitter gets its result.
2. ``fetch_page`` (many fetchers) drops URLs the index already has, downloads the page and
   extracts its title and text, then hands them on as a ``store_page`` job.
3. ``store_page`` (exactly one indexer: SQLite wants a single writer) stores the page in an FTS5
   table, unless it is there already: delivery is at-least-once, so stages are idempotent.

``search`` then reads the SQLite database directly. To run the stages as separate processes::

    python examples/search_engine.py fetcher &        # as many as you like
    python examples/search_engine.py indexer &        # exactly one
    python examples/search_engine.py crawl --workers 0 URL...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import sqlite3
import sys
import threading
import urllib.request
from collections.abc import Iterator
from html.parser import HTMLParser

from gearsql import AsyncClient, Client, Worker, WorkerJob


def prepare_index(path: str) -> None:
    """Create the index once, before any worker thread opens it.

    Switching to WAL (readers never block the writer) and creating the table both write; done
    from several threads at once on a new file, SQLite may answer "database is locked" without
    waiting, so ``main`` does it first, in one place.
    """
    with contextlib.closing(sqlite3.connect(path, timeout=30)) as db:
        db.execute("PRAGMA journal_mode=WAL")  # kept in the file: later connections inherit it
        db.execute(
            "CREATE VIRTUAL TABLE IF NOT EXISTS pages USING fts5(url UNINDEXED, title, body)"
        )


def open_index(path: str) -> sqlite3.Connection:
    return sqlite3.connect(path, timeout=30)


def is_indexed(db_path: str, url: str) -> bool:
    with contextlib.closing(open_index(db_path)) as db:
        return db.execute("SELECT 1 FROM pages WHERE url = ?", (url,)).fetchone() is not None


class PageText(HTMLParser):
    """The title and the visible text of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.title = ""
        self.text: list[str] = []
        self._open = ""

    def handle_starttag(self, tag: str, attrs: object) -> None:
        self._open = tag

    def handle_endtag(self, tag: str) -> None:
        self._open = ""

    def handle_data(self, data: str) -> None:
        if self._open == "title":
            self.title += data.strip()
        elif self._open not in ("script", "style") and data.strip():
            self.text.append(data.strip())


# -- the workers ---------------------------------------------------------------------------


def fetch_page(job: WorkerJob, db_path: str, client: Client) -> str:
    url = job.text
    # Coalescing only catches duplicates while the first job runs; the index catches the rest.
    if is_indexed(db_path, url):
        return f"skipped {url}: already indexed"
    with urllib.request.urlopen(url, timeout=30) as response:
        charset = response.headers.get_content_charset() or "utf-8"
        page = PageText()
        page.feed(response.read().decode(charset, "replace"))
    # The next stage is another job: a worker can be a client too. Waiting for it (a
    # foreground job) means this URL's job ends only once the page is searchable.
    stored = {"url": url, "title": page.title or url, "body": " ".join(page.text)}
    return client.submit("store_page", json.dumps(stored), timeout=60).decode()


def store_page(job: WorkerJob, db_path: str) -> str:
    page = json.loads(job.data)
    with contextlib.closing(open_index(db_path)) as db, db:  # one transaction
        if db.execute("SELECT 1 FROM pages WHERE url = ?", (page["url"],)).fetchone():
            return f"skipped {page['url']}: already indexed"
        db.execute("INSERT INTO pages (url, title, body) VALUES (:url, :title, :body)", page)
    return f"indexed {page['url']}: {page['title']}"


def make_fetcher(servers: str, db_path: str, client: Client) -> Worker:
    worker = Worker(servers, concurrency=4)  # downloads wait on the network: run a few at once
    worker.register("fetch_page", functools.partial(fetch_page, db_path=db_path, client=client))
    return worker


def make_indexer(servers: str, db_path: str) -> Worker:
    worker = Worker(servers)  # concurrency 1: one writer
    worker.register("store_page", functools.partial(store_page, db_path=db_path))
    return worker


@contextlib.contextmanager
def worker_threads(servers: str, fetchers: int, db_path: str) -> Iterator[None]:
    """Run ``fetchers`` fetchers and one indexer in this process (none when ``fetchers`` is 0)."""
    with Client(servers) as client:
        workers = [make_fetcher(servers, db_path, client) for _ in range(fetchers)]
        if fetchers:
            workers.append(make_indexer(servers, db_path))
        threads = [threading.Thread(target=w.run_forever, daemon=True) for w in workers]
        for thread in threads:
            thread.start()
        try:
            yield
        finally:
            for worker in workers:
                worker.stop()
            for thread in threads:
                thread.join(timeout=10)


# -- the clients ---------------------------------------------------------------------------


async def crawl(servers: str, urls: list[str], timeout: float) -> int:
    failures = 0
    async with AsyncClient(servers) as client:
        tasks = [client.submit_task("fetch_page", url, unique=url) for url in urls]
        # as_completed: report each page as soon as it is done, whatever the order.
        async for task in client.as_completed(tasks, timeout=timeout):
            try:
                print(task.result().decode(), flush=True)
            except Exception as exc:  # JobException carries the worker's error text
                failures += 1
                print(f"failed {task.data.decode()}: {exc}", file=sys.stderr)
    return 1 if failures else 0


def search(db_path: str, query: str, limit: int) -> None:
    with contextlib.closing(open_index(db_path)) as db:
        rows = db.execute(
            "SELECT url, title FROM pages WHERE pages MATCH ? ORDER BY rank LIMIT ?",
            (query, limit),
        )
        for url, title in rows:
            print(f"{url}\t{title}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Crawl and search pages with Gearman jobs.")
    parser.add_argument("--servers", default="127.0.0.1:4730", help="job servers, host:port,...")
    parser.add_argument("--db", default="search.db", help="the SQLite index file")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("fetcher", help="serve fetch_page until Ctrl-C")
    commands.add_parser("indexer", help="serve store_page until Ctrl-C (run exactly one)")
    crawler = commands.add_parser("crawl", help="fetch and index the given URLs")
    crawler.add_argument("urls", nargs="+")
    crawler.add_argument("--workers", type=int, default=2, help="fetcher threads to start here")
    crawler.add_argument("--timeout", type=float, default=120.0, help="seconds for the crawl")
    searcher = commands.add_parser("search", help="print url<TAB>title of matching pages")
    searcher.add_argument("query", help='an FTS5 query: words, "a phrase", a OR b, ...')
    searcher.add_argument("--limit", type=int, default=10)
    args = parser.parse_args(argv)

    prepare_index(args.db)
    if args.command == "fetcher":
        with Client(args.servers) as client:
            make_fetcher(args.servers, args.db, client).run_forever()
    elif args.command == "indexer":
        make_indexer(args.servers, args.db).run_forever()
    elif args.command == "crawl":
        with worker_threads(args.servers, args.workers, args.db):
            return asyncio.run(crawl(args.servers, args.urls, args.timeout))
    else:
        search(args.db, args.query, args.limit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
