"""Throughput of normalize + encode on get-rpt batches shaped like the API's example.

    .venv/bin/python bench/codec_bench.py [--batches 40] [--runs 7] [--rate 100] [--max-delay 120]

Each batch holds 500 reports decoded by msgspec from a get-rpt body (so msgid is a JSON integer
beyond int64). Batches follow one another in time: the account receives `--rate` reports per
second (rtime), each sent 1 to `--max-delay` seconds earlier (stime), so every batch brings new
timestamp strings (their count per batch is printed). A fresh Normalizer per run starts with a
cold cache. Prints reports/s (and µs/report) of CPU time of this process, i.e. on one core, so
a busy machine distorts it less than wall time (median, min and max of the runs), for
normalize, encode and both; then, in the same run, a whole spool entry turned into Kafka keys,
values and observations (`RecordBuilder.build`) on the pure-Python path (normalize + encode
from the fetcher's parsed body) and on the native path (rpt_native, from the raw bytes), and
the fetcher's parse (`report.parse_body`), which stays in Python on the fetch thread.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from datetime import datetime, timedelta

import msgspec

from connector.codec import native
from connector.codec.avro import single_object_encoder
from connector.codec.report import Normalizer, parse_body
from connector.kafka.records import RecordBuilder

BATCH_SIZE = 500
START = datetime(2016, 8, 4, 17, 38, 55)


def make_bodies(batches: int, rate: float, max_delay: int, seed: int = 7) -> list[bytes]:
    rng = random.Random(seed)
    bodies = []
    for b in range(batches):
        rpts = []
        for i in range(BATCH_SIZE):
            received = START + timedelta(seconds=int((b * BATCH_SIZE + i) / rate))
            sent = received - timedelta(seconds=rng.randint(1, max_delay))
            ok = rng.random() < 0.9
            rpts.append({
                "msgid": 9223372045854775808 + b * BATCH_SIZE + i,
                "custid": f"{rng.getrandbits(80):020x}",
                "pknum": 1,
                "pktotal": rng.choice((1, 1, 1, 2)),
                "mobile": f"138{rng.randrange(10**8):08d}",
                "countrycode": 86,
                "spno": "1000457890006",
                "exno": "0006",
                "stime": f"{sent:%Y-%m-%d %H:%M:%S}",
                "rtime": f"{received:%Y-%m-%d %H:%M:%S}",
                "status": 0 if ok else 1,
                "errcode": "DELIVRD" if ok else "UNDELIV",
                "errdesc": "success" if ok else "undelivered",
                "exdata": f"exdata{rng.randrange(10000):04d}",
            })  # fmt: skip
        body = {"result": 0, "desc": "%e6%88%90%e5%8a%9f", "rpts": rpts}
        bodies.append(msgspec.json.encode(body))
    return bodies


def run_once(bodies: list[bytes]) -> tuple[float, float]:
    """Seconds spent normalizing and encoding every batch, with a fresh normalizer (cold cache)."""
    normalizer = Normalizer("bench-account")
    encoder = single_object_encoder()
    reports = [msgspec.json.decode(body)["rpts"] for body in bodies]
    t_norm = t_enc = 0.0
    for batch_reports in reports:
        t0 = time.process_time()
        batch = normalizer.normalize_batch(batch_reports, 1470303600000)
        t1 = time.process_time()
        encoder.encode_batch(batch.records)
        t2 = time.process_time()
        t_norm += t1 - t0
        t_enc += t2 - t1
        assert not batch.rejected
    return t_norm, t_enc


class Entry:
    """A spool entry as the publisher gets it: the raw body and the fetcher's parsed memo."""

    def __init__(self, seq: int, body: bytes) -> None:
        self.seq, self.fetched_at, self.body, self.note = seq, 1470303600.0, body, None
        self.memo = parse_body(body)


def run_builders(bodies: list[bytes]) -> dict[str, float]:
    """Seconds of `parse_body` and of `RecordBuilder.build`, Python and native, per run."""
    entries = [Entry(seq, body) for seq, body in enumerate(bodies)]
    builders = {
        "build, Python": RecordBuilder("bench-account", Normalizer("bench-account"),
                                       single_object_encoder(), "msgid"),
        "build, native": RecordBuilder("bench-account", Normalizer("bench-account"),
                                       single_object_encoder(), "msgid"),
    }  # fmt: skip
    builders["build, Python"]._native = None
    out = {}
    t0 = time.process_time()
    for body in bodies:
        parse_body(body)
    out["parse (fetcher)"] = time.process_time() - t0
    for label, builder in builders.items():
        t0 = time.process_time()
        for entry in entries:
            assert not builder.build(entry).dead_letters
        out[label] = time.process_time() - t0
    return out


def report(label: str, rates: list[float], runs: int) -> None:
    median = statistics.median(rates)
    print(f"{label:>17}: {median:>9,.0f} reports/s = {1e6 / median:.2f} µs/report "
          f"(median of {runs}; min {min(rates):,.0f}, max {max(rates):,.0f})")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--rate", type=float, default=100.0, help="reports/s per account")
    parser.add_argument("--max-delay", type=int, default=120, help="seconds from stime to rtime")
    args = parser.parse_args()
    bodies = make_bodies(args.batches, args.rate, args.max_delay)
    n = args.batches * BATCH_SIZE
    first = msgspec.json.decode(bodies[0])["rpts"]
    distinct = len({r["stime"] for r in first} | {r["rtime"] for r in first})
    print(f"{args.batches} batches of {BATCH_SIZE}; {distinct} distinct time strings per batch")
    results = [run_once(bodies) for _ in range(args.runs)]
    for label, pick in (
        ("normalize", lambda r: r[0]),
        ("encode", lambda r: r[1]),
        ("normalize+encode", lambda r: r[0] + r[1]),
    ):
        report(label, [n / pick(r) for r in results], args.runs)
    if native.rpt_native is None:
        print("rpt_native is not installed: no native figures")
        return
    built = [run_builders(bodies) for _ in range(args.runs)]
    for label in built[0]:
        report(label, [n / b[label] for b in built], args.runs)


if __name__ == "__main__":
    main()
