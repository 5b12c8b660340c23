#!/usr/bin/env python3
"""`make demo`: the whole path on one machine — simulator → connector → a real Kafka broker.

Starts the local broker (devkafka's default instance, unless one already runs), a simulator
with a preloaded backlog plus a steady rate and a few malformed reports, and the connector with
its metrics on 127.0.0.1:9108 (or a free port). Shows a live progress line scraped from the
connector's /metrics, stops once the simulator is drained and everything fetched is committed,
then prints a summary. Everything it started is stopped again, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "devkafka"))
from devkafka import Broker, free_port, port_is_free  # noqa: E402

TOKEN = "demo-token-4b2e"  # noqa: S105 - the simulator's demo account, not a credential
ACCOUNT = "demo"
PREFERRED_METRICS_PORT = 9108


@dataclass
class Snapshot:
    """What the connector's /metrics says at one moment."""

    fetched: float = 0.0
    published: float = 0.0
    dead_letters: float = 0.0
    spool_pending: float = 0.0
    lag_p50: float | None = None
    lag_p99: float | None = None


def parse_metrics(text: str) -> Snapshot:
    snap = Snapshot()
    for family in text_string_to_metric_families(text):
        samples = family.samples
        if family.name == "rpt_reports_fetched":
            snap.fetched = _total(samples, "rpt_reports_fetched_total")
        elif family.name == "rpt_records_published":
            snap.published = _total(samples, "rpt_records_published_total")
        elif family.name == "rpt_dead_letters":
            snap.dead_letters = _total(samples, "rpt_dead_letters_total")
        elif family.name == "rpt_spool_pending_records":
            snap.spool_pending = _total(samples, "rpt_spool_pending_records")
        elif family.name == "rpt_report_lag_seconds":
            buckets = _buckets(samples)
            snap.lag_p50 = quantile(buckets, 0.50)
            snap.lag_p99 = quantile(buckets, 0.99)
    return snap


def _total(samples: list, name: str) -> float:
    return sum(s.value for s in samples if s.name == name)


def _buckets(samples: list) -> list[tuple[float, float]]:
    """Cumulative (upper bound, count) pairs summed over accounts, sorted by bound."""
    sums: dict[float, float] = {}
    for s in samples:
        if s.name.endswith("_bucket"):
            bound = float(s.labels["le"])
            sums[bound] = sums.get(bound, 0.0) + s.value
    return sorted(sums.items())


def quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """The q-quantile from cumulative buckets, interpolated linearly like PromQL's."""
    if not buckets or buckets[-1][1] == 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            share = (rank - lower_count) / (count - lower_count) if count > lower_count else 1
            return lower_bound + (bound - lower_bound) * share
        lower_bound, lower_count = bound, count
    return lower_bound


def write_config(path: Path, *, base_url: str, bootstrap: str, spool: Path, listen: str) -> None:
    # Fresh topics per run: the progress topic of an earlier run must not meet a new spool.
    tag = uuid.uuid4().hex[:8]
    path.write_text(
        f"""[platform]
base_url = "{base_url}"
poll_interval = "200ms"
min_request_interval = 0

[[accounts]]
name = "{ACCOUNT}"
token_env = "RPT_DEMO_TOKEN"

[kafka]
topic = "demo-{tag}.status-reports"
dlq_topic = "demo-{tag}.status-reports.dlq"
progress_topic = "demo-{tag}.progress"
topic_partitions = 3

[kafka.producer]
"bootstrap.servers" = "{bootstrap}"

[spool]
dir = "{spool}"

[metrics]
listen = "{listen}"
""",
        encoding="utf-8",
    )


def _raise_interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def broker() -> Iterator[str]:
    """The default devkafka broker; stopped at the end only if this demo started it."""
    instance = Broker()
    started = not instance.is_running()
    print("starting the local Kafka broker..." if started else "using the running Kafka broker")
    bootstrap = instance.start()
    try:
        yield bootstrap
    finally:
        if started:
            instance.stop()


@contextlib.contextmanager
def simulator(args: argparse.Namespace) -> Iterator[str]:
    command = [
        sys.executable, "-m", "connector", "simulate", "--port", "0",
        "--token", f"{ACCOUNT}={TOKEN}", "--reports", str(args.reports),
        "--rate", str(args.rate), "--rate-total", str(int(args.rate * args.rate_seconds)),
        "--malformed-rate", "0.001", "--seed", "7",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline().strip()
        if not line.startswith("listening on "):
            raise SystemExit(f"demo: the simulator did not start ({line!r})")
        yield line.removeprefix("listening on ")
    finally:
        process.terminate()
        process.wait(10)


@contextlib.contextmanager
def connector(config: Path, log: Path) -> Iterator[subprocess.Popen]:
    env = {**os.environ, "RPT_DEMO_TOKEN": TOKEN}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "connector", "run", "--config", str(config)],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        code = process.wait(60)
        print(f"connector stopped with exit code {code}")
        if code != 0:
            print(log.read_text(errors="replace")[-3000:], file=sys.stderr)


def scrape(metrics_url: str) -> Snapshot | None:
    try:
        return parse_metrics(httpx.get(metrics_url, timeout=2).text)
    except httpx.HTTPError:
        return None  # not listening yet


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def watch(
    metrics_url: str, sim_url: str, process: subprocess.Popen, expected: int, timeout: float
) -> Snapshot:
    """Print progress each second until the simulator is drained and all fetched is committed."""
    tty = sys.stdout.isatty()
    start = time.monotonic()
    snap, last_fetched, last_time = Snapshot(), 0.0, start
    while time.monotonic() - start < timeout:
        time.sleep(1.0)
        if process.poll() is not None:
            raise SystemExit(f"demo: the connector exited early with code {process.returncode}")
        now, current = time.monotonic(), scrape(metrics_url)
        if current is None:
            continue
        snap, rate = current, (current.fetched - last_fetched) / (now - last_time)
        last_fetched, last_time = current.fetched, now
        sim = httpx.get(f"{sim_url}/stats", timeout=2).json()
        line = (
            f"  {now - start:5.1f}s  queued {sim['pending']:6d}  fetched {snap.fetched:6.0f}"
            f"  published {snap.published:6.0f}  {rate:5.0f}/s  lag p99 {_ms(snap.lag_p99):>8}"
        )
        print(f"\r{line}", end="", flush=True) if tty else print(line, flush=True)
        done = sim["pending"] == 0 and sim["generated"] >= expected
        if done and snap.fetched and snap.published + snap.dead_letters >= snap.fetched:
            break
    if tty:
        print()
    return snap


def summary(snap: Snapshot, elapsed: float) -> str:
    rows = [
        ("reports fetched", f"{snap.fetched:.0f}"),
        ("records published", f"{snap.published:.0f}"),
        ("dead letters", f"{snap.dead_letters:.0f}"),
        ("lag p50 (rtime → commit)", _ms(snap.lag_p50)),
        ("lag p99 (rtime → commit)", _ms(snap.lag_p99)),
        ("spool pending", f"{snap.spool_pending:.0f}"),
        ("elapsed", f"{elapsed:.1f} s"),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"  {name:<{width}}  {value:>10}" for name, value in rows)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=5000, help="preloaded backlog")
    parser.add_argument("--rate", type=float, default=500.0, help="new reports per second")
    parser.add_argument("--rate-seconds", type=float, default=10.0, help="how long the rate runs")
    parser.add_argument("--timeout", type=float, default=120.0, help="give up after (s)")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGTERM, _raise_interrupt)
    expected = args.reports + int(args.rate * args.rate_seconds)
    started = time.monotonic()
    port = PREFERRED_METRICS_PORT if port_is_free(PREFERRED_METRICS_PORT) else free_port()
    metrics_url = f"http://127.0.0.1:{port}/metrics"
    try:
        with tempfile.TemporaryDirectory(prefix="rpt-demo-") as tmp, broker() as bootstrap:
            with simulator(args) as sim_url:
                config = Path(tmp) / "connector.toml"
                write_config(config, base_url=sim_url, bootstrap=bootstrap,
                             spool=Path(tmp) / "spool", listen=f"127.0.0.1:{port}")  # fmt: skip
                print(f"simulator on {sim_url}: {args.reports} reports queued, "
                      f"{args.rate:.0f}/s more for {args.rate_seconds:.0f} s")  # fmt: skip
                print(f"connector metrics: {metrics_url}  (also /healthz /readyz /status)")
                with connector(config, Path(tmp) / "connector.log") as process:
                    snap = watch(metrics_url, sim_url, process, expected, args.timeout)
            print("\nsummary")
            print(summary(snap, time.monotonic() - started))
            if process.returncode != 0:
                return 1
    except KeyboardInterrupt:
        print("\ninterrupted; everything the demo started has been stopped")
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
