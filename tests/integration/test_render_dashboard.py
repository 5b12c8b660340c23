"""tools/render_dashboard.py draws every panel from a real Prometheus scrape of /metrics.

The scraped side is the connector's own EndpointServer over a real socket, fed through the real
observer by a thread that plays a short incident (Kafka lost and back, a dead letter); the
Prometheus is Debian's binary. The renderer runs as its CLI, so the tool cannot rot unseen.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from dashboard_kit import REPO, scraped_while  # and tools/ on sys.path
from promserver import PrometheusServer

from connector.observe.account import MetricsAndStatus
from connector.observe.metrics import Metrics
from connector.observe.observer import AccountState, CommitSummary, PollOutcome, SpoolLevel
from connector.observe.status import EndpointServer, StatusBoard

pytestmark = pytest.mark.integration

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SCRAPE_S = 1.0
PLAY_S = 16.0


def play(observer: MetricsAndStatus, stop: threading.Event) -> None:
    """Polls and commits; from 5 s to 11 s Kafka is away and the spool only grows."""
    started = time.time()
    seq, oldest, commits = 0, None, 0
    observer.state(AccountState.POLLING)
    observer.kafka_reachable(True)
    while not stop.wait(0.25):
        elapsed = time.time() - started
        outage = 5 <= elapsed < 11
        observer.polled(PollOutcome.OK, duration=0.05, reports=150, attempt=0, next_in=0.1)
        seq += 1
        oldest = oldest or time.time()
        observer.spooled(SpoolLevel(seq, seq * 150, seq * 9000, oldest, 10 << 20))
        if outage:
            observer.kafka_reachable(False, "no Kafka request succeeded for 1s")
            continue
        now = time.time()
        commits += 1
        dead = Counter({"invalid_report": 1}) if commits % 7 == 0 else Counter()
        observed = Counter({(int(now * 1000) - 900, int(now * 1000) - 4000, 0): 150 * seq})
        summary = CommitSummary(seq, 150 * seq, dead, observed, 0.02, now)
        observer.committed(summary, SpoolLevel(0, 0, 0, None, 10 << 20))
        seq, oldest = 0, None


@pytest.fixture
def scraped(tmp_path: Path) -> Iterator[tuple[PrometheusServer, float, float]]:
    metrics = Metrics(accounts=["a"], batch_capacities={"a": 200})
    board = StatusBoard(["a"])
    server = EndpointServer("127.0.0.1:0", metrics, board)
    host, port = server.start()
    observer = MetricsAndStatus(metrics, board, "a")
    try:
        with scraped_while(
            tmp_path / "prom", f"{host}:{port}", lambda stop: play(observer, stop), PLAY_S,
            interval=SCRAPE_S,
        ) as scraped:  # fmt: skip
            yield scraped
    finally:
        server.stop()


def test_every_panel_is_drawn_from_the_real_scrape(scraped, tmp_path: Path) -> None:
    prom, start, end = scraped
    out = tmp_path / "rendered"
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / "render_dashboard.py"), "--prometheus", prom.url,
         "--start", str(start), "--end", str(end), "--step", "1", "--rate-interval", "4s",
         "--out", str(out), "--shade", f"{start + 5}:{start + 11}:Kafka away"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    dashboard = json.loads((REPO / "config/grafana/rpt-connector.json").read_text())
    drawable = [p for p in dashboard["panels"] if p["type"] != "row"]
    pngs = sorted((out / "panels").glob("*.png"))
    assert len(pngs) == len(drawable)
    sheet = (out / "contact-sheet.png").read_bytes()
    assert sheet.startswith(PNG_MAGIC)
    assert len(sheet) < 500_000
    assert all(p.read_bytes().startswith(PNG_MAGIC) for p in pngs)

    panels = {
        p["title"]: p["series"] for p in json.loads((out / "summary.json").read_text())["panels"]
    }
    assert panels["Instances up (of expected)"] == {
        "up": {"last": 1.0, "max": 1.0, "min": 1.0},
        "expected": {"last": 1.0, "max": 1.0, "min": 1.0},
    }
    reachable = panels["Kafka reachable"]["a"]
    assert (reachable["min"], reachable["max"]) == (0.0, 1.0)  # the outage, then back
    assert panels["Oldest uncommitted report age"]["a"]["max"] >= 2  # grew while away
    assert "a polling" not in panels["Account state"]  # healthy: not drawn
    assert panels["Batch fill (mean batch ÷ retsize)"]["a"]["max"] == pytest.approx(0.75)
    assert 0 < panels["Spool fill (held ÷ (held + room))"]["a"]["max"] < 0.1
    assert panels["Reports fetched and published per second"]["fetched a"]["max"] > 0
    assert panels["Dead letters"]["a invalid_report"]["max"] > 0
    # Nothing fed librdkafka statistics: those panels say "no data", not a flat line.
    assert panels["Broker connections up"] == {}
    assert "no data: " in result.stdout
