"""The connector's /metrics, /readyz and /status, read over HTTP like an operator would."""

from __future__ import annotations

from dataclasses import dataclass

import httpx


@dataclass
class Endpoints:
    """The connector's HTTP endpoints at `base_url` (http://host:port)."""

    base_url: str

    def status(self) -> dict:
        return httpx.get(f"{self.base_url}/status", timeout=5).json()

    def ready(self) -> bool:
        return httpx.get(f"{self.base_url}/readyz", timeout=5).status_code == 200

    def metrics_text(self) -> str:
        return httpx.get(f"{self.base_url}/metrics", timeout=10).text

    def metric(self, name: str, account: str = "main", default: float | None = None) -> float:
        """One sample of an account from the text exposition; `default` when it has none yet
        (without a default, a missing sample is an AssertionError)."""
        prefix = f'{name}{{account="{account}"}} '
        for line in self.metrics_text().splitlines():
            if line.startswith(prefix):
                return float(line[len(prefix) :])
        if default is not None:
            return default
        raise AssertionError(f"no sample {prefix.strip()} in /metrics")

    def answers(self) -> bool:
        try:
            self.status()
        except httpx.HTTPError:
            return False
        return True
