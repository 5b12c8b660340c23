"""What the raw archive costs: broker bytes per report (zstd) and connector CPU per report.

    .venv/bin/python bench/archive_cost.py [--reports 50000] [--retsize 500]

Starts its own devkafka broker ("archive-cost"), then twice (archive on, archive off): a
simulator preloaded with N reports, `python -m connector run` on fresh topics until every
report is published, the connector's CPU (utime+stime from /proc) read just before SIGTERM.
Broker bytes: the sizes of the topic partitions' .log segment files in the broker's data dir
(bench/broker_bytes.py, shared with `make bench`). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]
from broker_bytes import settled_topic_bytes  # noqa: E402
from harness import (  # noqa: E402
    TOKEN,
    ConnectorProcess,
    SimulatorProcess,
    Topics,
    connector_env,
    write_config,
)

from devkafka.devkafka import Broker  # noqa: E402

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def one_run(broker: Broker, workdir: Path, reports: int, retsize: int, archive: bool) -> dict:
    topics = Topics.fresh()
    raw = f"{topics.data}.raw" if archive else ""
    simulator = SimulatorProcess(
        ["--token", f"main={TOKEN}", "--reports", str(reports), "--seed", "1"]
    ).start()
    config = write_config(
        workdir / f"c-{uuid.uuid4().hex[:6]}.toml", base_url=simulator.base_url,
        bootstrap=broker.bootstrap, topics=topics, spool=workdir / uuid.uuid4().hex[:6],
    )  # fmt: skip
    text = config.read_text().replace("[kafka]\n", f'[kafka]\narchive_topic = "{raw}"\n', 1)
    config.write_text(text.replace("poll_interval", f"retsize = {retsize}\npoll_interval", 1))
    connector = ConnectorProcess(config, workdir / "connector.log", env=connector_env()).start()
    try:
        simulator.wait_drained(timeout=600)
        time.sleep(2.0)  # the last commit
        cpu = cpu_seconds(connector.process.pid)
        assert connector.terminate() == 0
    finally:
        if connector.alive():
            connector.kill()
        simulator.stop()
    sizes = settled_topic_bytes(broker.data_dir, [topics.data, raw] if archive else [topics.data])
    out = {"archive": archive, "cpu_s": cpu, "cpu_us_per_report": cpu / reports * 1e6,
           "data_bytes": sizes[topics.data]}  # fmt: skip
    if archive:
        out["archive_bytes"] = sizes[raw]
        out["archive_bytes_per_report"] = out["archive_bytes"] / reports
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=50_000)
    parser.add_argument("--retsize", type=int, default=500)
    args = parser.parse_args()
    broker = Broker("archive-cost")
    broker.start()
    workdir = Path(f"/tmp/archive-cost-{uuid.uuid4().hex[:6]}")
    workdir.mkdir()
    try:
        runs = [one_run(broker, workdir, args.reports, args.retsize, a) for a in (True, False)]
    finally:
        broker.stop()
        broker.wipe()
    on, off = runs
    print(json.dumps({
        "reports": args.reports, "retsize": args.retsize, "load_1m": os.getloadavg()[0],
        "runs": runs,
        "cpu_us_per_report_added": on["cpu_us_per_report"] - off["cpu_us_per_report"],
    }, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
