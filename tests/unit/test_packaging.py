"""Static checks of what ships: Dockerfile, docker-compose.yml, example configs, the lock, the CLI.

`make image-test` builds and runs the image and the compose stack; here they are validated as files.
PyYAML is not a dependency: docker-compose.yml is written in a small YAML subset (block
mappings, scalar lists, JSON flow lists) that `load_compose` reads and rejects anything beyond.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from connector import __version__
from connector.config.settings import (
    ClusterSettings,
    KafkaSettings,
    LogSettings,
    MetricsSettings,
    PlatformSettings,
    Settings,
    SpoolSettings,
    load_settings,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "connector.example.toml"
COMPOSE_CONNECTOR = REPO / "config" / "compose" / "connector.toml"
DOCUMENTED_SERVICES = {"kafka", "simulator", "connector", "prometheus", "grafana"}


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, rest = line.partition(" ")
            pairs.append((instruction.upper(), rest.strip()))
    return pairs


def instructions(name: str) -> list[str]:
    return [args for instruction, args in dockerfile() if instruction == name]


def test_dockerfile_is_multi_stage_and_runs_as_non_root() -> None:
    stages = instructions("FROM")
    assert len(stages) >= 2
    assert all("${PYTHON_IMAGE}" in s for s in stages)
    assert "python:3.11-slim" in "".join(instructions("ARG"))
    assert any("--from=build" in c for c in instructions("COPY"))
    user = instructions("USER")
    assert user and user[-1].split(":")[0] not in {"0", "root"}


def test_dockerfile_declares_spool_volume_healthcheck_and_entrypoint() -> None:
    assert json.loads(instructions("VOLUME")[-1]) == ["/var/lib/rpt-connector"]
    healthcheck = instructions("HEALTHCHECK")[-1]
    assert "urllib.request.urlopen" in healthcheck
    assert "HEALTHCHECK_URL=http://127.0.0.1:9108/healthz" in " ".join(instructions("ENV"))
    assert json.loads(instructions("ENTRYPOINT")[-1]) == ["rpt-connector"]
    assert json.loads(instructions("CMD")[-1]) == [
        "run", "--config", "/etc/rpt-connector/connector.toml",
    ]  # fmt: skip


def test_dockerfile_labels_the_package_version() -> None:
    args = dict(a.partition("=")[::2] for a in instructions("ARG"))
    assert args["VERSION"] == __version__
    labels = " ".join(instructions("LABEL"))
    assert 'org.opencontainers.image.version="${VERSION}"' in labels
    assert 'org.opencontainers.image.source="${SOURCE}"' in labels


def test_dockerfile_installs_the_wheel_against_the_lock() -> None:
    installs = [r for r in instructions("RUN") if "pip install" in r and "/tmp/wheels/" in r]
    assert installs and "-c /tmp/constraints.txt" in installs[0]
    assert "pip wheel" in " ".join(instructions("RUN"))


def stages() -> dict[str, list[tuple[str, str]]]:
    """The Dockerfile's instructions per stage (FROM ... AS name; the last is "runtime")."""
    named: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for instruction, args in dockerfile():
        if instruction == "FROM":
            current = named.setdefault(args.split()[-1], [])
        current.append((instruction, args))
    return named


def _context_rules() -> list[tuple[re.Pattern[str], bool]]:
    """.dockerignore as (pattern, excludes) in order; the last rule matching a path wins."""
    rules = []
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negated = line.startswith("!")
            glob = line.lstrip("!").strip("/")
            regex = "".join(
                "(.*/)?" if part == "**/" else "[^/]*" if part == "*" else re.escape(part)
                for part in re.split(r"(\*\*/|\*)", glob)
            )
            rules.append((re.compile(regex), not negated))
    return rules


def in_context(path: str, rules: list[tuple[re.Pattern[str], bool]]) -> bool:
    """Docker's rule: a pattern matches the path or one of its parent folders."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    kept = True
    for pattern, excludes in rules:
        if any(pattern.fullmatch(prefix) for prefix in prefixes):
            kept = not excludes
    return kept


def copy_sources() -> list[str]:
    sources = []
    for copy in instructions("COPY"):
        if not copy.startswith("--from"):
            sources += [s.rstrip("/") for s in shlex.split(copy)[:-1]]
    return sources


def test_dockerfile_copies_only_files_the_build_context_keeps() -> None:
    rules = _context_rules()
    for source in copy_sources():
        assert (REPO / source).exists(), f"COPY {source}: no such file"
        assert in_context(source, rules), f"COPY {source}: left out by .dockerignore"


def test_the_build_context_holds_only_what_the_dockerfile_copies() -> None:
    """No build output (native/target), virtualenv, jars or tests reach the docker daemon."""
    rules, sources = _context_rules(), copy_sources()
    for outside in ("native/target/release/librpt_native.so", ".venv/bin/python", ".git/HEAD",
                    ".cache/kafka/lib/kafka.jar", "tests/unit/x.py", "connector/__pycache__/x.pyc",
                    "docs/dashboard/summary.json", "Dockerfile"):  # fmt: skip
        assert not in_context(outside, rules), outside
    for folder, dirs, files in os.walk(REPO):
        rel = Path(folder).relative_to(REPO).as_posix()
        dirs[:] = [d for d in dirs if d not in {".git", ".venv", ".cache", "target"}]
        for name in files:
            path = name if rel == "." else f"{rel}/{name}"
            if in_context(path, rules):
                assert any(path == s or path.startswith(s + "/") for s in sources), path


def test_the_image_builds_rpt_native_and_keeps_the_toolchain_out() -> None:
    named = stages()
    native, runtime = named["native"], named["runtime"]
    native_runs = " ".join(args for instruction, args in native if instruction == "RUN")
    assert "rustc-web" in native_runs and "cargo fetch --locked" in native_runs
    assert "pip wheel" in native_runs and "/wheels" in native_runs
    runtime_text = " ".join(args for _instruction, args in runtime)
    assert "--from=native /wheels" in runtime_text
    assert not re.search(r"rustc|cargo|apt-get install", runtime_text)


def test_dockerfile_layers_keep_rebuilds_short() -> None:
    """connector/ changes do not recompile Rust; native/src changes do not reinstall deps."""
    named = stages()
    native_copies = [a for i, a in named["native"] if i == "COPY"]
    assert not any("connector" in copy for copy in native_copies)
    assert native_copies[-1].startswith("native/src")  # the crates are fetched before it
    order = [a for i, a in named["runtime"] if i in {"COPY", "RUN"}]
    deps = next(n for n, a in enumerate(order) if "-r /tmp/requirements.txt" in a)
    native = next(n for n, a in enumerate(order) if a.startswith("--from=native"))
    connector = next(n for n, a in enumerate(order) if a.startswith("--from=build /wheels"))
    assert deps < native < connector


def test_lock_pins_every_declared_dependency() -> None:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        name, sep, version = line.partition("==")
        assert sep and version, f"not an exact pin: {line!r}"
        pins[_normal(name)] = version
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = [*project["dependencies"], *project["optional-dependencies"]["test"]]
    for requirement in declared:
        name = _normal(re.split(r"[\[<>=!~ ]", requirement, maxsplit=1)[0])
        assert name in pins, f"{name} is not pinned in constraints.txt"


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# ---- docker-compose.yml


def load_compose(text: str) -> dict:
    """Read the YAML subset docker-compose.yml uses; anything else fails loudly."""
    root: dict = {}
    stack: list[tuple[int, dict | list]] = [(-1, root)]
    lines = _logical_lines(text)
    for index, (indent, content) in enumerate(lines):
        while indent <= stack[-1][0]:
            stack.pop()
        parent = stack[-1][1]
        if content.startswith("- "):
            assert isinstance(parent, list), f"unexpected list item: {content!r}"
            assert not re.match(r"[\w.-]+:( |$)", content[2:]), f"a mapping in a list: {content}"
            parent.append(_scalar(content[2:]))
            continue
        assert isinstance(parent, dict), f"unexpected mapping in a list: {content!r}"
        key, sep, value = content.partition(":")
        assert sep and re.fullmatch(r"[A-Za-z0-9_.-]+", key), f"not a key: {content!r}"
        if value.strip():
            parent[key] = _scalar(value.strip())
            continue
        following = lines[index + 1] if index + 1 < len(lines) else (0, "")
        child: dict | list = [] if following[1].startswith("- ") else {}
        parent[key] = child
        stack.append((indent, child))
    return root


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """(indent, content) of non-comment lines, a flow list spread over lines joined."""
    out: list[tuple[int, str]] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if pending:
            pending += " " + stripped
        else:
            indent, pending = len(raw) - len(raw.lstrip(" ")), stripped
        if pending.count("[") == pending.count("]"):
            out.append((indent, pending))
            pending = ""
    assert not pending, "unbalanced flow list"
    return out


def _scalar(value: str) -> object:
    if value.startswith(("[", '"')):
        return json.loads(value)
    assert not value.startswith(("{", "'", "&", "*", "|", ">")), f"outside the subset: {value}"
    return value


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_compose((REPO / "docker-compose.yml").read_text())


def test_subset_loader_reads_nesting_lists_and_flow_lists() -> None:
    text = 'a:\n  b: "1:2"\n  c:\n    - x\n    - "y"\n  d: ["p",\n      "q"]\ne: f\n'
    assert load_compose(text) == {"a": {"b": "1:2", "c": ["x", "y"], "d": ["p", "q"]}, "e": "f"}
    with pytest.raises(AssertionError):
        load_compose("a:\n  - b: c\n")


def test_compose_has_every_documented_service(compose: dict) -> None:
    services = compose["services"]
    assert set(services) >= DOCUMENTED_SERVICES
    kafka = services["kafka"]
    assert re.fullmatch(r"apache/kafka:4\.\d+\.\d+", kafka["image"])
    assert "controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"]
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"


def test_compose_mounts_files_that_exist(compose: dict) -> None:
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in compose["volumes"], f"{name}: undeclared volume {source}"


def test_compose_connector_and_simulator_agree(compose: dict) -> None:
    services = compose["services"]
    connector, simulator = services["connector"], services["simulator"]
    assert connector["build"] == simulator["build"] == "."
    assert "spool:/var/lib/rpt-connector" in connector["volumes"]
    command = simulator["command"]
    assert command[0] == "simulate" and "--rate" in command
    token = command[command.index("--token") + 1]
    settings = load_settings(COMPOSE_CONNECTOR)
    account = settings.accounts[0]
    assert token == f"{account.name}={connector['environment'][account.token_env]}"
    port = command[command.index("--port") + 1]
    assert settings.platform.base_url == f"http://simulator:{port}"
    assert settings.metrics.listen.endswith(":9108")
    assert settings.kafka.producer["bootstrap.servers"] == "kafka:9092"
    assert (
        "PLAINTEXT://kafka:9092" in services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    )


def test_compose_prometheus_and_grafana_use_the_shipped_rules_and_dashboard(compose: dict) -> None:
    services = compose["services"]
    prometheus_mounts = services["prometheus"]["volumes"]
    assert "./config/prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in prometheus_mounts
    scrape = (REPO / "config/compose/prometheus.yml").read_text()
    assert '"connector:9108"' in scrape and "- alerts.yml" in scrape
    grafana_mounts = services["grafana"]["volumes"]
    dashboard_mount = next(m for m in grafana_mounts if "rpt-connector.json" in m)
    dashboards_dir = str(Path(dashboard_mount.split(":")[1]).parent)
    provider = REPO / "config/compose/grafana/provisioning/dashboards/rpt-connector.yml"
    assert f"path: {dashboards_dir}" in provider.read_text()


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_compose_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    shutil.copy(REPO / "config/compose/prometheus.yml", tmp_path / "prometheus.yml")
    shutil.copy(REPO / "config/prometheus/alerts.yml", tmp_path / "alerts.yml")
    result = subprocess.run(
        ["promtool", "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


# ---- example configurations and the command line


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "connector", *args],
        capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})},
    )  # fmt: skip


@pytest.mark.parametrize(
    ("config", "token_env"),
    [(EXAMPLE, "RPT_MAIN_TOKEN"), (COMPOSE_CONNECTOR, "RPT_MAIN_TOKEN")],
    ids=["example", "compose"],
)
def test_shipped_configs_pass_offline_check(config: Path, token_env: str) -> None:
    result = cli("check", "--config", str(config), "--offline", env={token_env: "t0ken-x"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "t0ken-x" not in result.stdout


def test_example_config_sets_every_default() -> None:
    settings = load_settings(EXAMPLE)
    assert settings.shutdown_timeout == Settings.model_fields["shutdown_timeout"].default
    assert settings.platform == PlatformSettings()
    assert settings.spool == SpoolSettings()
    assert settings.metrics == MetricsSettings()
    assert settings.cluster == ClusterSettings()
    assert settings.log == LogSettings()
    producer = {"bootstrap.servers": "localhost:9092"}
    assert settings.kafka == KafkaSettings(producer=producer)


def test_example_config_mentions_every_key() -> None:
    sections: dict[str, set[str]] = {}
    current = ""
    for line in EXAMPLE.read_text().splitlines():
        header = re.match(r"^#?\s*\[\[?([a-z_.]+)\]\]?", line)
        if header:
            current = header.group(1)
            continue
        key = re.match(r"^#?\s*([a-z_]+)\s*=", line)
        if key:
            sections.setdefault(current, set()).add(key.group(1))
    for name, field in Settings.model_fields.items():
        model = _model_of(field.annotation)
        if model is None:
            assert name in sections[""], f"top-level {name} is missing"
            continue
        missing = set(model.model_fields) - {"producer"} - sections.get(name, set())
        assert not missing, f"[{name}] lacks {sorted(missing)}"


def _model_of(annotation: object) -> type | None:
    """The settings model of a section (also inside list[...] or ... | None), else None."""
    for candidate in (annotation, *getattr(annotation, "__args__", ())):
        if hasattr(candidate, "model_fields"):
            return candidate
    return None


def test_version_matches_the_package() -> None:
    result = cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"rpt-connector {__version__}"


@pytest.mark.parametrize(
    "command", [[], ["run"], ["check"], ["simulate"], ["spool", "inspect"], ["schema"]]
)
def test_help_works_and_shows_examples(command: list[str]) -> None:
    result = cli(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: rpt-connector")
    assert "examples:" in result.stdout or command == ["simulate"]
