"""Where the connector's CPU goes, stage by stage: thread CPU µs per report, both record paths.

    .venv/bin/python bench/stages.py [--reports 100000] [--runs 3]

In-process, on get-rpt bodies served over HTTP by the simulator (a separate process, so its
CPU is not counted), through the connector's own code; each stage is timed with
`time.thread_time` around the calls the connector makes:

fetch thread   `PlatformClient.fetch` (httpx through connector.platform.wire, the deadline),
               less `parse_body`, which is shown on its own: the Python strict parse, or the
               native count (`rpt_native.count_body`); the spool append (fsync on, a temporary
               directory); room/level checks (statvfs); the fetch-side observations.
publish thread Python path: normalize, encode, keys, observations (the Counter of
               (rtime, stime, status)); native path: `RecordBuilder.build` (rpt_native); both:
               `AccountPublisher.produce_many` into a producer on a closed port (only the
               Python call and librdkafka's enqueue are timed), and the commit-side
               observations (Checkpoint + `observer.committed` per `max_batch_records`).

The best of `--runs` per stage (least disturbed by other processes on a shared machine).
`measure(reports)` returns the figures, `markdown(results)` the table.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # devharness/
sys.path.insert(0, str(REPO / "bench"))
from confluent_kafka import Producer  # noqa: E402

from connector.codec import body as body_module  # noqa: E402
from connector.codec import native  # noqa: E402
from connector.codec.avro import record_keys, single_object_encoder  # noqa: E402
from connector.codec.report import Normalizer, parse_body  # noqa: E402
from connector.config.settings import load_settings  # noqa: E402
from connector.kafka.checkpoint import Checkpoint  # noqa: E402
from connector.kafka.native_produce import RecordQueue, record_sender  # noqa: E402
from connector.kafka.publisher import AccountPublisher, Reachability  # noqa: E402
from connector.kafka.records import EntryRecords, RecordBuilder  # noqa: E402
from connector.observe.account import make_observer  # noqa: E402
from connector.observe.metrics import Metrics  # noqa: E402
from connector.observe.observer import AccountState, PollOutcome, SpoolLevel  # noqa: E402
from connector.observe.status import StatusBoard  # noqa: E402
from connector.platform import client as platform_module  # noqa: E402
from connector.platform.client import TOKEN_HEADER, PlatformClient  # noqa: E402
from connector.spool.index import SpoolEntry  # noqa: E402
from connector.spool.spool import Spool  # noqa: E402
from devharness import TOKEN, SimulatorProcess, Topics, token_args, write_config  # noqa: E402
from devharness.config import token_env_name  # noqa: E402

READ_CHUNK = 8 * 2**20  # what one publish round reads at most (pipeline._READ_CHUNK_BYTES)
ACCOUNT = "main"
BATCH = 20_000  # max_batch_records of the bench
STAGES = (  # (key, thread, label)
    (
        "fetch",
        "fetch",
        "get-rpt call: httpx request, wire transport, exchange (deadline), no parse",
    ),
    ("parse", "fetch", "parse_body: Python strict parse / native read-ahead (or count)"),
    ("spool", "fetch", "spool append (CRC, write, fsync)"),
    ("room", "fetch", "spool room + level (statvfs)"),
    ("fetch_obs", "fetch", "observations: polled, spooled, state"),
    ("read", "publish", "spool read (memory, or disk + CRC beyond the cache) + release"),
    ("reparse", "publish", "parse_body again where the memo was dropped (Python path)"),
    ("normalize", "publish", "normalize (Python path)"),
    ("encode", "publish", "encode (Python path)"),
    ("keys", "publish", "keys (Python path)"),
    ("observed", "publish", "observed (rtime, stime, status) Counter (Python path)"),
    ("build", "publish", "RecordBuilder.build, native (parse + normalize + encode + keys)"),
    (
        "produce",
        "publish",
        "produce_many, 3 headers per record, + poll(0): one native send "
        "per body (native path), one produce() per record (Python path)",
    ),
    ("commit_obs", "publish", "commit-side observations (Checkpoint, observer.committed)"),
)


class Clock:
    """Thread CPU seconds per stage."""

    def __init__(self) -> None:
        self.spent: Counter = Counter()

    def time(self, stage: str, call: Callable, *args: object, **kwargs: object) -> object:
        t0 = time.thread_time()
        out = call(*args, **kwargs)
        self.spent[stage] += time.thread_time() - t0
        return out


def _settings(workdir: Path, base_url: str) -> object:
    os.environ[token_env_name(ACCOUNT)] = TOKEN
    config = write_config(
        workdir / "connector.toml", base_url=base_url, bootstrap="127.0.0.1:9",
        topics=Topics.fresh("profile"), spool=workdir / "spool",
        overrides={"platform": {"read_timeout": "10s"}, "kafka": {"max_batch_records": BATCH}},
    )  # fmt: skip
    return load_settings(config)


def fetch_side(n: int, use_native: bool, clock: Clock, workdir: Path) -> Spool:
    """Drain a simulator preloaded with `n` reports into a spool, as the fetcher does (all of
    it first, as in `make bench`'s drain: the memo and body caches overflow as they do there)."""
    counter = body_module._count_native
    body_module._count_native = counter if use_native else None
    parse = platform_module.parse_body  # timed where the client calls it, inside the fetch
    platform_module.parse_body = lambda raw, *ahead: clock.time("parse", parse, raw, *ahead)
    simulator = SimulatorProcess(
        ["--seed", "1", *token_args({ACCOUNT: TOKEN}), "--reports", str(n)]
    )
    simulator.start()
    observer = make_observer(Metrics(accounts=[ACCOUNT]), StatusBoard([ACCOUNT]), ACCOUNT)
    try:
        settings = _settings(workdir, simulator.base_url)
        spool = Spool.open(workdir / f"spool-{use_native}", max_bytes=2**34, fsync=True)
        builder = RecordBuilder(ACCOUNT, Normalizer(ACCOUNT), single_object_encoder(), "msgid")
        ahead = builder.read_ahead if use_native else None  # the connector's read-ahead
        with PlatformClient(settings.platform, settings.accounts[0], 0, read_ahead=ahead) as client:
            got, last = 0, 0
            while got < n:
                fetch = clock.time("fetch", client.fetch, spool.memo_room() >= last)
                last = len(fetch.raw)
                count = fetch.body.count
                if not count:
                    raise RuntimeError(f"the simulator ran dry after {got} of {n} reports")
                got += count
                clock.time("room", spool.room, settings.platform.max_response_bytes)
                entry = clock.time(
                    "spool", spool.append, fetch.raw, fetched_at=fetch.fetched_at,
                    reports=count, memo=fetch.body,
                )  # fmt: skip
                level = clock.time("room", spool.level)
                clock.time("fetch_obs", _fetch_observations, observer, count, level)
                del entry
    finally:
        simulator.stop(60)
        body_module._count_native = counter
        platform_module.parse_body = parse
    clock.spent["fetch"] -= clock.spent["parse"]  # the parse calls ran inside the fetches
    return spool


def bare_httpx(n: int, clock: Clock, workdir: Path) -> int:
    """For comparison: the same get-rpt calls as a bare `httpx.Client.post` + body read through
    httpx's own transport (httpcore + h11; no deadline, no watchdog, no streaming), the
    connector's transport before connector.platform.wire; the reports it drained."""
    simulator = SimulatorProcess(
        ["--seed", "1", *token_args({ACCOUNT: TOKEN}), "--reports", str(n)]
    )
    simulator.start()
    try:
        settings = _settings(workdir, simulator.base_url)
        with httpx.Client(base_url=settings.platform.base_url, timeout=10) as client:
            headers, got = {TOKEN_HEADER: TOKEN}, 0
            retsize = {"retsize": settings.accounts[0].retsize or settings.platform.retsize}
            while got < n:
                t0 = time.thread_time()
                raw = client.post(settings.platform.path, json=retsize, headers=headers).content
                clock.spent["httpx_bare"] += time.thread_time() - t0
                got += parse_body(raw).count
    finally:
        simulator.stop(60)
    return got


def _fetch_observations(observer: object, count: int, level: object) -> None:
    observer.polled(PollOutcome.OK, duration=0.01, reports=count, attempt=0, next_in=0.0)
    observer.spooled(level)
    observer.state(AccountState.POLLING)


def publish_side(spool: Spool, use_native: bool, clock: Clock, settings: object) -> None:
    """Records from the spool as the publish loop makes them, produced, observed, released."""
    builder = RecordBuilder(ACCOUNT, Normalizer(ACCOUNT), single_object_encoder(), "msgid")
    if not use_native:
        builder._native = None
    publisher = AccountPublisher(
        settings.kafka, ACCOUNT, spool_id="profile", reachability=Reachability(60, _ignore)
    )
    config = {
        "bootstrap.servers": "127.0.0.1:9", "log_level": 0, "message.timeout.ms": 600_000,
        "queue.buffering.max.messages": 2_000_000, "queue.buffering.max.kbytes": 4_000_000,
        "client.id": "rpt-connector-profile", "error_cb": _ignore,
    }  # fmt: skip
    publisher._producer = Producer(config)
    # The native path's produce is one native call per body; the Python path's, produce().
    publisher._queue = RecordQueue(
        publisher._producer, config, record_sender if use_native else None
    )
    observer = make_observer(Metrics(accounts=[ACCOUNT]), StatusBoard([ACCOUNT]), ACCOUNT)
    ckpt, level, done = Checkpoint(0.2, BATCH), SpoolLevel(0, 0, 0, None, 2**30), 0
    while entries := clock.time("read", spool.entries_after, ckpt.last_seq or done, READ_CHUNK):
        for entry in entries:
            built = _build(builder, entry, use_native, clock)
            values, keys, headers = built.values, built.keys, builder.headers
            clock.time("produce", publisher.produce_many, "profile", values, keys, headers)
            clock.time("commit_obs", ckpt.add, entry.seq, built, time.monotonic())
            if ckpt.full or entry.seq == spool.last_seq:
                summary = ckpt.summary(0.01, time.time())
                clock.time("commit_obs", observer.committed, summary, level)
                clock.time("read", spool.release_through, ckpt.last_seq)
                ckpt, done = Checkpoint(0.2, BATCH), ckpt.last_seq
                publisher._producer.purge()  # nothing is sent: keep librdkafka's queue short
                publisher._producer.poll(0)
                break
    spool.close()
    publisher._producer.flush(0)


def _build(builder: RecordBuilder, entry: SpoolEntry, use_native: bool, clock: Clock) -> object:
    if use_native:
        return clock.time("build", builder.build, entry)
    out = EntryRecords()
    if entry.memo is not None:
        reports = entry.memo.reports
    else:  # as RecordBuilder.build: the body parsed again, on the pure-Python path
        reports = clock.time("reparse", _python_reports, entry.body)
    fetched_at_ms = round(entry.fetched_at * 1000)
    batch = clock.time("normalize", builder._normalizer.normalize_batch, reports, fetched_at_ms)
    out.values = clock.time("encode", builder._encoder.encode_batch, batch.records)
    out.keys = clock.time("keys", record_keys, batch.records, "msgid")
    observed = ((r["rtime"], r["stime"], r["status"]) for r in batch.records)
    clock.time("observed", out.observed.update, observed)
    return out


def _python_reports(raw: bytes) -> list[dict]:
    counter, body_module._count_native = body_module._count_native, None  # RPT_NATIVE=0
    try:
        return parse_body(raw).reports
    finally:
        body_module._count_native = counter


def _ignore(*_args: object) -> None:
    return None


def measure(reports: int = 100_000, runs: int = 3) -> dict:
    """µs of thread CPU per report per stage, best of `runs`, for both record paths."""
    paths = ["python"] + (["native"] if native.rpt_native is not None else [])
    best: dict[str, dict[str, float]] = {path: {} for path in paths}
    load = [os.getloadavg()[0]]
    for _ in range(runs):
        for path in paths:
            clock = Clock()
            with tempfile.TemporaryDirectory(prefix="rpt-profile-") as tmp:
                spool = fetch_side(reports, path == "native", clock, Path(tmp))
                settings = _settings(Path(tmp), "http://127.0.0.1:9")
                publish_side(spool, path == "native", clock, settings)
            for stage, seconds in clock.spent.items():
                us = seconds / reports * 1e6
                best[path][stage] = min(best[path].get(stage, us), us)
        clock = Clock()
        with tempfile.TemporaryDirectory(prefix="rpt-profile-") as tmp:
            drained = bare_httpx(max(reports // 4, 500), clock, Path(tmp))
        us = clock.spent["httpx_bare"] / drained * 1e6
        for path in paths:
            best[path]["httpx_bare"] = min(best[path].get("httpx_bare", us), us)
    load.append(os.getloadavg()[0])
    return {"reports": reports, "runs": runs, "load_average": load, "stages": best}


def markdown(results: dict) -> str:
    """The per-stage table, with totals per thread and path."""
    paths = list(results["stages"])
    head = " | ".join(f"{p} path µs/report" for p in paths)
    lines = [f"| thread | stage | {head} |", "|---|---|" + "---:|" * len(paths)]
    totals: dict[tuple[str, str], float] = Counter()
    for key, thread, label in STAGES:
        cells = []
        for path in paths:
            value = results["stages"][path].get(key)
            cells.append("–" if value is None else f"{value:.2f}")
            totals[path, thread] += value or 0.0
        lines.append(f"| {thread} | {label} | {' | '.join(cells)} |")
    bare = " | ".join(f"({results['stages'][p].get('httpx_bare', 0.0):.2f})" for p in paths)
    lines.append(
        "| fetch | for comparison, not in the totals: a bare httpx post + read, httpx's own "
        f"transport | {bare} |"
    )
    for thread in ("fetch", "publish"):
        cells = " | ".join(f"**{totals[p, thread]:.2f}**" for p in paths)
        lines.append(f"| {thread} | **{thread} thread, in all** | {cells} |")
    cells = " | ".join(f"**{totals[p, 'fetch'] + totals[p, 'publish']:.2f}**" for p in paths)
    lines.append(f"| both | **per report, both threads** | {cells} |")
    load = ", ".join(f"{x:.1f}" for x in results["load_average"])
    caption = (
        f"`bench/stages.py`: {results['reports']:,} reports, best of {results['runs']} runs, "
        f"thread CPU per stage; load average {load} (start, end)."
    )
    return caption + "\n\n" + "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(markdown(measure(args.reports, args.runs)))


if __name__ == "__main__":
    main()
