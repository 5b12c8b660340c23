"""The fetch side's cost per report, and what handing bodies to a second thread adds.

    .venv/bin/python bench/fetch_bench.py [--reports 100000] [--runs 3]

Against a preloaded simulator (a separate process, so its CPU is not counted), one httpx
client drains get-rpt (POST, retsize 500) and each body is turned into records:

* `fetch`: thread CPU of `client.post` + reading the body (httpx);
* `parse`: `report.parse_body`, what the fetch thread does before spooling;
* `build`: `RecordBuilder.build` (Python path, or rpt_native) on that entry;
* one thread vs two: the same work done in one thread, then split as the connector splits
  it (a fetch thread handing each body through a queue to a publishing thread); the
  difference in process CPU per report is the cost of the hand-off (GIL switches, wake-ups).

CPU seconds of this process (or of the thread) per report, median of the runs.
"""

from __future__ import annotations

import argparse
import queue
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from codec_bench import Entry
from floor import RETSIZE, TOKEN_HEADER
from run import TOKEN, start_simulator, stop

from connector.codec.avro import single_object_encoder
from connector.codec.report import Normalizer, parse_body
from connector.kafka.records import RecordBuilder

PATH = "/client-sms/v2/sms/get-rpt"


def builder(native: bool) -> RecordBuilder:
    out = RecordBuilder("main", Normalizer("main"), single_object_encoder(), "msgid")
    if not native:
        out._native = None
    return out


def bodies(client: httpx.Client, expected: int, spent: dict[str, float]) -> Iterator[Entry]:
    """Yield get-rpt bodies until `expected` reports came; thread CPU of each request."""
    got = 0
    while got < expected:
        t0 = time.thread_time()
        raw = client.post(PATH, json={"retsize": str(RETSIZE)}, headers={TOKEN_HEADER: TOKEN})
        raw = raw.content
        t1 = time.thread_time()
        parsed = parse_body(raw)
        spent["fetch"] += t1 - t0
        spent["parse"] += time.thread_time() - t1
        if not parsed.count:
            raise RuntimeError(f"simulator ran dry after {got} of {expected} reports")
        got += parsed.count
        entry = Entry(got, raw)
        entry.memo = parsed
        yield entry


def one_thread(n: int, native: bool) -> dict[str, float]:
    spent = {"fetch": 0.0, "parse": 0.0, "build": 0.0}
    make = builder(native)
    simulator, url = start_simulator("--reports", str(n))
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            c0 = time.process_time()
            for entry in bodies(client, n, spent):
                t0 = time.thread_time()
                make.build(entry)
                spent["build"] += time.thread_time() - t0
            spent["process"] = time.process_time() - c0
    finally:
        stop(simulator)
    return {k: v / n * 1e6 for k, v in spent.items()}


def two_threads(n: int, native: bool) -> float:
    make = builder(native)
    handed: queue.Queue = queue.Queue(maxsize=16)
    spent = {"fetch": 0.0, "parse": 0.0}
    simulator, url = start_simulator("--reports", str(n))

    def publish() -> None:
        while (entry := handed.get()) is not None:
            make.build(entry)

    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            worker = threading.Thread(target=publish)
            c0 = time.process_time()
            worker.start()
            for entry in bodies(client, n, spent):
                handed.put(entry)
            handed.put(None)
            worker.join()
            return (time.process_time() - c0) / n * 1e6
    finally:
        stop(simulator)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    for native in (False, True):
        label = "native" if native else "Python"
        singles = [one_thread(args.reports, native) for _ in range(args.runs)]
        doubles = [two_threads(args.reports, native) for _ in range(args.runs)]
        parts = {k: statistics.median(s[k] for s in singles) for k in singles[0]}
        split = statistics.median(doubles)
        print(f"{label:>6} build: fetch {parts['fetch']:.2f}, parse {parts['parse']:.2f}, "
              f"build {parts['build']:.2f} µs/report; process CPU one thread "
              f"{parts['process']:.2f}, two threads {split:.2f} (hand-off "
              f"{split - parts['process']:+.2f}) µs/report")  # fmt: skip


if __name__ == "__main__":
    main()
