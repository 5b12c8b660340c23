"""`make bench`: the connector end to end against a local broker and the simulator.

    .venv/bin/python bench/run.py [--quick] [--reports N] [--runs 3] [--modes exactly_once,...]

A dedicated devkafka broker ("bench") is started and stopped. Per run: a simulator preloaded
with N reports, `python -m connector run` on fresh topics, timed from the first get-rpt answer
(the simulator's handed_out leaves 0) to the commit that publishes the last report (the
connector's rpt_records_published_total reaches N). The connector's CPU (utime+stime from
/proc) is taken over that window; peak RSS is VmHWM just before it is stopped. Then the
librdkafka floor, the simulator's serve rate and a latency scenario (simulator in rate mode,
a read_committed consumer timing fetched_at → visible). Writes bench/results/<stamp>.json,
bench/results/latest.json and BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import confluent_kafka
import floor
import httpx
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "devkafka"))
from connector.avro_codec import decode_single_object  # noqa: E402
from connector.config import KafkaSettings  # noqa: E402
from connector.publisher import ensure_topics  # noqa: E402
from devkafka import Broker, kafka_version  # noqa: E402

TOKEN = "bench-token-5b2e"
BATCH = 20_000
PARTITIONS = 6
_TICK = os.sysconf("SC_CLK_TCK")
_METRICS_AT = re.compile(r"metrics and health on (http://\S+)/metrics")


@dataclass(frozen=True)
class Topics:
    data: str
    dlq: str
    progress: str

    @classmethod
    def fresh(cls) -> Topics:
        tag = uuid.uuid4().hex[:10]
        return cls(f"bench-{tag}", f"bench-{tag}.dlq", f"bench-{tag}.progress")

    def all(self) -> list[str]:
        return [self.data, self.dlq, self.progress]


# --- processes ---------------------------------------------------------------------------------
def start_simulator(*args: str) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-m", "connector", "simulate", "--port", "0", "--seed", "1"]
    command += ["--token", f"main={TOKEN}", *args]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline().strip()
    if not line.startswith("listening on "):
        raise RuntimeError(f"simulator said {line!r}")
    return process, line.removeprefix("listening on ")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def write_config(
    path: Path, base_url: str, bootstrap: str, topics: Topics, delivery: str, commit_ms: int = 200
) -> None:
    path.write_text(f"""
[platform]
base_url = "{base_url}"
poll_interval = "100ms"
min_request_interval = 0
read_timeout = "10s"

[[accounts]]
name = "main"
token_env = "RPT_BENCH_TOKEN"

[kafka]
topic = "{topics.data}"
dlq_topic = "{topics.dlq}"
progress_topic = "{topics.progress}"
delivery = "{delivery}"
commit_interval = "{commit_ms}ms"
max_batch_records = {BATCH}
topic_partitions = {PARTITIONS}

[kafka.producer]
"bootstrap.servers" = "{bootstrap}"

[spool]
dir = "{path.parent / "spool"}"
fsync = true

[metrics]
listen = "127.0.0.1:0"
""")


def kafka_settings(bootstrap: str, topics: Topics) -> KafkaSettings:
    return KafkaSettings(
        topic=topics.data, dlq_topic=topics.dlq, progress_topic=topics.progress,
        topic_partitions=PARTITIONS, producer={"bootstrap.servers": bootstrap},
    )  # fmt: skip


def start_connector(workdir: Path, config: Path) -> tuple[subprocess.Popen, str, Path]:
    log = workdir / "connector.log"
    env = {**os.environ, "RPT_BENCH_TOKEN": TOKEN}
    with log.open("ab") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "connector", "run", "--config", str(config)],
            stdout=handle, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = _METRICS_AT.search(log.read_text(errors="replace"))
        if found:
            return process, found.group(1), log
        if process.poll() is not None:
            break
        time.sleep(0.02)
    raise RuntimeError(f"connector did not start:\n{log.read_text(errors='replace')[-3000:]}")


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


def published(metrics_url: str) -> float:
    return scrape(metrics_url, "rpt_records_published_total")


def scrape(metrics_url: str, series: str) -> float:
    """The value of `series` for account "main" (0 when absent)."""
    text = httpx.get(f"{metrics_url}/metrics", timeout=10).text
    found = re.search(rf'^{series}\{{account="main"\}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def transactions(metrics_url: str) -> dict:
    """How many commits the run took and how long the average one blocked the publisher."""
    count = scrape(metrics_url, "rpt_transaction_duration_seconds_count")
    total = scrape(metrics_url, "rpt_transaction_duration_seconds_sum")
    return {"commits": count, "commit_ms_mean": total / count * 1000 if count else None}


def sim_stats(base_url: str) -> dict:
    return httpx.get(f"{base_url}/stats", timeout=10).json()


def wait_for(predicate: object, timeout: float, interval: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise RuntimeError(f"timed out waiting for {what}")


def delete_topics(bootstrap: str, topics: list[str]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.delete_topics(topics, operation_timeout=30).values():
        # A topic never created (the dead-letter topic of a clean run) is no error.
        with contextlib.suppress(confluent_kafka.KafkaException):
            future.result()


# --- scenarios ---------------------------------------------------------------------------------
def connector_run(bootstrap: str, broker_pid: int, n: int, delivery: str) -> dict:
    """One end-to-end run; the figures of the window first fetch → last commit."""
    topics = Topics.fresh()
    ensure_topics(kafka_settings(bootstrap, topics), topics.all())
    simulator, base_url = start_simulator("--reports", str(n))
    with tempfile.TemporaryDirectory(prefix="rpt-bench-") as tmp:
        workdir = Path(tmp)
        write_config(workdir / "connector.toml", base_url, bootstrap, topics, delivery)
        connector, metrics_url, log = start_connector(workdir, workdir / "connector.toml")
        try:
            wait_for(lambda: sim_stats(base_url)["handed_out"] > 0, 120, 0.005, "a first fetch")
            t0, cpu0 = time.perf_counter(), cpu_seconds(connector.pid)
            rdk0 = librdkafka_cpu(connector.pid)
            bcpu0 = cpu_seconds(broker_pid)
            # Polling /metrics costs the connector CPU: only once the simulator is drained.
            wait_for(lambda: sim_stats(base_url)["pending"] == 0, 1800, 0.05, "a drained simulator")
            wait_for(lambda: published(metrics_url) >= n, 600, 0.01, "the last commit")
            elapsed = time.perf_counter() - t0
            cpu = cpu_seconds(connector.pid) - cpu0
            rdk = sum(c - rdk0.get(t, 0.0) for t, c in librdkafka_cpu(connector.pid).items())
            result = {
                "delivery": delivery, "reports": n, "seconds": elapsed,
                "reports_per_s": n / elapsed, "cpu_us_per_report": cpu / n * 1e6,
                "cpu_seconds": cpu, "cpu_seconds_total": cpu_seconds(connector.pid),
                "librdkafka_cpu_us_per_report": rdk / n * 1e6,
                "broker_cpu_us_per_report": (cpu_seconds(broker_pid) - bcpu0) / n * 1e6,
                "peak_rss_mib": peak_rss_mib(connector.pid), **transactions(metrics_url),
            }  # fmt: skip
        except BaseException:
            print(log.read_text(errors="replace")[-3000:], file=sys.stderr)
            raise
        finally:
            stop(connector)
            stop(simulator)
    delete_topics(bootstrap, topics.all())
    return result


def floor_once(bootstrap: str, payloads: floor.Payloads) -> dict[str, dict]:
    """One idempotent and one transactional floor run, each on a fresh topic."""
    out = {}
    n = len(payloads.values)
    for kind in ("idempotent", "transactional"):
        topics = Topics.fresh()
        ensure_topics(kafka_settings(bootstrap, topics), [topics.data])
        if kind == "idempotent":
            timed = floor.idempotent_floor(bootstrap, topics.data, payloads)
        else:
            timed = floor.transactional_floor(bootstrap, topics.data, payloads, BATCH)
        out[kind] = {
            "reports": n, "seconds": timed.seconds, "reports_per_s": n / timed.seconds,
            "cpu_us_per_report": timed.cpu_seconds / n * 1e6,
        }  # fmt: skip
        delete_topics(bootstrap, [topics.data])
    return out


def serve_runs(n: int, runs: int) -> list[dict]:
    out = []
    for _ in range(runs):
        simulator, base_url = start_simulator("--reports", str(n))
        try:
            timed = floor.drain_simulator(base_url, TOKEN, n)
        finally:
            stop(simulator)
        out.append({"reports": n, "seconds": timed.seconds, "reports_per_s": n / timed.seconds})
    return out


def latency_run(bootstrap: str, rate: int, seconds: int, commit_ms: int) -> dict:
    """Offered load `rate`/s; latency = when a read_committed consumer sees a report − fetched_at.

    That is fetch → commit plus the consumer's own fetch delay (≤ fetch.wait.max.ms = 10 ms).
    """
    topics = Topics.fresh()
    ensure_topics(kafka_settings(bootstrap, topics), topics.all())
    total = rate * seconds
    latencies: list[float] = []
    done = threading.Event()
    consumer_thread = threading.Thread(
        target=_consume_latencies, args=(bootstrap, topics.data, total, latencies, done)
    )
    consumer_thread.start()
    simulator, base_url = start_simulator("--rate", str(rate), "--rate-total", str(total))
    with tempfile.TemporaryDirectory(prefix="rpt-bench-") as tmp:
        workdir = Path(tmp)
        config = workdir / "connector.toml"
        write_config(config, base_url, bootstrap, topics, "exactly_once", commit_ms)
        connector, _metrics_url, _log = start_connector(workdir, workdir / "connector.toml")
        try:
            consumer_thread.join(seconds * 4 + 60)
        finally:
            done.set()
            consumer_thread.join()
            stop(connector)
            stop(simulator)
    delete_topics(bootstrap, topics.all())
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
            for message in consumer.consume(1000, 0.1):
                if message.error() is None:
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
def machine() -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"model name\s*:\s*(.+)", cpuinfo)
    return {
        "cores": os.cpu_count(), "cpu": model.group(1) if model else platform.machine(),
        "python": platform.python_version(), "confluent_kafka": confluent_kafka.__version__,
        "librdkafka": confluent_kafka.libversion()[0], "kafka": kafka_version(),
        "load_average": os.getloadavg(),
    }  # fmt: skip


def median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k reports instead of 1M")
    parser.add_argument("--reports", type=int, help="reports per run (overrides --quick)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--modes", default="exactly_once,at_least_once")
    parser.add_argument("--latency-seconds", type=int, help="length of the 5,000/s scenario")
    parser.add_argument("--skip", default="", help="comma list of: floor,serve,latency")
    parser.add_argument("--no-markdown", action="store_true", help="leave BENCHMARKS.md alone")
    parser.add_argument(
        "--archive", choices=["on", "off", "both"], default="both",
        help="exactly_once runs with the raw archive topic, without it, or both",
    )  # fmt: skip
    args = parser.parse_args(argv)
    args.reports = args.reports or (100_000 if args.quick else 1_000_000)
    args.latency_seconds = args.latency_seconds or (10 if args.quick else 30)
    return args


ARCHIVE_ENV = "RPT_KAFKA__ARCHIVE_TOPIC"


def archive_runs(delivery: str, choice: str, run: int) -> list[tuple[str, str]]:
    """(result key, kafka.archive_topic) per connector run: exactly_once with and/or without
    the archive ("exactly_once+archive" is with it); other modes without."""
    on = (f"{delivery}+archive", f"bench.raw-{run}-{uuid.uuid4().hex[:6]}")
    if delivery != "exactly_once" or choice == "off":
        return [(delivery, "")]
    return [on] if choice == "on" else [(delivery, ""), on]


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
                for mode, archive in archive_runs(delivery, args.archive, i):
                    os.environ[ARCHIVE_ENV] = archive  # the connector's env overrides its file
                    run = connector_run(bootstrap, broker.pid, args.reports, delivery)
                    results["connector"].setdefault(mode, []).append(run)
                    print(f"run {i + 1} {mode}: {run['reports_per_s']:,.0f} reports/s, "
                          f"{run['cpu_us_per_report']:.1f} µs CPU/report, "
                          f"{run['commits']:.0f} commits", flush=True)  # fmt: skip
            if payloads is not None:
                for kind, run in floor_once(bootstrap, payloads).items():
                    results.setdefault("floor", {}).setdefault(kind, []).append(run)
                    print(f"run {i + 1} floor {kind}: {run['reports_per_s']:,.0f} reports/s",
                          flush=True)  # fmt: skip
        if "serve" not in skip:
            results["simulator_serve"] = serve_runs(args.reports, args.runs)
        if "latency" not in skip:
            results["latency"] = [
                latency_run(bootstrap, 5000, args.latency_seconds, commit_ms)
                for commit_ms in (200, 100)
            ]
    finally:
        broker.stop()
    results["finished_load_average"] = os.getloadavg()
    results["summary"] = summarize(results)
    save(results, args.no_markdown)
    print(json.dumps(results["summary"], indent=2))
    return 0


def summarize(results: dict) -> dict:
    summary: dict = {}
    for mode, runs in results["connector"].items():
        summary[mode] = {
            key: median(runs, key)
            for key in ("reports_per_s", "cpu_us_per_report", "peak_rss_mib",
                        "broker_cpu_us_per_report", "commits", "commit_ms_mean",
                        "librdkafka_cpu_us_per_report")
        }  # fmt: skip
        summary[mode]["peak_rss_mib_max"] = max(r["peak_rss_mib"] for r in runs)
    for kind, runs in results.get("floor", {}).items():
        summary[f"floor_{kind}"] = {
            key: median(runs, key) for key in ("reports_per_s", "cpu_us_per_report")
        }
    if "simulator_serve" in results:
        summary["simulator_serve_per_s"] = median(results["simulator_serve"], "reports_per_s")
    pairs = (("exactly_once", "floor_transactional"), ("at_least_once", "floor_idempotent"))
    for mode, floor_key in pairs:
        if mode in summary and floor_key in summary:
            ratio = summary[mode]["reports_per_s"] / summary[floor_key]["reports_per_s"]
            summary[mode]["ratio_to_floor"] = ratio
    if "latency" in results:
        summary["latency"] = results["latency"]
    return summary


def save(results: dict, no_markdown: bool) -> None:
    out_dir = REPO / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=2) + "\n"
    stamp = results["started"].replace(":", "").replace("-", "")
    (out_dir / f"{stamp}.json").write_text(text)
    (out_dir / "latest.json").write_text(text)
    if not no_markdown:
        update_markdown(REPO / "BENCHMARKS.md", results)


_BEGIN, _END = "<!-- bench:begin -->", "<!-- bench:end -->"


def update_markdown(path: Path, results: dict) -> None:
    """Replace the generated block of BENCHMARKS.md (between the bench markers) with `results`."""
    block = f"{_BEGIN}\n{markdown_table(results)}\n{_END}"
    text = path.read_text() if path.exists() else f"# Benchmarks\n\n{_BEGIN}\n{_END}\n"
    head, _, rest = text.partition(_BEGIN)
    _, _, tail = rest.partition(_END)
    path.write_text(head + block + tail)


def markdown_table(results: dict) -> str:
    s, m = results["summary"], results["machine"]
    lines = [
        f"Run {results['started']}: `{results['command']}` — {results['reports']:,} reports per "
        f"run, medians of {results['runs']} runs. Machine: {m['cores']} cores, {m['cpu']}; "
        f"Python {m['python']}, confluent-kafka {m['confluent_kafka']} (librdkafka "
        f"{m['librdkafka']}), Kafka {m['kafka']}. Load average at start "
        f"{m['load_average'][0]:.2f}, at end {results['finished_load_average'][0]:.2f}. "
        "Peak RSS: median (max) of the runs.",
        "",
        "| scenario | reports/s | × floor | connector CPU µs/report | broker CPU µs/report "
        "| peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for mode in ("exactly_once", "at_least_once"):
        if mode in s:
            r = s[mode]
            ratio = f"{r['ratio_to_floor']:.2f}" if "ratio_to_floor" in r else "–"
            lines.append(
                f"| connector {mode} | {r['reports_per_s']:,.0f} | {ratio} "
                f"| {r['cpu_us_per_report']:.1f} | {r['broker_cpu_us_per_report']:.1f} "
                f"| {r['peak_rss_mib']:.0f} ({r['peak_rss_mib_max']:.0f}) |"
            )
    for kind in ("transactional", "idempotent"):
        if f"floor_{kind}" in s:
            r = s[f"floor_{kind}"]
            lines.append(
                f"| floor: bare producer, {kind} | {r['reports_per_s']:,.0f} | 1.00 "
                f"| {r['cpu_us_per_report']:.1f} (whole process) | – | – |"
            )
    if "simulator_serve_per_s" in s:
        lines.append(f"| simulator serve rate (httpx drain) | {s['simulator_serve_per_s']:,.0f} "
                     "| – | – | – | – |")  # fmt: skip
    for lat in s.get("latency", []):
        lines += [
            "",
            f"Latency at {lat['offered_per_s']:,}/s offered (exactly_once, commit_interval "
            f"{lat['commit_interval_ms']} ms, {lat['reports']:,} of {lat['expected']:,} reports "
            f"seen): fetch → visible to a read_committed consumer p50 {lat['p50_ms']:.0f} ms, "
            f"p99 {lat['p99_ms']:.0f} ms, max {lat['max_ms']:.0f} ms.",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
