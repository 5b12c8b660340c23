"""The connector image in a container, against the simulator and a devkafka broker on this host.

Ground truth is the simulator's --record file (every report it handed out, exactly as sent);
Kafka's topic is read back read_committed and every msgid must be there exactly once.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

from image_test_engine import EngineError, docker

import devkafka
from connector.codec.avro import decode_single_object
from devharness.kafka import consume_all

REPO = Path(__file__).resolve().parent.parent
TOKEN = "image-test-token"  # noqa: S105  (the simulator's, not a secret)
SHUTDOWN_TIMEOUT_S = 20.0
HEALTHY_WITHIN_S = 150.0
DELIVERED_WITHIN_S = 240.0
SPOOL = "/var/lib/rpt-connector"

CONFIG = """\
shutdown_timeout = "{shutdown}s"
[platform]
base_url = "{platform}"
poll_interval = "200ms"
[[accounts]]
name = "main"
token_env = "RPT_MAIN_TOKEN"
[kafka]
topic = "{topic}"
dlq_topic = "{topic}.dlq"
progress_topic = "{topic}.progress"
topic_partitions = 3
[kafka.producer]
"bootstrap.servers" = "{bootstrap}"
[spool]
dir = "{spool}"
[metrics]
listen = "127.0.0.1:{metrics_port}"
[log]
format = "json"
"""


class ContainerRun:
    def __init__(self, image: str, env: dict[str, str], reports: int) -> None:
        self.image, self.env, self.reports = image, env, reports
        tag = uuid.uuid4().hex[:8]
        self.name, self.volume, self.topic = f"rpt-it-{tag}", f"rpt-it-spool-{tag}", f"it-{tag}"

    def check(self, figures: dict[str, str]) -> list[str]:
        """Run every check; return what failed (empty: all held). Cleans up whatever happens."""
        broker = devkafka.Broker(f"image-test-{self.name[-8:]}")
        with tempfile.TemporaryDirectory(prefix="rpt-it-run-") as scratch:
            work = Path(scratch)
            work.chmod(0o755)
            simulator = None
            try:
                broker.start()
                simulator, platform = _start_simulator(work / "record.jsonl", self.reports)
                return self._checks(work, platform, broker.bootstrap or "", figures)
            finally:
                self._remove()
                if simulator is not None:
                    simulator.terminate()
                    simulator.wait(10)
                broker.wipe()
                shutil.rmtree(broker.dir, ignore_errors=True)

    def _checks(self, work: Path, platform: str, bootstrap: str, figures: dict) -> list[str]:
        config = work / "connector.toml"
        metrics_port = devkafka.free_port()
        config.write_text(
            CONFIG.format(
                shutdown=int(SHUTDOWN_TIMEOUT_S), platform=platform, topic=self.topic,
                bootstrap=bootstrap, spool=SPOOL, metrics_port=metrics_port,
            )
        )  # fmt: skip
        config.chmod(0o644)
        started = time.monotonic()
        docker(
            "run", "-d", "--name", self.name, "--network", "host",
            "-e", f"RPT_MAIN_TOKEN={TOKEN}",
            "-e", f"HEALTHCHECK_URL=http://127.0.0.1:{metrics_port}/healthz",
            "-v", f"{config}:/etc/rpt-connector/connector.toml:ro",
            "-v", f"{self.volume}:{SPOOL}", self.image,
            env=self.env,
        )  # fmt: skip
        failures = []
        healthy = self._wait_healthy()
        figures["healthy after"] = f"{time.monotonic() - started:.0f}s"
        if healthy is not None:
            failures.append(healthy)
        failures += self._exactly_once(work / "record.jsonl", bootstrap, figures, started)
        failures += self._spool_modes()
        failures += self._stop(figures)
        failures += self._json_logs(figures)
        failures += self._spool_modes_after_stop()
        return failures

    def _state(self, field: str) -> str:
        return docker("inspect", "--format", "{{" + field + "}}", self.name, env=self.env).strip()

    def _wait_healthy(self) -> str | None:
        deadline = time.monotonic() + HEALTHY_WITHIN_S
        while time.monotonic() < deadline:
            if self._state(".State.Running") != "true":
                return f"the container stopped before it was healthy: {self._logs()[-1500:]}"
            if self._state(".State.Health.Status") == "healthy":
                print("image-test: container healthy (HEALTHCHECK)", flush=True)
                return None
            time.sleep(1)
        return f"not healthy within {HEALTHY_WITHIN_S:.0f}s ({self._state('.State.Health')})"

    def _exactly_once(self, record: Path, bootstrap: str, figures: dict, t0: float) -> list[str]:
        deadline = time.monotonic() + DELIVERED_WITHIN_S
        truth: set[str] = set()
        delivered: Counter = Counter()
        while time.monotonic() < deadline:
            truth = _handed_out(record)
            if len(truth) >= self.reports:
                delivered = _delivered(bootstrap, self.topic)
                if set(delivered) >= truth:
                    break
            time.sleep(2)
        figures["all reports in Kafka after"] = f"{time.monotonic() - t0:.0f}s"
        lost = sorted(truth - set(delivered))
        duplicated = sorted(m for m, n in delivered.items() if n > 1)
        unknown = sorted(set(delivered) - truth)
        figures["reports"] = f"{len(truth)} handed out, {sum(delivered.values())} in Kafka"
        print(f"image-test: {figures['reports']}", flush=True)
        problems = []
        if len(truth) != self.reports:
            problems.append(f"the simulator handed out {len(truth)} of {self.reports} reports")
        for what, items in (("lost", lost), ("duplicated", duplicated), ("unknown", unknown)):
            if items:
                problems.append(f"{len(items)} reports {what}, e.g. {items[:3]}")
        return problems

    def _stop(self, figures: dict) -> list[str]:
        started = time.monotonic()
        docker("kill", "--signal", "TERM", self.name, env=self.env)
        while self._state(".State.Running") == "true":
            if time.monotonic() - started > SHUTDOWN_TIMEOUT_S + 10:
                return [f"still running {SHUTDOWN_TIMEOUT_S + 10:.0f}s after SIGTERM"]
            time.sleep(0.1)
        elapsed = time.monotonic() - started
        figures["SIGTERM to exit"] = f"{elapsed:.1f}s"
        code = self._state(".State.ExitCode")
        problems = [] if code == "0" else [f"exit code {code} after SIGTERM, expected 0"]
        if elapsed > SHUTDOWN_TIMEOUT_S:
            problems.append(f"stopping took {elapsed:.1f}s > shutdown_timeout")
        return problems

    def _logs(self) -> str:
        result = subprocess.run(
            ["docker", "logs", self.name], env=self.env, capture_output=True, text=True
        )
        return result.stdout + result.stderr

    def _json_logs(self, figures: dict) -> list[str]:
        lines = [line for line in self._logs().splitlines() if line.strip()]
        events, bad = [], []
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                event = None
            (events if isinstance(event, dict) else bad).append(event or line)
        figures["log lines"] = f"{len(lines)} ({len(bad)} not JSON)"
        problems = _native_path(events, figures)
        if bad or not lines:
            problems.append(
                f"{len(bad)} of {len(lines)} log lines are not JSON objects, e.g. {bad[:3]}"
            )
        return problems

    def _spool_modes(self) -> list[str]:
        """While running: the spool and its files belong to the image's user, 0700/0600."""
        listing = docker(
            "exec", self.name, "find", SPOOL, "-printf", "%u %y %m %p\\n", env=self.env
        )
        return _judge_modes(listing, "running")

    def _spool_modes_after_stop(self) -> list[str]:
        listing = docker(
            "run", "--rm", "--network", "none", "-v", f"{self.volume}:{SPOOL}",
            "--entrypoint", "find", self.image, SPOOL, "-printf", "%u %y %m %p\\n",
            env=self.env,
        )  # fmt: skip
        return _judge_modes(listing, "after stop")

    def _remove(self) -> None:
        for args in (("rm", "-f", self.name), ("volume", "rm", "-f", self.volume)):
            try:
                docker(*args, env=self.env, timeout=60)
            except EngineError as exc:
                print(f"image-test: cleanup: {exc}", file=sys.stderr)


def _native_path(events: list[dict], figures: dict) -> list[str]:
    """The container encoded with rpt_native: connector/codec/native.py logs which path it took."""
    said = [str(e.get("message", "")) for e in events if "native hot path" in str(e.get("message"))]
    figures["hot path"] = said[0] if said else "not logged"
    if not any(message.startswith("native hot path on") for message in said):
        return [f"the container did not run the native hot path: {said or 'nothing logged'}"]
    return []


def _judge_modes(listing: str, when: str) -> list[str]:
    problems = []
    entries = [line.split(" ", 3) for line in listing.splitlines() if line.strip()]
    for user, kind, mode, path in entries:
        wanted = "700" if kind == "d" else "600"
        if user != "rpt" or mode != wanted:
            problems.append(f"spool {when}: {path} is {user} {mode}, expected rpt {wanted}")
    if not any(kind == "f" for _u, kind, _m, _p in entries):
        problems.append(f"spool {when}: no files in {SPOOL} ({listing.strip()!r})")
    return problems


def _start_simulator(record: Path, reports: int) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [
            sys.executable, "-m", "connector", "simulate", "--port", "0",
            "--token", f"main={TOKEN}", "--reports", f"main={reports}", "--record", str(record),
        ],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if not line.startswith("listening on "):
        process.kill()
        raise EngineError(f"the simulator did not start: {line!r}")
    return process, line.removeprefix("listening on ")


def _handed_out(record: Path) -> set[str]:
    if not record.exists():
        return set()
    return {str(json.loads(line)["msgid"]) for line in record.read_bytes().splitlines() if line}


def _delivered(bootstrap: str, topic: str) -> Counter:
    return Counter(
        str(decode_single_object(r.value)["msgid"]) for r in consume_all(bootstrap, topic, 30)
    )
