"""A real Prometheus (Debian's `prometheus` binary) on a free port, with its own config and data.

Used by `make dashboard-demo` and the dashboard-rendering test. The process is started here and
stopped here, by its pid; nothing else is touched.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx

STARTUP_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrometheusServer:
    """`prometheus` scraping `targets` (host:port) as job rpt-connector every `interval` s."""

    def __init__(self, workdir: Path, targets: list[str], *, interval: float = 2.0) -> None:
        self.workdir = workdir
        self.targets = targets
        self.interval = interval
        self.url = ""
        self._process: subprocess.Popen | None = None

    def start(self) -> PrometheusServer:
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("prometheus is not installed: run `bash tools/ensure-prometheus.sh`")
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        targets = ", ".join(f"'{t}'" for t in self.targets)
        every = f"{round(self.interval * 1000)}ms"
        config.write_text(
            f"global: {{scrape_interval: {every}, evaluation_interval: {every}}}\n"
            "scrape_configs:\n"
            f"  - job_name: rpt-connector\n    static_configs: [{{targets: [{targets}]}}]\n"
        )
        port = free_port()
        with (self.workdir / "prometheus.log").open("wb") as log:
            self._process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.url = f"http://127.0.0.1:{port}"
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                log = (self.workdir / "prometheus.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"prometheus exited with {self._process.returncode}:\n{log}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=2.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"prometheus did not become ready within {STARTUP_TIMEOUT_S:.0f}s")

    def wait_for_scrape(self, timeout: float = 60.0) -> None:
        """Until every target has been scraped once (Prometheus applies targets after ~5 s)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            up = self.query('up{job="rpt-connector"} == 1')
            if len(up) == len(self.targets):
                return
            time.sleep(0.5)
        raise RuntimeError(f"prometheus did not scrape {self.targets} within {timeout:.0f}s")

    def query(self, promql: str) -> list[dict]:
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=10.0)
        response.raise_for_status()
        return response.json()["data"]["result"]

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
