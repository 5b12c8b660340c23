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


def uncommitted(metrics_url: str) -> float:
    text = run.httpx.get(f"{metrics_url}/metrics", timeout=5).text
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
    topics = run.Topics.fresh()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        simulator, base_url = run.start_simulator(*sim_args)
        config = workdir / "connector.toml"
        run.write_config(config, base_url, bootstrap, topics, "exactly_once", commit_ms=100)
        connector, metrics_url, _log = run.start_connector(workdir, config)
        samples: list[float] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(SAMPLE_S):
                samples.append(uncommitted(metrics_url))

        sampler = threading.Thread(target=sample, daemon=True)
        try:
            run.wait_for(lambda: run.published(metrics_url) > 0, 60, 0.05, "a first commit")
            sampler.start()
            time.sleep(seconds)
        finally:
            stop.set()
            run.stop(connector)
            run.stop(simulator)
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
