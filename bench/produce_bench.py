"""Python cost of handing records to librdkafka: `produce` per record vs `produce_batch`.

    .venv/bin/python bench/produce_bench.py [--records 200000] [--runs 5]

No broker is needed: the producer points at a closed port, so every record stays in
librdkafka's local queue and only the call (argument parsing, copying into the queue) is
timed, in CPU seconds of this process. Values are 120-byte Avro-sized payloads with 20-byte
keys; `produce` is timed with the connector's three record headers (the same list object every
call, as the connector passes them; a new list per call; a dict — a tuple is refused) and
without any, since `produce_batch` takes no headers (confluent-kafka 2.x: "Message headers
are not currently supported in batch mode"). The batch figure includes building its list of
dicts.
"""

from __future__ import annotations

import argparse
import statistics
import time

from confluent_kafka import Producer

HEADERS = [
    ("account", b"bench-account"),
    ("content-type", b"application/vnd.apache.avro+binary; encoding=single-object"),
    ("schema-fingerprint", b"0123456789abcdef"),
]
TOPIC = "bench"
CHUNK = 500  # reports per get-rpt answer, the unit the connector produces


def producer() -> Producer:
    return Producer({
        "bootstrap.servers": "127.0.0.1:9",  # nothing listens: records stay queued
        "queue.buffering.max.messages": 2_000_000,
        "queue.buffering.max.kbytes": 2_000_000,
        "message.timeout.ms": 600_000,
        "linger.ms": 100,
    })  # fmt: skip


def per_record(
    values: list[bytes], keys: list[bytes], headers: object, *, copy: bool = False
) -> float:
    """One produce() per record; the same headers object each time (as the connector passes
    RecordBuilder.headers), or with `copy` a new list per call."""
    p = producer()
    produce, poll = p.produce, p.poll
    t0 = time.process_time()
    for start in range(0, len(values), CHUNK):
        for value, key in zip(
            values[start : start + CHUNK], keys[start : start + CHUNK], strict=True
        ):
            produce(TOPIC, value, key, 0, headers=list(headers) if copy else headers)
        poll(0)
    spent = time.process_time() - t0
    p.purge()
    return spent


def batched(values: list[bytes], keys: list[bytes]) -> float:
    p = producer()
    t0 = time.process_time()
    for start in range(0, len(values), CHUNK):
        chunk = zip(values[start : start + CHUNK], keys[start : start + CHUNK], strict=True)
        messages = [{"value": v, "key": k} for v, k in chunk]
        queued = p.produce_batch(TOPIC, messages, partition=0)
        assert queued == len(messages), messages[0].get("_error")
        p.poll(0)
    spent = time.process_time() - t0
    p.purge()
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    n = args.records
    values = [bytes([i % 251]) * 120 for i in range(n)]
    keys = [f"{i:020x}".encode() for i in range(n)]
    cases = {
        "produce + 3 headers": lambda: per_record(values, keys, HEADERS),
        "a new list per call": lambda: per_record(values, keys, HEADERS, copy=True),
        "headers as a dict": lambda: per_record(values, keys, dict(HEADERS)),
        "produce, no headers": lambda: per_record(values, keys, None),
        "produce_batch": lambda: batched(values, keys),
    }
    for label, run in cases.items():
        rates = [n / run() for _ in range(args.runs)]
        median = statistics.median(rates)
        print(f"{label:>20}: {1e6 / median:.2f} µs/record ({median:,.0f}/s; median of "
              f"{args.runs}, min {min(rates):,.0f}, max {max(rates):,.0f})")  # fmt: skip


if __name__ == "__main__":
    main()
