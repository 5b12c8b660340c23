#!/usr/bin/env python3
"""`make demo`: the whole path on one machine — simulator → connector → a real Kafka broker.

Starts the local broker (devkafka's default instance, unless one already runs), a simulator
with a preloaded backlog plus a steady rate and a few malformed reports, and the connector with
its metrics on 127.0.0.1:9108 (or a free port). Shows a live progress line scraped from the
connector's /metrics, stops once the simulator is drained and everything fetched is committed,
then prints a summary, the topic, one record read back from it and decoded, and the kcat command
that reads the topic. Everything it started is stopped again, also on Ctrl-C; with `--keep`
(`make demo ARGS=--keep`) the broker stays up so the topic can be read, and the demo says how
to stop it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
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
sys.path.insert(0, str(REPO))  # the process harness, devharness/ (it also finds devkafka/)
import devharness as harness  # noqa: E402
from connector.codec.avro import decode_single_object  # noqa: E402
from devkafka import DEFAULT_NAME, port_is_free  # noqa: E402

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


def demo_topics() -> harness.Topics:
    # Fresh topics per run: the progress topic of an earlier run must not meet a new spool.
    tag = uuid.uuid4().hex[:8]
    data = f"demo-{tag}.status-reports"
    return harness.Topics(data, f"{data}.dlq", f"demo-{tag}.progress")


def demo_config(
    workdir: Path, sim_url: str, bootstrap: str, topics: harness.Topics, listen: str
) -> Path:
    return harness.write_config(
        workdir / "connector.toml", base_url=sim_url, bootstrap=bootstrap, topics=topics,
        spool=workdir / "spool", accounts=(ACCOUNT,),
        overrides={"platform": {"poll_interval": "200ms"}, "metrics": {"listen": listen}},
    )  # fmt: skip


def _raise_interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


@dataclass
class LocalBroker:
    instance: harness.Broker
    started_here: bool  # else it was running before the demo, and is left as it was
    keep: bool


@contextlib.contextmanager
def broker(name: str, keep: bool) -> Iterator[LocalBroker]:
    """A devkafka broker; stopped at the end only if this demo started it and `keep` is off."""
    local = LocalBroker(harness.Broker(name), False, keep)
    local.started_here = not local.instance.is_running()
    print(
        "starting the local Kafka broker..." if local.started_here else "using the running broker"
    )
    local.instance.start()
    try:
        yield local
    finally:
        if local.started_here and not keep:
            local.instance.stop()


def simulator(args: argparse.Namespace) -> harness.SimulatorProcess:
    return harness.SimulatorProcess([
        *harness.token_args({ACCOUNT: harness.TOKEN}), "--reports", str(args.reports),
        "--rate", str(args.rate), "--rate-total", str(int(args.rate * args.rate_seconds)),
        "--malformed-rate", "0.001", "--seed", "7",
    ]).start()  # fmt: skip


@contextlib.contextmanager
def connector(config: Path, log: Path) -> Iterator[harness.ConnectorProcess]:
    process = harness.ConnectorProcess(
        config, log, env=harness.connector_env({ACCOUNT: harness.TOKEN})
    ).start()
    try:
        yield process
    finally:
        code = process.stop()
        print(f"connector stopped with exit code {code}")
        if code != 0:
            print(process.output()[-3000:], file=sys.stderr)


def scrape(endpoints: harness.Endpoints) -> Snapshot | None:
    try:
        return parse_metrics(endpoints.metrics_text())
    except httpx.HTTPError:
        return None  # not listening yet


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def watch(
    endpoints: harness.Endpoints,
    simulator: harness.SimulatorProcess,
    connector: harness.ConnectorProcess,
    expected: int,
    timeout: float,
) -> Snapshot:
    """Print progress each second until the simulator is drained and all fetched is committed."""
    tty = sys.stdout.isatty()
    start = time.monotonic()
    snap, last_fetched, last_time = Snapshot(), 0.0, start
    while time.monotonic() - start < timeout:
        time.sleep(1.0)
        if not connector.alive():
            code = connector.process.returncode
            raise SystemExit(f"demo: the connector exited early with code {code}")
        now, current = time.monotonic(), scrape(endpoints)
        if current is None:
            continue
        snap, rate = current, (current.fetched - last_fetched) / (now - last_time)
        last_fetched, last_time = current.fetched, now
        sim = simulator.stats()
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


def kcat_command(bootstrap: str, topic: str) -> str:
    return f"kcat -b {bootstrap} -C -t {topic} -o beginning -e -X isolation.level=read_committed"


def the_data(bootstrap: str, topics: harness.Topics) -> str:
    """The topic, how many records it holds for a read_committed consumer, one of them decoded
    with the connector's own codec, and how to read it with kcat."""
    records = harness.consume_all(bootstrap, topics.data)
    lines = [f"topic {topics.data}: {len(records)} records (dead letters: {topics.dlq})"]
    if records:
        first = records[0]
        value = decode_single_object(first.value)
        lines += [
            f"one record (partition {first.partition}, offset {first.offset}, "
            f"key {first.key.decode(errors='replace') if first.key else None}), "
            "decoded with connector/codec/avro.py:",
            json.dumps(value, indent=2, default=str, ensure_ascii=False),
        ]
    lines += [
        "read the topic with kcat (values are Avro single-object bytes, printed raw):",
        f"  {kcat_command(bootstrap, topics.data)}",
    ]
    if shutil.which("kcat") is None:
        lines.append("  (kcat is not installed here: apt-get install kcat)")
    return "\n".join(lines)


def stop_command(name: str) -> str:
    if name == DEFAULT_NAME:
        return "make kafka-down"
    python = Path(sys.executable)
    if python.is_relative_to(REPO):
        python = python.relative_to(REPO)
    return f"{python} devkafka/devkafka.py down --name {name}"


def broker_note(local: LocalBroker, bootstrap: str) -> str:
    stop = f"stop it with: {stop_command(local.instance.name)}"
    if not local.started_here:
        return f"the Kafka broker was running before the demo and still is; {stop}"
    if local.keep:
        return f"the Kafka broker keeps running at {bootstrap}; {stop}"
    return "the Kafka broker the demo started is stopped; `make demo ARGS=--keep` leaves it up"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=5000, help="preloaded backlog")
    parser.add_argument("--rate", type=float, default=500.0, help="new reports per second")
    parser.add_argument("--rate-seconds", type=float, default=10.0, help="how long the rate runs")
    parser.add_argument("--timeout", type=float, default=120.0, help="give up after (s)")
    parser.add_argument(
        "--keep", action="store_true", help="leave the Kafka broker running afterwards"
    )
    parser.add_argument(
        "--broker", default=DEFAULT_NAME, help="devkafka instance name (default: %(default)s)"
    )
    return parser.parse_args(argv)


def run(args: argparse.Namespace, workdir: Path, bootstrap: str, topics: harness.Topics) -> int:
    """Simulator and connector until everything fetched is committed; the connector's exit code."""
    started = time.monotonic()
    port = PREFERRED_METRICS_PORT if port_is_free(PREFERRED_METRICS_PORT) else harness.free_port()
    endpoints = harness.Endpoints(f"http://127.0.0.1:{port}")
    expected = args.reports + int(args.rate * args.rate_seconds)
    sim = simulator(args)
    try:
        config = demo_config(workdir, sim.base_url, bootstrap, topics, f"127.0.0.1:{port}")
        print(f"simulator on {sim.base_url}: {args.reports} reports queued, "
              f"{args.rate:.0f}/s more for {args.rate_seconds:.0f} s")  # fmt: skip
        print(f"connector metrics: {endpoints.base_url}/metrics  (also /healthz /readyz /status)")
        with connector(config, workdir / "connector.log") as process:
            snap = watch(endpoints, sim, process, expected, args.timeout)
    finally:
        sim.stop()
    print("\nsummary")
    print(summary(snap, time.monotonic() - started))
    return process.process.returncode


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    topics = demo_topics()
    try:
        with tempfile.TemporaryDirectory(prefix="rpt-demo-") as tmp:
            with broker(args.broker, args.keep) as local:
                bootstrap = local.instance.bootstrap
                code = run(args, Path(tmp), bootstrap, topics)
                print()
                print(the_data(bootstrap, topics))
            print(broker_note(local, bootstrap))
    except KeyboardInterrupt:
        kept = " but the broker (--keep)" if args.keep else ""
        print(f"\ninterrupted; everything the demo started has been stopped{kept}")
        return 130
    return 0 if code == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
