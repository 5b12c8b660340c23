"""Run the real connector (`python -m connector run`) as a subprocess and check what Kafka holds.

Shared by the end-to-end, recovery and chaos tests: the connector, the simulator and the
broker are all real processes talking over real sockets.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from kafka_helpers import ConsumedRecord, consume_all

from connector.avro_codec import decode_single_object
from connector.report import Normalizer

TOKEN = "test-token-7d1f"  # the simulator's static token for account "main"


@dataclass
class Topics:
    data: str
    dlq: str
    progress: str

    @classmethod
    def fresh(cls) -> Topics:
        tag = uuid.uuid4().hex[:10]
        return cls(f"rpt-{tag}", f"rpt-{tag}.dlq", f"rpt-{tag}.progress")


def write_config(path: Path, *, base_url: str, bootstrap: str, topics: Topics, spool: Path,
                 delivery: str = "exactly_once", extra: str = "",
                 accounts: tuple[str, ...] = ("main",)) -> Path:  # fmt: skip
    account_blocks = "\n".join(
        f'[[accounts]]\nname = "{name}"\ntoken_env = "RPT_TEST_TOKEN_{name.upper()}"\n'
        for name in accounts
    )
    path.write_text(
        f"""
[platform]
base_url = "{base_url}"
poll_interval = "100ms"
min_request_interval = 0
read_timeout = "3s"
backoff_initial = "100ms"
backoff_max = "1s"

{account_blocks}

[kafka]
topic = "{topics.data}"
dlq_topic = "{topics.dlq}"
progress_topic = "{topics.progress}"
delivery = "{delivery}"
commit_interval = "200ms"
transactional_id_prefix = "{topics.data}-"
topic_partitions = 3

[kafka.producer]
"bootstrap.servers" = "{bootstrap}"

[spool]
dir = "{spool}"

[metrics]
listen = "127.0.0.1:0"

{extra}
"""
    )
    return path


def connector_env(accounts: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    for name, token in (accounts or {"main": TOKEN}).items():
        env[f"RPT_TEST_TOKEN_{name.upper()}"] = token
    return env


@dataclass
class ConnectorProcess:
    """`rpt-connector run` in a subprocess; its output goes to a log file for post-mortems."""

    config: Path
    log: Path
    env: dict[str, str] = field(default_factory=connector_env)
    process: subprocess.Popen | None = None

    def start(self) -> ConnectorProcess:
        handle = self.log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "connector", "run", "--config", str(self.config)],
            stdout=handle, stderr=subprocess.STDOUT, env=self.env,
        )  # fmt: skip
        handle.close()
        return self

    def terminate(self, timeout: float = 30.0) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def stop_everything(connector: ConnectorProcess | None, simulator: SimulatorProcess) -> None:
    """The cleanup after a test, whatever state it failed in: no process outlives it."""
    if connector is not None and connector.alive():
        connector.kill()
    simulator.stop()


def ground_truth(record_file: Path) -> tuple[dict[str, dict], set[str]]:
    """The simulator's record of handed-out reports: good ones by msgid, and bad raw lines."""
    normalizer = Normalizer("truth")
    good: dict[str, dict] = {}
    bad: set[str] = set()
    for line in record_file.read_bytes().splitlines():
        batch = normalizer.normalize_batch([json.loads(line)], 0)
        if batch.records:
            good[batch.records[0]["msgid"]] = batch.records[0]
        else:
            bad.add(line.decode())
    return good, bad


@dataclass
class Verdict:
    delivered: Counter
    lost: list[str]
    duplicated: list[str]
    dead_letters: list[ConsumedRecord]


def verify(bootstrap: str, topics: Topics, good: dict[str, dict]) -> Verdict:
    """Compare the topic (read_committed) with the ground truth."""
    records = consume_all(bootstrap, topics.data, timeout=60)
    delivered: Counter = Counter()
    for record in records:
        value = decode_single_object(record.value)
        delivered[value["msgid"]] += 1
        expected_key = value["custid"] or value["msgid"]
        assert record.key == expected_key.encode(), (record.key, value)
    lost = [m for m in good if m not in delivered]
    duplicated = [m for m, n in delivered.items() if n > 1]
    dead = consume_all(bootstrap, topics.dlq, timeout=60)
    return Verdict(delivered, lost, duplicated, dead)


@dataclass
class SimulatorProcess:
    """`rpt-connector simulate` in a subprocess; the first stdout line gives its address."""

    args: list[str]
    process: subprocess.Popen | None = None
    base_url: str = ""

    def start(self) -> SimulatorProcess:
        command = [sys.executable, "-m", "connector", "simulate", "--port", "0", *self.args]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        line = self.process.stdout.readline().strip()
        assert line.startswith("listening on "), f"simulator said {line!r}"
        self.base_url = line.removeprefix("listening on ")
        return self

    def stats(self) -> dict:
        return httpx.get(f"{self.base_url}/stats", timeout=5).json()

    def wait_for_more_handed_out(self, count: int, timeout: float = 60) -> None:
        start = self.stats()["handed_out"]
        wait_until(lambda: self.stats()["handed_out"] >= start + count, timeout, "fetching")

    def wait_drained(self, generated: int = 0, timeout: float = 120) -> None:
        """Until `generated` reports exist (rate mode) and none is left in the queues."""
        wait_until(lambda: self.stats()["generated"] >= generated, timeout, "generation to end")
        wait_until(lambda: self.stats()["pending"] == 0, timeout, "the simulator to drain")

    def control(self, action: str, **params: object) -> None:
        httpx.post(f"{self.base_url}/control/{action}", params=params, timeout=5)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


def wait_until(
    predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.5
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def free_port() -> int:
    """A TCP port free right now on 127.0.0.1 (for the connector's metrics listener)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Endpoints:
    """The connector's /metrics, /readyz and /status at a known address."""

    base_url: str

    def status(self) -> dict:
        return httpx.get(f"{self.base_url}/status", timeout=5).json()

    def ready(self) -> bool:
        return httpx.get(f"{self.base_url}/readyz", timeout=5).status_code == 200

    def metric(self, name: str, account: str = "main") -> float:
        """One gauge/counter sample of an account, from the text exposition."""
        prefix = f'{name}{{account="{account}"}} '
        for line in httpx.get(f"{self.base_url}/metrics", timeout=5).text.splitlines():
            if line.startswith(prefix):
                return float(line[len(prefix) :])
        raise AssertionError(f"no sample {prefix.strip()} in /metrics")

    def answers(self) -> bool:
        try:
            self.status()
        except httpx.HTTPError:
            return False
        return True
