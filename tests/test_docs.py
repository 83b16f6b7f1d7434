"""The project's own documents stand alone: they exist, keep their numbered sections and cases,
name tests that exist, and every reference to them in the repository points somewhere real.

The design, protocol and reliability documents were once notes outside the repository, cited by
their old upper-case names; no file may cite those any more.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

#: The documents code and tests may cite, and how each numbers what can be cited.
DOCUMENTS = ("design", "protocol", "reliability", "cli")
#: Section numbers the protocol document keeps from the notes it replaced (7 and 8 are new).
PROTOCOL_SECTIONS = range(1, 12)
#: Every reliability case, 1 to 40 built or partly built, 41 to 52 mostly planned.
CASE_NUMBERS = range(1, 54)

# Built from pieces so that this file does not cite the old names itself.
OLD_NAMES = re.compile(r"\b(?:DESIGN|PROTOCOL)\.md\b|\b" + "RELIA" + r"BILITY\b")

SECTION_HEADING = re.compile(r"^## (\d+)\. ", re.MULTILINE)
CASE_HEADING = re.compile(r"^### Case (\d+)\. ", re.MULTILINE)
STATUS = re.compile(r"\*\*(?:Built|Partly|Not\s+built)\b")
# `docs/protocol.md §4`, `[protocol.md](protocol.md) §1 and §2`, across a comment's line break.
SECTION_CITATION = re.compile(
    r"\b(design|protocol|reliability)\.md`?\)?(?:\s|#)+"
    r"(§\s?\d+(?:\s*(?:,|and|or|to)\s*§\s?\d+)*)"
)
NUMBER_LIST = r"(\d+(?:\s*(?:-|\u2013|,|and|or|to)\s*\d+)*)"
CASE_CITATION = re.compile(r"\breliability\.md`?\)?(?:\s|#)+cases?\s+" + NUMBER_LIST)
OWN_CASE_CITATION = re.compile(r"\bcases?\s+" + NUMBER_LIST, re.IGNORECASE)
NAMED_TEST = re.compile(r"`(tests/[\w/]+\.py)::(test_\w+)`")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def doc(name: str) -> str:
    return (DOCS / f"{name}.md").read_text(encoding="utf-8")


def numbers(text: str) -> list[int]:
    """``"1-8, 11-13"`` or ``"9 and 41"`` as the numbers they name."""
    found: list[int] = []
    for part in re.split(r"\s*(?:,|and|or)\s*", text):
        bounds = [int(n) for n in re.findall(r"\d+", part)]
        if len(bounds) == 2 and re.search("-|\u2013|to", part):
            found.extend(range(bounds[0], bounds[1] + 1))
        else:
            found.extend(bounds)
    return found


def repository_files() -> Iterator[Path]:
    """Every file of the repository that git would track (committed or not), else every file
    outside .git and caches."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".venv"}
        for folder, dirs, files in os.walk(ROOT):
            dirs[:] = [d for d in dirs if d not in skip and not d.endswith(".egg-info")]
            for name in files:
                yield Path(folder) / name
        return
    for name in listed.decode("utf-8", "surrogateescape").split("\0"):
        path = ROOT / name
        if name and path.is_file():
            yield path


def text_files() -> Iterator[tuple[str, str]]:
    """(path relative to the repository, text) of every text file."""
    for path in repository_files():
        raw = path.read_bytes()
        if b"\0" in raw[:8192]:
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            continue
        yield path.relative_to(ROOT).as_posix(), text


def line_of(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


@pytest.mark.parametrize("name", DOCUMENTS)
def test_the_project_documents_exist_in_the_repository(name: str) -> None:
    text = doc(name)
    assert text.startswith("# "), f"docs/{name}.md should start with its title"
    assert len(text) > 2000, f"docs/{name}.md is too short to be the reference it claims to be"


def test_the_protocol_document_keeps_its_section_numbers() -> None:
    sections = [int(n) for n in SECTION_HEADING.findall(doc("protocol"))]
    assert sections == list(PROTOCOL_SECTIONS)


def test_the_design_document_numbers_its_sections_in_order() -> None:
    sections = [int(n) for n in SECTION_HEADING.findall(doc("design"))]
    assert sections == list(range(1, len(sections) + 1)) and len(sections) >= 5


def test_the_reliability_document_has_every_case_once_with_a_status() -> None:
    text = doc("reliability")
    headings = list(CASE_HEADING.finditer(text))
    assert [int(m.group(1)) for m in headings] == list(CASE_NUMBERS)
    ends = [m.start() for m in headings[1:]] + [len(text)]
    for heading, end in zip(headings, ends, strict=True):
        body = text[heading.end() : end]
        assert STATUS.search(body), (
            f"reliability case {heading.group(1)} does not say whether it is Built, Partly "
            "built or Not built"
        )


def test_every_test_the_documents_name_exists() -> None:
    missing = []
    named = 0
    for name in DOCUMENTS:
        for path, function in NAMED_TEST.findall(doc(name)):
            named += 1
            source = ROOT / path
            pattern = re.compile(rf"^\s*(?:async\s+)?def {function}\(", re.MULTILINE)
            if not source.is_file() or not pattern.search(source.read_text(encoding="utf-8")):
                missing.append(f"{path}::{function}")
    assert named > 100, "the reliability document should name the tests that prove each case"
    assert not missing, f"the docs name tests that do not exist: {missing}"


def test_no_file_cites_the_notes_that_the_documents_replaced() -> None:
    stale = [
        f"{path}:{line_of(text, match.start())}: {match.group(0)}"
        for path, text in text_files()
        for match in OLD_NAMES.finditer(text)
    ]
    assert not stale, (
        "these cite the old notes; cite docs/design.md, docs/protocol.md §N or "
        "docs/reliability.md case N instead (and run `python sql/generate.py` if gearsql/ "
        "changed):\n" + "\n".join(stale)
    )


def test_every_cited_section_and_case_exists() -> None:
    sections = {
        name: {int(n) for n in SECTION_HEADING.findall(doc(name))}
        for name in ("design", "protocol", "reliability")
    }
    cases = {int(n) for n in CASE_HEADING.findall(doc("reliability"))}
    broken = []
    cited = 0
    for path, text in text_files():
        for match in SECTION_CITATION.finditer(text):
            for number in numbers(match.group(2)):
                cited += 1
                if number not in sections[match.group(1)]:
                    broken.append(
                        f"{path}:{line_of(text, match.start())}: {match.group(1)}.md §{number}"
                    )
        own = OWN_CASE_CITATION if path == "docs/reliability.md" else CASE_CITATION
        for match in own.finditer(text):
            for number in numbers(match.group(1)):
                cited += 1
                if number not in cases:
                    broken.append(
                        f"{path}:{line_of(text, match.start())}: reliability.md case {number}"
                    )
    assert cited > 10
    assert not broken, "citations of sections or cases that do not exist:\n" + "\n".join(broken)


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


@pytest.mark.parametrize("name", ["README.md", *(f"docs/{d}.md" for d in DOCUMENTS)])
def test_relative_links_and_anchors_resolve(name: str) -> None:
    source = ROOT / name
    text = source.read_text(encoding="utf-8")
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        linked = (source.parent / path).resolve() if path else source
        if not linked.exists():
            broken.append(target)
            continue
        if anchor and linked.suffix == ".md":
            headings = re.findall(r"^#+ (.+)$", linked.read_text(encoding="utf-8"), re.MULTILINE)
            if anchor not in {github_anchor(h) for h in headings}:
                broken.append(target)
    assert not broken, f"{name} links to what does not exist: {broken}"


def test_the_readme_points_to_every_document() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in DOCUMENTS:
        assert f"(docs/{name}.md)" in readme, f"README.md does not link docs/{name}.md"


# ------------------------------------------------------------- the README's first-hour gaps


def readme() -> str:
    return (ROOT / "README.md").read_text(encoding="utf-8")


def readme_section(title: str) -> str:
    """The README's ``### title`` section, up to the next heading of any level."""
    text = readme().split(f"\n### {title}\n", 1)[1]
    return re.split(r"\n#{2,3} ", text, maxsplit=1)[0]


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, re.DOTALL)


def test_the_readme_creates_the_postgres_role_before_granting_to_it() -> None:
    (block,) = code_blocks(readme_section("PostgreSQL"), "sh")
    create = block.find("CREATE ROLE app")
    install = block.find("gearsql install postgres")
    assert 0 <= create < install, "the role `--role app` names must be created first"
    assert "--role app" in block


def test_the_readme_says_how_long_gman_do_waits_and_how_to_change_it_everywhere() -> None:
    from gearsql.cli import cli

    text = readme()
    assert "**Foreground calls wait 60 seconds**" in text
    for database in ("postgres", "mysql"):
        assert f"gearsql install {database} --timeout SECONDS" in text
        install = cli.get_command(click.Context(cli), "install")
        assert isinstance(install, click.Group)
        command = install.get_command(click.Context(install), database)
        assert command is not None
        options = {opt for p in command.params for opt in p.opts}
        assert "--timeout" in options, f"the README promises `gearsql install {database} --timeout`"
    assert "`timeout=` argument of `gearsql.sqlite.connect` or `register`" in text
    assert "GEARSQL_TIMEOUT" in text


def test_the_readme_says_sqlite_background_jobs_wait_for_a_relay(tmp_path: Path) -> None:
    import gearsql.sqlite

    section = readme_section("SQLite")
    assert "no job starts until a relay runs" in section
    assert "gearsql relay --dsn sqlite:///app.db" in section
    assert 'conn.execute("BEGIN IMMEDIATE")' in section
    # As the README shows it: a row in the file's outbox and nothing else, with no job server
    # anywhere (port 1 refuses every connection).
    conn = gearsql.sqlite.connect(str(tmp_path / "app.db"), servers="127.0.0.1:1")
    try:
        with conn:
            conn.execute("BEGIN IMMEDIATE")
            (reply,) = conn.execute("SELECT gman_do_background('reverse', 'hello')").fetchone()
        assert reply == "outbox:1"
        assert conn.execute("SELECT function, workload FROM gman_outbox").fetchall() == [
            (b"reverse", b"hello")
        ]
    finally:
        conn.close()


@pytest.mark.mysql
def test_the_readme_mariadb_trigger_example_runs_as_written() -> None:
    from databases import mysql_database

    (block,) = [
        b for b in code_blocks(readme_section("MySQL and MariaDB"), "sql") if "blog_entries" in b
    ]
    assert block.index("CREATE TABLE blog_entries") < block.index("CREATE TRIGGER tweet_blog")
    statements = [
        statement
        for statement in (
            "\n".join(line for line in part.splitlines() if not line.startswith("--")).strip()
            for part in block.split(";\n")
        )
        if statement
    ]
    with mysql_database() as dsn:
        import mysql.connector

        from gearsql.bridges.mysql import connect_config

        installed = subprocess.run(
            [sys.executable, "-m", "gearsql", "install", "mysql", "--dsn", dsn],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert installed.returncode == 0, installed.stderr
        conn = mysql.connector.connect(**connect_config(dsn))
        try:
            cursor = conn.cursor()
            for statement in statements:
                cursor.execute(statement)
                if cursor.with_rows:
                    cursor.fetchall()
            cursor.execute("SELECT function, workload FROM gman_outbox")
            rows = [
                tuple(bytes(v).decode() if isinstance(v, (bytes, bytearray)) else v for v in row)
                for row in cursor.fetchall()
            ]
            cursor.close()
        finally:
            conn.close()
    assert rows == [("send_tweet", "Hello - https://example.org/hello")]
