"""The Grafana dashboard as the tests read it: which queries are per account, and how each is
bounded to the top `$topk` accounts (tests/unit/test_dashboard.py checks the shape,
tests/integration/test_dashboard_topk.py evaluates it against a real Prometheus); and a real
Prometheus scraping while a thread plays values into the metrics (those two and
tests/integration/test_render_dashboard.py)."""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DASHBOARD = REPO / "config" / "grafana" / "rpt-connector.json"
sys.path.insert(0, str(REPO / "tools"))
from promserver import PrometheusServer  # noqa: E402

# `shown and on (account) topk($topk, rank)`: the rank is one instant vector (`@ end()`), so the
# same k accounts are drawn at every step of a range instead of a different top k at each.
JOIN = " and on (account) "
BOUND = re.compile(r"(topk|bottomk)\(\$topk, (.*)\)", re.S)


@dataclass(frozen=True)
class Target:
    panel: str
    kind: str
    ref: str
    expr: str
    legend: str

    @property
    def per_account(self) -> bool:
        """One series (or one per other label) for each account: the legend names it."""
        return "{{account}}" in self.legend


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def targets(document: dict | None = None) -> list[Target]:
    document = document or dashboard()
    return [
        Target(p["title"], p["type"], t["refId"], t["expr"], t.get("legendFormat", ""))
        for p in document["panels"]
        if p["type"] != "row"
        for t in p.get("targets", [])
    ]


def _top_level(expr: str) -> list[int]:
    """Indices of the characters of `expr` outside every bracket and quoted string."""
    depth, quoted, out = 0, False, []
    for index, char in enumerate(expr):
        if char == '"' and (index == 0 or expr[index - 1] != "\\"):
            quoted = not quoted
        elif not quoted and char in "([{":
            depth += 1
        elif not quoted and char in ")]}":
            depth -= 1
        elif not quoted and depth == 0:
            out.append(index)
    return out


def _one_call(expr: str) -> re.Match | None:
    """`topk($topk, x)` / `bottomk($topk, x)` as the whole of `expr`, else None."""
    match = BOUND.fullmatch(expr)
    if match is None:
        return None
    inner = match.group(2)
    balanced = inner.count("(") == inner.count(")") and not _closes_early(inner)
    return match if balanced else None


def _closes_early(text: str) -> bool:
    depth = 0
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            return True
    return False


@dataclass(frozen=True)
class Bounded:
    shown: str  # what the panel draws for every account
    how: str  # "topk" or "bottomk"
    rank: str  # the per-account value the k accounts are chosen by
    stable: bool  # ranked once for the whole window (`@ end()`), not at each step


def bounded(expr: str) -> Bounded | None:
    """How `expr` is cut to `$topk` accounts, or None when it is not (at its top level)."""
    whole = _one_call(expr)
    if whole is not None:
        return Bounded(whole.group(2), whole.group(1), whole.group(2), stable=False)
    for index in _top_level(expr):
        if expr.startswith(JOIN, index):
            tail = _one_call(expr[index + len(JOIN) :])
            if tail is not None:
                rank = tail.group(2)
                return Bounded(expr[:index], tail.group(1), rank, stable="@ end()" in rank)
    return None


@contextmanager
def scraped_while(
    workdir: Path, target: str, play: Callable[[threading.Event], None], seconds: float,
    *, interval: float = 1.0,
) -> Iterator[tuple[PrometheusServer, float, float]]:  # fmt: skip
    """Prometheus scraping `target` (host:port) every `interval` s while `play(stop)` runs in a
    thread for `seconds`; yields (prometheus, start, end) once the last values are scraped."""
    stop = threading.Event()
    player = threading.Thread(target=play, args=(stop,))
    try:
        with PrometheusServer(workdir, [target], interval=interval) as prom:
            prom.wait_for_scrape()
            start = time.time()
            player.start()
            time.sleep(seconds)
            stop.set()
            player.join()
            time.sleep(2 * interval)  # the last values scraped
            yield prom, start, time.time()
    finally:
        stop.set()
