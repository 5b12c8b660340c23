"""A private broker behind a TCP proxy: the network between clients and broker can be cut.

The broker listens on its own port but advertises the proxy's, so after the first metadata
answer every client connection goes through the proxy, whatever address it bootstrapped from.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from harness import ConnectorProcess, Endpoints
from tcp_proxy import TcpProxy

import devkafka


@dataclass
class ProxiedBroker:
    broker: devkafka.Broker
    proxy: TcpProxy

    @property
    def bootstrap(self) -> str:
        """What clients should be given: the proxy, so even the bootstrap can be cut."""
        return self.proxy.address

    @property
    def direct(self) -> str:
        """The broker's internal listener: the test's own checks never go through the proxy."""
        return self.broker.internal_bootstrap


@contextlib.contextmanager
def proxied_broker() -> Iterator[ProxiedBroker]:
    """Start a fresh broker behind a fresh proxy; stop and delete both afterwards."""
    port = devkafka.free_port()
    proxy = TcpProxy((devkafka.HOST, port)).start()
    broker = devkafka.Broker(
        f"pytest-proxied-{uuid.uuid4().hex[:8]}", port=port, advertise=proxy.address
    )
    try:
        broker.start()
        yield ProxiedBroker(broker, proxy)
    finally:
        proxy.close()
        broker.wipe()
        shutil.rmtree(broker.dir, ignore_errors=True)


# --------------------------------------------------------------------------- connector side


class JsonConnector(ConnectorProcess):
    """`rpt-connector run --log-format json`: every line it writes must then be JSON."""

    def start(self) -> JsonConnector:
        handle = self.log.open("ab")
        command = [sys.executable, "-m", "connector", "run", "--config", str(self.config)]
        self.process = subprocess.Popen(
            [*command, "--log-format", "json"],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=self.env,
        )
        handle.close()
        return self


def add_producer_settings(config: Path, settings: dict[str, str | int]) -> Path:
    """Add librdkafka properties to the [kafka.producer] table that write_config made."""
    lines = config.read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith('"bootstrap.servers"'))
    extra = [f'"{key}" = {json.dumps(value)}' for key, value in settings.items()]
    config.write_text("\n".join([*lines[: at + 1], *extra, *lines[at + 1 :]]) + "\n")
    return config


def json_events(output: str) -> list[dict]:
    """Every line of a connector's output as JSON; the first line that is not JSON fails."""
    events = []
    for number, line in enumerate(output.splitlines(), start=1):
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            raise AssertionError(f"output line {number} is not JSON: {line[:300]!r}") from None
    return events


def committed(endpoints: Endpoints, account: str) -> int:
    return endpoints.status()["accounts"][account]["committed_sequence"] or 0


def first_commits_after(
    endpoints: Endpoints, marks: dict[str, int], timeout: float
) -> dict[str, float]:
    """Per account, the monotonic time it first committed past its mark (polled every 0.2 s)."""
    seen: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while len(seen) < len(marks):
        if time.monotonic() > deadline:
            missing = sorted(set(marks) - set(seen))
            raise AssertionError(f"no commit within {timeout:.0f}s for {missing}")
        accounts = endpoints.status()["accounts"]
        now = time.monotonic()
        for name, mark in marks.items():
            if name not in seen and (accounts[name]["committed_sequence"] or 0) > mark:
                seen[name] = now
        time.sleep(0.2)
    return seen


def report_figures(fault: str, **figures: object) -> None:
    """One line per fault for the closing note (shown with `pytest -s`, kept in the log)."""
    print(f"FIGURES {fault}: " + json.dumps(figures))
