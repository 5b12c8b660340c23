"""What a topic takes on the broker's disk: the bytes of its partitions' `.log` segment files.

That is what `kafka-log-dirs --describe` reports as a partition's size (the record batches as
stored, after the broker's compression, transaction markers included; not the indexes). Kafka
appends to the active segment with a plain write() when it handles a produce request (no
preallocation: `file.preallocate` is false), so a file's size is the bytes written as soon as
the broker answered, fsync or not. The one write that lags is a transaction's commit marker,
which the coordinator sends to the partitions just after EndTxn returns: `settled_topic_bytes`
waits until the size stops changing.

Used by bench/run.py (`make bench`) and bench/archive_cost.py.
"""

from __future__ import annotations

import time
from pathlib import Path


def topic_bytes(data_dir: Path, topic: str) -> int:
    """Sum of the `.log` segment sizes of `topic`'s partition folders (`<topic>-<n>`)."""
    dirs = [d for d in data_dir.iterdir() if d.is_dir() and d.name.rsplit("-", 1)[0] == topic]
    return sum(f.stat().st_size for d in dirs for f in d.glob("*.log"))


def settled_topic_bytes(
    data_dir: Path, topics: list[str], interval: float = 0.5, timeout: float = 30.0
) -> dict[str, int]:
    """`topic_bytes` of each topic, once two reads `interval` apart agree (the last commit
    markers written); the last read if they still change after `timeout`."""
    deadline = time.monotonic() + timeout
    sizes = {topic: topic_bytes(data_dir, topic) for topic in topics}
    while time.monotonic() < deadline:
        time.sleep(interval)
        again = {topic: topic_bytes(data_dir, topic) for topic in topics}
        if again == sizes:
            break
        sizes = again
    return sizes
