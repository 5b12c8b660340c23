"""`make bench`: the connector end to end against a local broker and the simulator.

    .venv/bin/python bench/run.py [--quick] [--reports N] [--runs 3] [--modes exactly_once,...]

A dedicated devkafka broker ("bench") is started and stopped. Per run: a simulator preloaded
with N reports, `python -m connector run` on fresh topics, timed from the first get-rpt answer
(the simulator's handed_out leaves 0) to the commit that publishes the last report (the
connector's rpt_records_published_total reaches N). The connector's CPU (utime+stime from
/proc) is taken over that window; peak RSS is VmHWM just before it is stopped; the broker
bytes of the data and archive topics (their partitions' .log files, bench/broker_bytes.py)
once it has stopped, before the run's topics are deleted. exactly_once runs with and without
the raw archive topic in each round (`--archive both`), on the pure-Python path
(RPT_NATIVE=0, `--no-python-path` leaves it out) and with kafka.record_headers = false
(`--no-headers-run` leaves it out). Then the
librdkafka floor, the simulator's serve rate and a latency scenario (simulator in rate mode,
a read_committed consumer timing fetched_at → visible). Writes bench/results/<stamp>.json,
bench/results/latest.json and BENCHMARKS.md. Last, on the same broker, bench/accounts.py (1 to
1,000 accounts on one instance with `kafka.shared_producer`; its own JSON and plot; `--skip
accounts` leaves it out).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import confluent_kafka
import floor
import stages
from broker_bytes import settled_topic_bytes
from confluent_kafka import Consumer
from summary import save, summarize

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the process harness, devharness/ (it also finds devkafka/)
from connector.codec.avro import decode_single_object  # noqa: E402
from connector.config.settings import KafkaSettings  # noqa: E402
from connector.kafka.publisher import ensure_topics  # noqa: E402
from devharness import (  # noqa: E402
    TOKEN,
    Broker,
    ConnectorProcess,
    Endpoints,
    SimulatorProcess,
    Topics,
    delete_topics,
    token_args,
    wait_until,
    write_config,
)
from devkafka import kafka_version  # noqa: E402

BATCH = 20_000
PARTITIONS = 6
_TICK = os.sysconf("SC_CLK_TCK")


# --- processes (devharness) ------------------------------------------------------------------
def start_simulator(*args: str) -> SimulatorProcess:
    return SimulatorProcess(["--seed", "1", *token_args({"main": TOKEN}), *args]).start()


def bench_config(workdir: Path, base_url: str, bootstrap: str, topics: Topics, delivery: str,
                 archive: str, commit_ms: int = 200, headers: bool = True) -> Path:  # fmt: skip
    """The harness config with the production-like parts a benchmark needs: fsync, big batches;
    `archive` is kafka.archive_topic ("" = none), `headers` kafka.record_headers."""
    return write_config(
        workdir / "connector.toml", base_url=base_url, bootstrap=bootstrap, topics=topics,
        spool=workdir / "spool", delivery=delivery,
        overrides={
            "platform": {"read_timeout": "10s"},
            "kafka": {"commit_interval": f"{commit_ms}ms", "max_batch_records": BATCH,
                      "topic_partitions": PARTITIONS, "archive_topic": archive,
                      "record_headers": headers},
            "spool": {"fsync": True},
        },
    )  # fmt: skip


def kafka_settings(bootstrap: str, topics: Topics) -> KafkaSettings:
    return KafkaSettings(
        topic=topics.data, dlq_topic=topics.dlq, progress_topic=topics.progress,
        topic_partitions=PARTITIONS, producer={"bootstrap.servers": bootstrap},
    )  # fmt: skip


def start_connector(workdir: Path, config: Path) -> tuple[ConnectorProcess, Endpoints]:
    connector = ConnectorProcess(config, workdir / "connector.log").start()
    return connector, Endpoints(connector.metrics_base_url())


def cpu_seconds(pid: int, task: int | None = None) -> float:
    path = f"/proc/{pid}/stat" if task is None else f"/proc/{pid}/task/{task}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime


def librdkafka_cpu(pid: int) -> dict[int, float]:
    """CPU seconds per live librdkafka thread (librdkafka names its threads "rdk:...")."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):
            if (task / "comm").read_text().startswith("rdk:"):
                out[int(task.name)] = cpu_seconds(pid, int(task.name))
    return out


def peak_rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024


def published(endpoints: Endpoints) -> float:
    return endpoints.metric("rpt_records_published_total", default=0.0)


def transactions(endpoints: Endpoints) -> dict:
    """How many commits the run took and how long the average one blocked the publisher."""
    count = endpoints.metric("rpt_transaction_duration_seconds_count", default=0.0)
    total = endpoints.metric("rpt_transaction_duration_seconds_sum", default=0.0)
    return {"commits": count, "commit_ms_mean": total / count * 1000 if count else None}


def archive_topic(topics: Topics, with_archive: bool) -> str:
    """The run's own archive topic (the connector creates it, zstd), or "" for none."""
    return f"{topics.data}.raw" if with_archive else ""


def broker_bytes(broker: Broker, topics: Topics, archive: str, n: int) -> dict:
    """Bytes per report the run left on the broker's disk: data topic, and archive topic."""
    names = [topics.data, *([archive] if archive else [])]
    sizes = settled_topic_bytes(broker.data_dir, names)
    out = {"data_bytes": sizes[topics.data], "data_bytes_per_report": sizes[topics.data] / n}
    if archive:
        out |= {"archive_bytes": sizes[archive], "archive_bytes_per_report": sizes[archive] / n}
    return out


# --- scenarios ---------------------------------------------------------------------------------
def connector_run(
    broker: Broker, n: int, delivery: str, with_archive: bool, headers: bool = True
) -> dict:
    """One end-to-end run; the figures of the window first fetch → last commit, then the
    topics' bytes on the broker."""
    bootstrap, broker_pid = broker.bootstrap, broker.pid
    topics = Topics.fresh("bench")
    archive = archive_topic(topics, with_archive)
    ensure_topics(kafka_settings(bootstrap, topics), topics.all())
    simulator = start_simulator("--reports", str(n))
    with tempfile.TemporaryDirectory(prefix="rpt-bench-") as tmp:
        workdir = Path(tmp)
        config = bench_config(
            workdir, simulator.base_url, bootstrap, topics, delivery, archive, headers=headers
        )
        connector, endpoints = start_connector(workdir, config)
        try:
            wait_until(lambda: simulator.stats()["handed_out"] > 0, 120, "a first fetch", 0.005)
            t0, cpu0 = time.perf_counter(), cpu_seconds(connector.pid)
            rdk0 = librdkafka_cpu(connector.pid)
            bcpu0 = cpu_seconds(broker_pid)
            # Polling /metrics costs the connector CPU: only once the simulator is drained.
            wait_until(lambda: simulator.stats()["pending"] == 0, 1800, "a drained simulator", 0.05)
            wait_until(lambda: published(endpoints) >= n, 600, "the last commit", 0.01)
            elapsed = time.perf_counter() - t0
            cpu = cpu_seconds(connector.pid) - cpu0
            rdk = sum(c - rdk0.get(t, 0.0) for t, c in librdkafka_cpu(connector.pid).items())
            result = {
                "delivery": delivery, "reports": n, "seconds": elapsed,
                "reports_per_s": n / elapsed, "cpu_us_per_report": cpu / n * 1e6,
                "cpu_seconds": cpu, "cpu_seconds_total": cpu_seconds(connector.pid),
                "librdkafka_cpu_us_per_report": rdk / n * 1e6,
                "broker_cpu_us_per_report": (cpu_seconds(broker_pid) - bcpu0) / n * 1e6,
                "peak_rss_mib": peak_rss_mib(connector.pid), **transactions(endpoints),
            }  # fmt: skip
        except BaseException:
            print(connector.output()[-3000:], file=sys.stderr)
            raise
        finally:
            connector.stop()
            simulator.stop(60)
    result |= broker_bytes(broker, topics, archive, n)
    delete_topics(bootstrap, [*topics.all(), *([archive] if archive else [])])
    return result


def floor_once(bootstrap: str, payloads: floor.Payloads) -> dict[str, dict]:
    """One idempotent, one transactional and one transactional floor run with native
    produce, each on a fresh topic."""
    out = {}
    n = len(payloads.values)
    for kind in ("idempotent", "transactional", "transactional_native"):
        topics = Topics.fresh("bench")
        ensure_topics(kafka_settings(bootstrap, topics), [topics.data])
        if kind == "idempotent":
            timed = floor.idempotent_floor(bootstrap, topics.data, payloads)
        elif kind == "transactional":
            timed = floor.transactional_floor(bootstrap, topics.data, payloads, BATCH)
        else:
            timed = floor.transactional_native_floor(bootstrap, topics.data, payloads, BATCH)
        out[kind] = {
            "reports": n, "seconds": timed.seconds, "reports_per_s": n / timed.seconds,
            "cpu_us_per_report": timed.cpu_seconds / n * 1e6,
        }  # fmt: skip
        delete_topics(bootstrap, [topics.data])
    return out


def serve_runs(n: int, runs: int) -> list[dict]:
    out = []
    for _ in range(runs):
        simulator = start_simulator("--reports", str(n))
        try:
            timed = floor.drain_simulator(simulator.base_url, TOKEN, n)
        finally:
            simulator.stop(60)
        out.append({"reports": n, "seconds": timed.seconds, "reports_per_s": n / timed.seconds})
    return out


def latency_run(bootstrap: str, rate: int, seconds: int, commit_ms: int) -> dict:
    """Offered load `rate`/s; latency = when a read_committed consumer sees a report − fetched_at.

    That is fetch → commit plus the consumer's own fetch delay (≤ fetch.wait.max.ms = 10 ms):
    the consumer takes each message as it arrives (poll, not a batch call that would hold the
    first message until 1,000 are in or its timeout passes).
    """
    topics = Topics.fresh("bench")
    ensure_topics(kafka_settings(bootstrap, topics), topics.all())
    total = rate * seconds
    latencies: list[float] = []
    done = threading.Event()
    consumer_thread = threading.Thread(
        target=_consume_latencies, args=(bootstrap, topics.data, total, latencies, done)
    )
    consumer_thread.start()
    # The load begins with the connector's first get-rpt: a backlog piled up while it started
    # would be a catch-up, not 5,000/s.
    simulator = start_simulator(
        "--rate", str(rate), "--rate-total", str(total), "--rate-from-first-poll"
    )
    archive = archive_topic(topics, True)  # as deployed: the archive is on by default
    with tempfile.TemporaryDirectory(prefix="rpt-bench-") as tmp:
        workdir = Path(tmp)
        config = bench_config(
            workdir, simulator.base_url, bootstrap, topics, "exactly_once", archive, commit_ms
        )
        connector, _endpoints = start_connector(workdir, config)
        try:
            consumer_thread.join(seconds * 4 + 60)
        finally:
            done.set()
            consumer_thread.join()
            connector.stop()
            simulator.stop(60)
    delete_topics(bootstrap, [*topics.all(), archive])
    latencies.sort()
    return {
        "offered_per_s": rate, "commit_interval_ms": commit_ms,
        "reports": len(latencies), "expected": total,
        "p50_ms": _percentile(latencies, 0.50) * 1000,
        "p99_ms": _percentile(latencies, 0.99) * 1000,
        "max_ms": latencies[-1] * 1000 if latencies else None,
    }  # fmt: skip


def _consume_latencies(
    bootstrap: str, topic: str, total: int, out: list[float], done: threading.Event
) -> None:
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex[:8]}",
        "isolation.level": "read_committed", "auto.offset.reset": "earliest",
        "enable.auto.commit": False, "fetch.wait.max.ms": 10,
    })  # fmt: skip
    consumer.subscribe([topic])
    try:
        while len(out) < total and not done.is_set():
            message = consumer.poll(0.1)
            if message is not None and message.error() is None:
                seen = time.time()
                fetched_at = decode_single_object(message.value())["fetched_at"]
                out.append(seen - fetched_at.timestamp())
    finally:
        consumer.close()


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return values[min(len(values) - 1, int(q * len(values)))]


# --- driver ------------------------------------------------------------------------------------
def bytes_note(run: dict) -> str:
    note = f"broker {run['data_bytes_per_report']:.1f} B/report data"
    if "archive_bytes_per_report" in run:
        note += f" + {run['archive_bytes_per_report']:.1f} archive"
    return note


def machine() -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"model name\s*:\s*(.+)", cpuinfo)
    return {
        "cores": os.cpu_count(), "cpu": model.group(1) if model else platform.machine(),
        "python": platform.python_version(), "confluent_kafka": confluent_kafka.__version__,
        "librdkafka": confluent_kafka.libversion()[0], "kafka": kafka_version(),
        "load_average": os.getloadavg(),
    }  # fmt: skip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k reports instead of 1M")
    parser.add_argument("--reports", type=int, help="reports per run (overrides --quick)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--modes", default="exactly_once,at_least_once")
    parser.add_argument("--latency-seconds", type=int, help="length of the 5,000/s scenario")
    parser.add_argument(
        "--skip", default="", help="comma list of: floor,stages,serve,latency,accounts,takeover"
    )
    parser.add_argument("--no-markdown", action="store_true", help="leave BENCHMARKS.md alone")
    parser.add_argument(
        "--no-python-path", dest="python_path", action="store_false",
        help="skip the exactly_once run on the pure-Python path (RPT_NATIVE=0)",
    )  # fmt: skip
    parser.add_argument(
        "--no-headers-run", dest="headers_run", action="store_false",
        help="skip the exactly_once run with kafka.record_headers = false",
    )  # fmt: skip
    parser.add_argument(
        "--archive", choices=["on", "off", "both"], default="both",
        help="exactly_once runs with the raw archive topic, without it, or both",
    )  # fmt: skip
    args = parser.parse_args(argv)
    args.reports = args.reports or (100_000 if args.quick else 1_000_000)
    args.latency_seconds = args.latency_seconds or (10 if args.quick else 30)
    return args


def archive_runs(delivery: str, choice: str) -> list[tuple[str, bool]]:
    """(result key, with the archive topic) per connector run: exactly_once with and/or without
    the archive ("exactly_once+archive" is with it); other modes without."""
    on = (f"{delivery}+archive", True)
    if delivery != "exactly_once" or choice == "off":
        return [(delivery, False)]
    return [on] if choice == "on" else [(delivery, False), on]


PYTHON_PATH = "exactly_once (pure Python)"
NO_HEADERS = "exactly_once (no headers)"


def connector_runs(delivery: str, args: argparse.Namespace) -> list[tuple[str, bool, bool, bool]]:
    """(result key, with the archive, native path, record headers) per connector run of one
    round: the archive variants of `archive_runs`, then, for exactly_once, the pure-Python
    path (RPT_NATIVE=0) as the before of the native hot path (issue 19), unless
    --no-python-path, and the native path with kafka.record_headers = false, unless
    --no-headers-run."""
    runs = [(mode, archive, True, True) for mode, archive in archive_runs(delivery, args.archive)]
    if delivery == "exactly_once" and args.python_path:
        runs.append((PYTHON_PATH, False, False, True))
    if delivery == "exactly_once" and args.headers_run:
        runs.append((NO_HEADERS, False, True, False))
    return runs


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    results: dict = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(), "reports": args.reports, "runs": args.runs, "connector": {},
    }  # fmt: skip
    broker = Broker("bench")
    bootstrap = broker.start()
    try:
        # Connector and floor runs alternate, so a change in the machine's load hits both.
        payloads = None if "floor" in skip else floor.make_payloads(args.reports)
        for i in range(args.runs):
            for delivery in args.modes.split(","):
                for mode, with_archive, native, headers in connector_runs(delivery, args):
                    os.environ["RPT_NATIVE"] = "1" if native else "0"  # the connector's env
                    run = connector_run(broker, args.reports, delivery, with_archive, headers)
                    results["connector"].setdefault(mode, []).append(run)
                    print(f"run {i + 1} {mode}: {run['reports_per_s']:,.0f} reports/s, "
                          f"{run['cpu_us_per_report']:.1f} µs CPU/report, "
                          f"{run['commits']:.0f} commits, {bytes_note(run)}",
                          flush=True)  # fmt: skip
            if payloads is not None:
                for kind, run in floor_once(bootstrap, payloads).items():
                    results.setdefault("floor", {}).setdefault(kind, []).append(run)
                    print(f"run {i + 1} floor {kind}: {run['reports_per_s']:,.0f} reports/s",
                          flush=True)  # fmt: skip
        os.environ.pop("RPT_NATIVE", None)
        if "stages" not in skip:  # in-process, per stage, both record paths
            results["stages"] = stages.measure(min(args.reports, 100_000))
            print(stages.markdown(results["stages"]), flush=True)
        if "serve" not in skip:
            results["simulator_serve"] = serve_runs(args.reports, args.runs)
        if "latency" not in skip:
            results["latency"] = [
                latency_run(bootstrap, 5000, args.latency_seconds, commit_ms)
                for commit_ms in (200, 100)
            ]
        if "accounts" not in skip:  # bench/accounts.py: its own JSON, table and plot
            import accounts

            # The many-accounts configuration (README "Scaling out"): one shared producer.
            argv = ["--quick"] * args.quick + ["--shared-producer"]
            results["accounts"] = accounts.measure(broker, argv)["targets"]
        if "takeover" not in skip:  # bench/takeover.py: cluster mode, one of two killed
            import takeover

            n = 100 if args.quick else 1000  # 500 taken over: the target
            results["takeover"] = takeover.measure(broker, n, 10.0, 500, 400.0)
            print(takeover.verdict(results["takeover"]), flush=True)
    finally:
        broker.stop()
    results["finished_load_average"] = os.getloadavg()
    results["summary"] = summarize(results)
    save(results, args.no_markdown)
    print(json.dumps(results["summary"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
