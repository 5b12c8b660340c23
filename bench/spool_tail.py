"""What a lost spool disk can cost: the uncommitted tail, sampled while the connector runs.

The spool holds every fetched report until its Kafka transaction commits. If the disk under
`spool.dir` were lost (not the process: a restart replays it), the reports fetched but not yet
committed at that moment would be gone. This samples that tail, `rpt_reports_fetched_total`
minus published and dead-lettered reports, every 20 ms, under a steady offered load and under
a full backlog, with the default `commit_interval`.

    .venv/bin/python bench/spool_tail.py            # prints one line per scenario
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import run  # bench/run.py: broker, simulator and connector helpers

SAMPLE_S = 0.02


def uncommitted(endpoints: run.Endpoints) -> float:
    text = endpoints.metrics_text()
    fetched = _sum(text, "rpt_reports_fetched_total")
    published = _sum(text, "rpt_records_published_total")
    dead = _sum(text, "rpt_dead_letters_total")
    return fetched - published - dead


def _sum(text: str, series: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(series + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def scenario(bootstrap: str, name: str, sim_args: list[str], seconds: float) -> dict:
    topics = run.Topics.fresh("bench")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        simulator = run.start_simulator(*sim_args)
        config = run.bench_config(
            workdir, simulator.base_url, bootstrap, topics, "exactly_once", commit_ms=100
        )
        connector, endpoints = run.start_connector(workdir, config)
        samples: list[float] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(SAMPLE_S):
                samples.append(uncommitted(endpoints))

        sampler = threading.Thread(target=sample, daemon=True)
        try:
            run.wait_until(lambda: run.published(endpoints) > 0, 60, "a first commit", 0.05)
            sampler.start()
            time.sleep(seconds)
        finally:
            stop.set()
            connector.stop()
            simulator.stop(60)
        run.delete_topics(bootstrap, topics.all())
    samples.sort()
    return {
        "scenario": name,
        "samples": len(samples),
        "median": statistics.median(samples),
        "p99": samples[int(len(samples) * 0.99) - 1],
        "max": samples[-1],
    }


def main() -> int:
    broker = run.Broker("bench")
    bootstrap = broker.start()
    try:
        results = [
            scenario(bootstrap, "offered 5,000/s", ["--rate", "5000"], 20),
            scenario(bootstrap, "full backlog", ["--reports", "1500000"], 15),
        ]
    finally:
        broker.stop()
    for r in results:
        print(
            f"{r['scenario']:>16}: uncommitted reports median {r['median']:.0f}, "
            f"p99 {r['p99']:.0f}, max {r['max']:.0f} ({r['samples']} samples)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
