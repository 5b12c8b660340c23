"""The simulator and the connector as real subprocesses, and stopping them whatever happened.

`python -m connector simulate|run`, each in its own process, talking over real sockets. Every
launcher here hands back an object that can stop what it started; `stop_everything` is the
cleanup a test or a script runs in its `finally`.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from devharness.config import connector_env

LISTENING = "listening on "  # the simulator's first stdout line, then its base URL
_METRICS_AT = re.compile(r"metrics and health on (http://\S+)/metrics")


def stop_process(process: subprocess.Popen, timeout: float = 30.0) -> int:
    """SIGTERM, up to `timeout` seconds to exit, then SIGKILL; closes its pipes; the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()
    return process.returncode


def wait_until(
    predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.5
) -> None:
    """Poll `predicate` until it is true; AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


@dataclass
class SimulatorProcess:
    """`rpt-connector simulate` in a subprocess; the first stdout line gives its address."""

    args: list[str]
    capture_stderr: bool = False  # else it goes to this process's stderr
    process: subprocess.Popen | None = None
    base_url: str = ""

    def start(self) -> SimulatorProcess:
        command = [sys.executable, "-m", "connector", "simulate", "--port", "0", *self.args]
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, text=True,
            stderr=subprocess.PIPE if self.capture_stderr else None,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        line = self.process.stdout.readline().strip()
        if not line.startswith(LISTENING):
            self.process.kill()
            _out, err = self.process.communicate(timeout=10)
            raise RuntimeError(f"the simulator did not start: it said {line!r} {err or ''}")
        self.base_url = line.removeprefix(LISTENING)
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

    def stop(self, timeout: float = 10.0) -> int | None:
        return None if self.process is None else stop_process(self.process, timeout)


@dataclass
class ConnectorProcess:
    """`rpt-connector run` in a subprocess; its output goes to a log file for post-mortems."""

    config: Path
    log: Path
    env: dict[str, str] = field(default_factory=connector_env)
    process: subprocess.Popen | None = None

    def start(self) -> ConnectorProcess:
        with self.log.open("ab") as handle:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "connector", "run", "--config", str(self.config)],
                stdout=handle, stderr=subprocess.STDOUT, env=self.env,
            )  # fmt: skip
        return self

    @property
    def pid(self) -> int:
        return self.process.pid

    def metrics_base_url(self, timeout: float = 60.0) -> str:
        """The http://host:port of /metrics, /status, /readyz, once the connector logs it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = _METRICS_AT.search(self.output())
            if found:
                return found.group(1)
            if not self.alive():
                break
            time.sleep(0.02)
        raise RuntimeError(f"the connector did not start:\n{self.output()[-3000:]}")

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and its exit code; TimeoutExpired if it does not exit within `timeout`."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, and SIGKILL if it is still running after `timeout`."""
        return stop_process(self.process, timeout)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def stop_everything(connector: ConnectorProcess | None, simulator: SimulatorProcess) -> None:
    """The cleanup after a run, whatever state it failed in: no process outlives it."""
    if connector is not None and connector.alive():
        connector.kill()
    simulator.stop()
