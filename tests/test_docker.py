"""docker/ stays in step with the code: every command the containers run is a valid invocation
of the real command line, and every file they name exists.

No Docker engine is needed: the compose file and the Dockerfile are parsed, and each gearsql
command is parsed by gearsql's own click commands (options, types, choices, required options)
without running it; each example script's command line by the script's own parser.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import click
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
WORKDIR = "/opt/gearsql"  # the images' working directory: examples/ and sql/ are under it


def compose() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml", reason="pip install -e '.[test]' (PyYAML)")
    loaded = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def service_commands(name: str, service: dict[str, Any]) -> list[list[str]]:
    """The argument vectors a service runs: its entrypoint + command, the lines of a shell
    script given to ``sh -c``, and its health check."""
    target = (
        service.get("build", {}).get("target") if isinstance(service.get("build"), dict) else None
    )
    entrypoint = service.get("entrypoint")
    if entrypoint is None:
        entrypoint = ["gearsql"] if target == "gearsql" else []
    command = service.get("command", [])
    if isinstance(command, str):
        command = shlex.split(command)
    commands: list[list[str]] = []
    if (
        entrypoint
        and entrypoint[0] == "sh"
        and entrypoint[-1].startswith("-")
        and "c" in entrypoint[-1]
    ):
        for script in command:
            for line in script.replace("\\\n", " ").splitlines():
                if line.strip():
                    commands.append(shlex.split(line, comments=True))
    elif entrypoint or command:
        commands.append([*entrypoint, *command])
    test = service.get("healthcheck", {}).get("test")
    if isinstance(test, list) and test and test[0] == "CMD":
        commands.append(test[1:])
    return commands


def all_commands() -> dict[str, list[list[str]]]:
    return {
        name: service_commands(name, service) for name, service in compose()["services"].items()
    }


def parse_gearsql(args: list[str]) -> str:
    """Parse ``gearsql ARGS`` as the real command line would, without running it; returns the
    command path (e.g. ``install postgres``). Raises click.UsageError for a bad invocation."""
    from gearsql.cli import cli

    command: click.Command = cli
    context = click.Context(cli, info_name="gearsql")
    path: list[str] = []
    rest = list(args)
    while isinstance(command, click.Group):
        if command.invoke_without_command and path and (not rest or rest[0].startswith("-")):
            break  # a group that runs itself without a subcommand (`gearsql relay --dsn ...`)
        if not rest:
            raise click.UsageError(f"'gearsql {' '.join(path)}' needs a subcommand")
        name, *rest = rest
        sub = command.get_command(context, name)
        if sub is None:
            raise click.UsageError(f"gearsql has no command {' '.join([*path, name])!r}")
        path.append(name)
        command = sub
        if isinstance(sub, click.Group):
            context = click.Context(sub, info_name=name, parent=context)
    with command.make_context(path[-1], rest, parent=context) as _:
        pass
    return " ".join(path)


def load_example(relative: str) -> Any:
    path = ROOT / relative
    assert path.is_file(), f"{relative} does not exist"
    spec = importlib.util.spec_from_file_location(f"example_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_gearsql_command_in_compose_is_a_valid_invocation() -> None:
    seen = set()
    for service, commands in all_commands().items():
        for argv in commands:
            if argv[0] != "gearsql":
                continue
            try:
                seen.add(parse_gearsql(argv[1:]))
            except click.ClickException as exc:
                pytest.fail(f"service {service}: {shlex.join(argv)}: {exc.format_message()}")
    # The pipeline needs all of these; a rename must not make the check above pass vacuously.
    assert seen == {"server", "status", "relay", "install postgres", "install mysql"}


def test_every_example_command_in_compose_parses_and_names_existing_files() -> None:
    checked = set()
    for service, commands in all_commands().items():
        for argv in commands:
            if argv[0] == "python" and argv[1].startswith("examples/"):
                module = load_example(argv[1])
                try:
                    module.parse_args(argv[2:])
                except SystemExit:
                    pytest.fail(f"service {service}: bad arguments: {shlex.join(argv)}")
                checked.add(argv[1])
            elif argv[0] == "python" and argv[1:3] == ["-m", "aiosmtpd"]:
                from aiosmtpd.main import parseargs

                parseargs(argv[3:])
                checked.add("aiosmtpd")
            for word in argv:  # SQL files the setup job loads (also after `<` redirections)
                if word.startswith("sql/"):
                    assert (ROOT / word).is_file(), f"service {service}: {word} does not exist"
                    checked.add(word)
    assert checked == {
        "examples/tweet_worker.py",
        "examples/mail_worker.py",
        "examples/http_sink.py",
        "aiosmtpd",
        *(
            f"sql/examples/{db}/{name}.sql"
            for db in ("postgres", "mysql")
            for name in ("tweets", "mail")
        ),
    }


def test_compose_services_wire_the_pipeline_together() -> None:
    services = compose()["services"]
    assert {
        "gearsql",
        "postgres",
        "mariadb",
        "setup",
        "relay-postgres",
        "relay-mariadb",
        "tweet-worker",
        "mail-worker",
        "tweet-sink",
        "smtp-sink",
    } <= set(services)
    # MariaDB with the binlog in ROW format, which the relay follows.
    assert {"--log-bin", "--binlog-format=ROW", "--server-id=1"} <= set(
        services["mariadb"]["command"]
    )
    # The job server keeps its SQLite queue on a named volume.
    assert any(volume.endswith(":/var/lib/gearsql") for volume in services["gearsql"]["volumes"])
    # Relays start only once the bridges are installed.
    for relay in ("relay-postgres", "relay-mariadb"):
        assert services[relay]["depends_on"]["setup"] == {
            "condition": "service_completed_successfully"
        }
    for name, service in services.items():
        build = service.get("build")
        if isinstance(build, dict):
            dockerfile = (DOCKER / build["context"] / build["dockerfile"]).resolve()
            assert dockerfile.is_file(), f"service {name}: no {dockerfile}"
            if "target" in build:
                assert re.search(
                    rf"^FROM \S+ AS {build['target']}$", dockerfile.read_text(), re.MULTILINE
                ), f"service {name}: no stage {build['target']}"


def dockerfile_json(instruction: str, stage: str) -> list[str]:
    """The exec-form arguments of ``instruction`` (CMD, ENTRYPOINT) in a Dockerfile stage."""
    text = (DOCKER / "Dockerfile").read_text().replace("\\\n", " ")
    stages = re.split(r"^FROM ", text, flags=re.MULTILINE)
    body = next(part for part in stages if re.match(rf"\S+ AS {stage}\b", part))
    found = re.findall(rf"^{instruction} (\[.*\])\s*$", body, re.MULTILINE)
    assert found, f"no {instruction} in stage {stage}"
    value = json.loads(found[-1])
    assert isinstance(value, list)
    return value


def test_the_server_image_runs_gearsql_and_its_default_command_is_valid() -> None:
    assert dockerfile_json("ENTRYPOINT", "gearsql") == ["gearsql"]
    command = dockerfile_json("CMD", "gearsql")
    assert parse_gearsql(command) == "server"
    assert {"-L", "0.0.0.0", "--allow-insecure-remote"} <= set(command)
    text = (DOCKER / "Dockerfile").read_text()
    assert "FROM python:3.11-slim AS gearsql" in text
    assert "pip install '.[fast,postgres,mysql]'" in text
    assert "postgresql-plpython3-15" in (DOCKER / "postgres.Dockerfile").read_text()


def test_a_bad_invocation_is_caught() -> None:
    """The checker itself: what it must reject."""
    with pytest.raises(click.UsageError):
        parse_gearsql(["server", "--no-such-option"])
    with pytest.raises(click.UsageError):
        parse_gearsql(["serve"])
    with pytest.raises(click.BadParameter):
        parse_gearsql(["server", "--port", "notaport"])
    with pytest.raises(click.UsageError):
        parse_gearsql(["install"])
    assert (
        parse_gearsql(["install", "postgres", "--dsn", "postgresql://x@y/z"]) == "install postgres"
    )


def compose_commands() -> list[list[str]]:
    """The compose implementations installed: the v2 plugin and Compose v1 (docker-compose)."""
    found = []
    docker = shutil.which("docker")
    if (
        docker is not None
        and subprocess.run(
            [docker, "compose", "version"], capture_output=True, timeout=30, check=False
        ).returncode
        == 0
    ):
        found.append([docker, "compose"])
    if shutil.which("docker-compose") is not None:
        found.append(["docker-compose"])
    return found


@pytest.mark.parametrize("files", [["compose.yaml"], ["compose.yaml", "test-build.yaml"]])
def test_docker_compose_accepts_the_file(files: list[str]) -> None:
    """`docker compose config` (v2) and `docker-compose config` (v1), where installed; no
    engine needed."""
    commands = compose_commands()
    if not commands:
        pytest.skip("no docker compose plugin and no docker-compose")
    for command in commands:
        args = [arg for name in files for arg in ("-f", str(DOCKER / name))]
        done = subprocess.run(
            [*command, *args, "config", "--quiet"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, f"{' '.join(command)}: {done.stderr}"


# ------------------------------------------------------------------ docker/test.sh and its files
# docker/test.sh builds and runs everything for real (CI runs it); these keep its inputs in step
# with compose.yaml and the Dockerfiles without an engine.


def shell_array(script: str, name: str) -> list[str]:
    """The words of a one-line bash array assignment ``NAME=(a b c)`` in ``script``."""
    found = re.search(rf"^{name}=\(([^)]*)\)", script, re.MULTILINE)
    assert found, f"no {name}=(...)"
    return found.group(1).split()


def base_images() -> set[str]:
    """The images compose.yaml starts from: the Dockerfiles' FROM lines (not their stages)
    and the services that only name an image."""
    images = set()
    for path in DOCKER.glob("*Dockerfile"):
        text = path.read_text()
        stages = set(re.findall(r"^FROM \S+ AS (\S+)", text, re.MULTILINE))
        images |= {
            image for image in re.findall(r"^FROM (\S+)", text, re.MULTILINE) if image not in stages
        }
    images |= {
        service["image"] for service in compose()["services"].values() if "build" not in service
    }
    return images


def test_test_sh_knows_every_base_image_and_every_built_image() -> None:
    script = (DOCKER / "test.sh").read_text()
    assert (
        set(shell_array(script, "BASE_IMAGES"))
        == base_images()
        == {"python:3.11-slim", "postgres:15", "mariadb:11"}
    )
    built = {service["image"] for service in compose()["services"].values() if "build" in service}
    assert set(shell_array(script, "BUILT_IMAGES")) == built
    # ... and docker/standins/build.sh can make a stand-in for each base image.
    standins = (DOCKER / "standins" / "build.sh").read_text()
    for image in base_images():
        assert f"{image})" in standins, f"no stand-in recipe for {image}"


def test_the_test_build_override_only_changes_how_images_are_built() -> None:
    yaml = pytest.importorskip("yaml", reason="pip install -e '.[test]' (PyYAML)")
    override = yaml.safe_load((DOCKER / "test-build.yaml").read_text())
    services = compose()["services"]
    # Every service that builds an image, and nothing else, gets the offline build settings.
    assert set(override["services"]) == {name for name, s in services.items() if "build" in s}
    for name, service in override["services"].items():
        assert set(service) == {"build"}, name
        assert set(service["build"]) <= {"network", "args"}, name
        assert service["build"]["network"] == "host"
        for arg in service["build"].get("args", {}):
            assert re.search(rf"^ARG {arg}$", (DOCKER / "Dockerfile").read_text(), re.MULTILINE), (
                f"the Dockerfile does not declare ARG {arg}"
            )


def test_ports_are_published_on_loopback_and_can_be_moved() -> None:
    for name, service in compose()["services"].items():
        for port in service.get("ports", []):
            assert re.fullmatch(r"127\.0\.0\.1:\$\{GEARSQL_(?:[A-Z]+_)?PORT:-\d+\}:\d+", port), (
                f"service {name}: {port}"
            )


def test_the_project_name_is_set_where_compose_v1_and_v2_read_it() -> None:
    assert "name" not in compose(), "Compose v1 (docker-compose) rejects a top-level name:"
    assert "COMPOSE_PROJECT_NAME=gearsql" in (DOCKER / ".env").read_text().splitlines()


@pytest.mark.parametrize(
    "script",
    [
        "test.sh",
        "standins/build.sh",
        "standins/postgres-entrypoint.sh",
        "standins/mariadb-entrypoint.sh",
        "standins/mariadb-healthcheck.sh",
    ],
)
def test_the_shell_scripts_parse(script: str) -> None:
    path = DOCKER / script
    shell = "bash" if path.read_text().startswith("#!/usr/bin/env bash") else "sh"
    done = subprocess.run([shell, "-n", str(path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
