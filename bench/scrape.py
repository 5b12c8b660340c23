"""What one Prometheus scrape of /metrics, and one GET /status, cost at 1, 100 and 1,000 accounts.

    .venv/bin/python bench/scrape.py [--accounts 1,100,1000] [--requests 20] [--json PATH]
                                     [--profile]

In process: `Metrics` and the `StatusBoard` of N accounts, every per-account series fed
realistic values through the real observer (`make_observer`: state, polls, spool levels,
commits with per-report rtime/stime/status, archive and clamped timestamps, librdkafka
statistics as librdkafka writes them), served by the connector's own EndpointServer on a free
port. /metrics is fetched as Prometheus 3 fetches it (its Accept header, so OpenMetrics; gzip),
/status plainly; `--requests` times each, after one unmeasured /metrics (the first makes each
series' text once), and before each every account fetches and commits once more, so values
move between scrapes as they do between real ones. Reported per N: median and p99 (of 20: the
slowest) milliseconds per request, the part of /metrics spent encoding (in process, without
HTTP and gzip), the body size (bytes; on the wire gzipped) and the number of series; and the
CPU time of the process per request, which a busy machine does not inflate as it does the
wall clock (the load average is printed with the verdict). The target is a /metrics scrape of
at most 200 ms at 1,000 accounts. `--profile` adds the top functions of
one encode at the largest N (cProfile).
"""

from __future__ import annotations

import argparse
import cProfile
import gzip
import io
import json
import os
import pstats
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from connector.observe.account import make_observer
from connector.observe.exposition import encode
from connector.observe.metrics import Metrics
from connector.observe.observer import (
    AccountObserver,
    AccountState,
    CommitSummary,
    PollOutcome,
    SpoolLevel,
)
from connector.observe.status import EndpointServer, StatusBoard

# What Prometheus 3 sends (scrape_protocols' default); prometheus_client answers OpenMetrics.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;"
    "version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,"
    "text/plain;version=0.0.4;q=0.2,*/*;q=0.1"
)
TARGET_MS = 200.0
ROUNDS = 3  # poll → spool → commit cycles fed to each account
RETSIZES = (500, 500, 500, 200, 1000)
TOPIC = "sms.status-reports"


def parse_counts(text: str) -> list[int]:
    """`--accounts 1,100,1000` → [1, 100, 1000]."""
    counts = [int(part) for part in text.split(",") if part.strip()]
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"--accounts {text!r}: positive integers, comma-separated")
    return counts


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile by rank (nearest rank above): of 20 values, p99 is the slowest."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def count_series(exposition: str) -> int:
    """Sample lines of a text or OpenMetrics exposition (not # HELP/TYPE/EOF, not blank)."""
    return sum(1 for line in exposition.split("\n") if line and not line.startswith("#"))


def account_name(index: int) -> str:
    return f"account-{index:04d}"


def librdkafka_stats(index: int, now: float, rng: random.Random) -> str:
    """A producer's statistics JSON as librdkafka's stats_cb hands it over (trimmed of the
    per-partition detail the collector never reads, not of what it does read)."""

    def latency(avg_us: int) -> dict:
        return {
            "min": avg_us // 4, "max": avg_us * 6, "avg": avg_us, "sum": avg_us * 40,
            "stddev": avg_us // 3, "p50": avg_us, "p75": avg_us * 2, "p90": avg_us * 3,
            "p95": avg_us * 4, "p99": avg_us * 5, "p99_99": avg_us * 6, "outofrange": 0,
            "hdrsize": 11376, "cnt": 40,
        }  # fmt: skip

    brokers: dict[str, dict] = {
        "kafka-0:9092/bootstrap": {"name": "kafka-0:9092/bootstrap", "nodeid": -1,
                                   "state": "UP", "rtt": latency(0), "txerrs": 0},
    }  # fmt: skip
    for node in (1, 2, 3):
        name = f"kafka-{node}:9092/{node}"
        brokers[name] = {
            "name": name, "nodeid": node, "nodename": f"kafka-{node}:9092", "source": "learned",
            "state": "UP", "stateage": 9_000_000_000, "outbuf_cnt": 0, "outbuf_msg_cnt": 0,
            "waitresp_cnt": rng.randint(0, 2), "tx": 1800 + index, "txbytes": 9_400_000,
            "txerrs": rng.choice((0, 0, 0, 1)), "txretries": 0, "req_timeouts": 0, "rx": 1800,
            "rxbytes": 180_000, "rxerrs": 0, "int_latency": latency(80),
            "rtt": latency(rng.randint(400, 4000)), "throttle": latency(0),
            "req": {"Produce": 1700, "Metadata": 12, "AddPartitionsToTxn": 60, "EndTxn": 60},
        }  # fmt: skip
    return json.dumps({
        "name": f"rpt-{account_name(index)}#producer-{index + 1}", "client_id": "rpt-connector",
        "type": "producer", "ts": int(now * 1e6), "time": int(now), "age": 9_000_000_000,
        "replyq": 0, "msg_cnt": rng.randint(0, 500), "msg_size": rng.randint(0, 400_000),
        "msg_max": 100_000, "msg_size_max": 1_073_741_824, "tx": 5400, "tx_bytes": 28_000_000,
        "rx": 5400, "rx_bytes": 540_000, "txmsgs": 250_000, "txmsg_bytes": 90_000_000,
        "brokers": brokers,
        "topics": {TOPIC: {"topic": TOPIC, "age": 9_000_000, "metadata_age": 30_000,
                           "batchsize": latency(60_000), "batchcnt": latency(120)}},
        "eos": {"idemp_state": "Assigned", "txn_state": "Ready", "txn_may_enq": False},
    })  # fmt: skip


def observed_reports(now_ms: int, reports: int, rng: random.Random) -> Counter:
    """(rtime ms, stime ms, status) → reports, as one committed transaction gathers them: rtime
    and stime to the second, so a few dozen distinct keys; seconds to an hour of carrier
    latency, a few per cent failed."""
    out: Counter = Counter()
    keys = max(1, min(reports, rng.randint(5, 40)))
    for n in range(keys):
        rtime = (now_ms - rng.randint(1_000, 120_000)) // 1000 * 1000
        stime = rtime - rng.choice((2_000, 5_000, 15_000, 60_000, 3_600_000))
        status = rng.choice((0,) * 30 + (1, 5, None))
        out[rtime, stime, status] += reports // keys + (1 if n < reports % keys else 0)
    return out


def cycle(observer: AccountObserver, index: int, seq: int, rng: random.Random) -> None:
    """One get-rpt answer of an account, spooled and committed: what moves between scrapes."""
    now = time.time()
    retsize = RETSIZES[index % len(RETSIZES)]
    reports = rng.randint(retsize // 3, retsize)
    observer.polled(PollOutcome.OK, duration=rng.uniform(0.05, 1.5), reports=reports,
                    attempt=0, next_in=0.2)  # fmt: skip
    fetched_at = now - rng.uniform(0.5, 5)
    spool_bytes = reports * 380
    observer.spooled(SpoolLevel(1, reports, spool_bytes, fetched_at, (1 << 30) - spool_bytes))
    dead = Counter({"invalid_report": 1}) if rng.random() < 0.1 else Counter()
    clamped = Counter({"past": 2}) if rng.random() < 0.05 else Counter()
    summary = CommitSummary(
        last_seq=seq, records=reports - sum(dead.values()), dead_letters=dead,
        observed=observed_reports(int(now * 1000), reports, rng),
        duration=rng.uniform(0.01, 0.3), committed_at=now, archive_records=1,
        archive_bytes=spool_bytes, timestamps_clamped=clamped,
    )  # fmt: skip
    observer.committed(summary, SpoolLevel(0, 0, 0, None, 1 << 30))
    observer.polled(PollOutcome.EMPTY, duration=0.03, reports=0, attempt=0, next_in=0.5)
    observer.producer_statistics(librdkafka_stats(index, now, rng))


def feed(observer: AccountObserver, index: int, now: float, rng: random.Random) -> None:
    """A few minutes of one busy account, through every call the pipeline makes."""
    observer.state(AccountState.RECOVERING)
    observer.recovered(100, SpoolLevel(0, 0, 0, None, 1 << 30))
    observer.state(AccountState.POLLING)
    for seq in range(101, 101 + ROUNDS):
        cycle(observer, index, seq, rng)
    if index % 10 == 3:
        observer.polled(PollOutcome.RETRIABLE_ERROR, duration=5.0, reports=0, attempt=1,
                        next_in=1.0)  # fmt: skip
        observer.state(AccountState.BACKOFF, error="HTTP 503 from get-rpt")
    if index % 25 == 7:
        observer.aborted("transaction timed out")
        observer.producer_restarted("fenced")
    observer.unknown_fields(rng.choice((0, 0, 3)))


@dataclass
class Fetched:
    ms: float  # to the last byte as sent (gzip is the scraper's to undo, on its side)
    cpu_ms: float  # CPU of this process meanwhile: the server's work (a busy box slows `ms`)
    wire_bytes: int
    body: bytes  # decompressed
    content_type: str


def timed_get(client: httpx.Client, path: str, headers: dict) -> Fetched:
    started, cpu = time.perf_counter(), time.process_time()
    with client.stream("GET", path, headers=headers) as response:
        raw = b"".join(response.iter_raw())
    elapsed = (time.perf_counter() - started) * 1000
    cpu_ms = (time.process_time() - cpu) * 1000
    response.raise_for_status()
    gzipped = response.headers.get("Content-Encoding") == "gzip"
    body = gzip.decompress(raw) if gzipped else raw
    return Fetched(elapsed, cpu_ms, len(raw), body, response.headers["Content-Type"])


def measure(accounts: int, requests: int, *, profile: bool = False) -> dict:
    names = [account_name(i) for i in range(accounts)]
    retsizes = {name: RETSIZES[i % len(RETSIZES)] for i, name in enumerate(names)}
    metrics = Metrics(accounts=names, batch_capacities=retsizes)
    board = StatusBoard(names)
    board.heartbeat()
    board.set_kafka_reachable(True)
    rng = random.Random(accounts)
    observers = [make_observer(metrics, board, name) for name in names]
    for index, observer in enumerate(observers):
        feed(observer, index, time.time(), rng)
    seq = 101 + ROUNDS

    def next_values() -> None:
        """Between two scrapes every account fetched and committed once more."""
        nonlocal seq
        seq += 1
        for index, observer in enumerate(observers):
            cycle(observer, index, seq, rng)

    server = EndpointServer("127.0.0.1:0", metrics, board)
    host, port = server.start()
    headers = {"Accept": PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip"}
    scrapes: list[Fetched] = []
    statuses: list[Fetched] = []
    encode_ms: list[float] = []
    try:
        with httpx.Client(base_url=f"http://{host}:{port}", timeout=60) as client:
            timed_get(client, "/metrics", headers)  # each series' text made once
            for _ in range(requests):
                next_values()
                scrapes.append(timed_get(client, "/metrics", headers))
                statuses.append(timed_get(client, "/status", {}))
                next_values()
                cpu = time.process_time()
                encode(metrics.registry, PROMETHEUS_ACCEPT)  # in process: no HTTP, no gzip
                encode_ms.append((time.process_time() - cpu) * 1000)
    finally:
        server.stop()
    scrape_ms = [f.ms for f in scrapes]
    status_ms = [f.ms for f in statuses]
    result = {
        "accounts": accounts,
        "metrics": {
            "median_ms": statistics.median(scrape_ms),
            "p99_ms": percentile(scrape_ms, 0.99),
            "cpu_median_ms": statistics.median(f.cpu_ms for f in scrapes),
            "encode_cpu_median_ms": statistics.median(encode_ms),
            "bytes": len(scrapes[-1].body),
            "wire_bytes": scrapes[-1].wire_bytes,
            "series": count_series(scrapes[-1].body.decode()),
            "content_type": scrapes[-1].content_type,
        },
        "status": {
            "median_ms": statistics.median(status_ms),
            "p99_ms": percentile(status_ms, 0.99),
            "cpu_median_ms": statistics.median(f.cpu_ms for f in statuses),
            "bytes": len(statuses[-1].body),
        },
    }
    if profile:
        next_values()
        result["profile"] = profiled(metrics)
    return result


def profiled(metrics: Metrics, top: int = 15) -> str:
    profiler = cProfile.Profile()
    profiler.runcall(encode, metrics.registry, PROMETHEUS_ACCEPT)
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def table(results: list[dict]) -> str:
    """One row per account count; ms are wall-clock medians (p99: the slowest of 20), cpu the
    process CPU per request, encode the CPU of the exposition alone."""
    head = (
        f"{'accounts':>8}  {'series':>8}  {'/metrics':>8}  {'p99':>6}  {'cpu':>6}  "
        f"{'encode':>6}  {'body':>8}  {'gzipped':>8}  {'/status':>8}  {'p99':>6}  {'body':>8}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        m, s = r["metrics"], r["status"]
        lines.append(
            f"{r['accounts']:>8,}  {m['series']:>8,}  {_ms(m['median_ms']):>8}  "
            f"{_ms(m['p99_ms']):>6}  {_ms(m['cpu_median_ms']):>6}  "
            f"{_ms(m['encode_cpu_median_ms']):>6}  {_size(m['bytes']):>8}  "
            f"{_size(m['wire_bytes']):>8}  {_ms(s['median_ms']):>8}  {_ms(s['p99_ms']):>6}  "
            f"{_size(s['bytes']):>8}"
        )
    return "\n".join(lines)


def _ms(value: float) -> str:
    return f"{value:.1f} ms" if value < 10 else f"{value:.0f} ms"


def _size(n: int) -> str:
    for unit, size in (("MB", 1_000_000), ("kB", 1_000)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def verdict(results: list[dict]) -> str | None:
    """Whether the largest N met the 200 ms target (only said from 1,000 accounts up)."""
    largest = max(results, key=lambda r: r["accounts"])
    if largest["accounts"] < 1000:
        return None
    median = largest["metrics"]["median_ms"]
    cpu = largest["metrics"]["cpu_median_ms"]
    ok = "within" if median <= TARGET_MS else "OVER"
    target = f"{ok} the {TARGET_MS:.0f} ms target"
    return (
        f"{largest['accounts']:,} accounts: /metrics median {median:.0f} ms ({cpu:.0f} ms CPU), "
        f"{target}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=parse_counts, default=[1, 100, 1000],
                        help="comma-separated account counts (default 1,100,1000)")  # fmt: skip
    parser.add_argument("--requests", type=int, default=20, help="measured GETs per endpoint")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--profile", action="store_true", help="cProfile one encode at max N")
    args = parser.parse_args(argv)
    results = []
    for count in args.accounts:
        largest = count == max(args.accounts)
        results.append(measure(count, args.requests, profile=args.profile and largest))
    print(table(results))
    line = verdict(results)
    if line:
        print(line)
    for r in results:
        if "profile" in r:
            print(f"\nencode at {r['accounts']:,} accounts, by own time:\n{r['profile']}")
    if args.json:
        document = {
            "bench": "scrape",
            "requests": args.requests,
            "accept": PROMETHEUS_ACCEPT,
            "target_ms": TARGET_MS,
            "results": results,
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
