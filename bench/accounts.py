"""`make bench`'s accounts per instance (issue 27): N accounts on one connector process.

    .venv/bin/python bench/accounts.py [--accounts 1,10,100,1000] [--reports 1000000]
                                       [--idle-seconds 20] [--cap 900] [--quick]

Per point N: one simulator process serving N accounts (`--token aNNNN=TOKEN` each), and
`python -m connector run` with N `[[accounts]]`, exactly_once, on fresh topics of the devkafka
broker. Two connector processes per point, one per phase, because the simulator cannot be
loaded after it starts:

* idle — the simulator holds 1 report per account, so that every account commits once.
  Startup = process start → every account's first commit, from a read_committed consumer on
  the progress topic (each record's `committed_at`, the connector's wall clock as it commits).
  Then `--idle-seconds` with nothing to fetch, /proc sampled every second (no scrape of the
  connector meanwhile): threads (`Threads`, and per name from /proc/<pid>/task/*/comm), RSS and
  peak RSS (`VmRSS`, `VmHWM`), CPU-s/s (utime+stime delta ÷ wall, also per thread name),
  ESTABLISHED TCP connections of the process to the broker's and to the simulator's port
  (/proc/<pid>/net/tcp{,6} rows whose inode is one of the process's socket fds).
* drain — the simulator is preloaded with `--reports` split evenly across accounts (`--record`
  writes each one handed out) and paused (get-rpt answers 503) before the connector starts;
  once /status shows every account past starting/recovering, it is resumed. The clock runs from
  the first report handed out to the moment the progress consumer sees the last commit (the
  drain is over when the simulator holds nothing and `rpt_records_published_total` summed over
  the accounts reaches the reports). CPU µs/report is the process's CPU over that window (/proc
  sampled every 0.1 s) ÷ reports; commit latency is `rpt_transaction_duration_seconds` (the
  publisher's commit call and the spool release, per transaction) summed over accounts, p99
  interpolated in its buckets as PromQL's histogram_quantile does. Then the connector is
  stopped (SIGTERM) and the data topic is read back (read_committed): every msgid the
  simulator recorded must be there exactly once.

Each phase has `--cap` seconds; a phase that does not finish records "did not finish within N
s" and what it reached, and every process it started is stopped by pid. Writes
bench/results/accounts-<stamp>.json and accounts-latest.json, draws accounts-latest.png there
(`--plot` elsewhere), prints the table and the targets line; it asserts nothing.
`bench/run.py` runs it after its own scenarios on the same broker (`--skip accounts` leaves it
out).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import httpx
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # this checkout's connector/ and devharness/ first
sys.path.insert(1, str(REPO / "tools"))
import run  # noqa: E402  bench/run.py: the bench's settings, /proc CPU, machine, topics
from demo import _buckets, quantile  # noqa: E402  summed over accounts; PromQL's interpolation

from connector.codec.avro import decode_single_object  # noqa: E402
from connector.kafka.publisher import ensure_topics  # noqa: E402
from devharness import (  # noqa: E402
    Broker,
    ConnectorProcess,
    ConsumedRecord,
    Endpoints,
    SimulatorProcess,
    Topics,
    connector_env,
    consume_all,
    delete_topics,
    token_args,
    wait_until,
    write_config,
)

POINTS = (1, 10, 100, 1000)
# Beside the JSON, not over a plot the docs show (docs/bench/accounts*.png are copied there
# from a run on purpose, with --plot).
PLOT = REPO / "bench" / "results" / "accounts-latest.png"
RESULTS = REPO / "bench" / "results"
# The targets, for the largest point.
TARGET_ACCOUNTS = 1000
TARGET_THREADS = 64
TARGET_RSS_MB = 300  # MB = 10^6 bytes
TARGET_IDLE_CPU = 0.02  # CPU-s/s
TARGET_RATIO = 0.8  # × the single-account reports/s
TARGET_STARTUP_S = 10.0
READY_STATES = ("starting", "recovering")  # /status states of an account not fetching yet
HTTP_TIMEOUT = 120  # /metrics and /status of 1,000 accounts on a busy box
ESTABLISHED = "01"
QUIET_S = 25.0  # > platform.request_timeout (20 s): no get-rpt answer is still on its way
_MSGID = re.compile(rb'"msgid"\s*:\s*"?(-?\d+)')


# --- pure helpers (tests/unit/test_accounts_bench.py) ------------------------------------------
def account_names(n: int) -> dict[str, str]:
    """Account name → its simulator token, one token per account."""
    return {f"a{i:04d}": f"token-{i:04d}" for i in range(n)}


def parse_status(text: str) -> dict[str, int]:
    """The numeric fields of /proc/<pid>/status (kB for the Vm* ones)."""
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        first = value.split()
        if first and first[0].isdigit():
            out[key] = int(first[0])
    return out


def schedstat_seconds(text: str) -> float:
    """Time on CPU from a /proc/<pid>/task/<tid>/schedstat line (ns, then wait ns, slices)."""
    return int(text.split()[0]) / 1e9


def socket_inodes(fd_targets: Iterable[str]) -> set[int]:
    """Inodes of the sockets among a process's /proc/<pid>/fd link targets ("socket:[123]")."""
    found = (re.fullmatch(r"socket:\[(\d+)\]", target) for target in fd_targets)
    return {int(match.group(1)) for match in found if match}


def established_to(tcp_table: str, port: int, inodes: set[int]) -> int:
    """ESTABLISHED connections to remote `port` in /proc/net/tcp{,6} rows owned by `inodes`."""
    count = 0
    for row in tcp_table.splitlines():
        fields = row.split()
        if len(fields) < 10 or fields[0] == "sl" or fields[3] != ESTABLISHED:
            continue
        remote_port = int(fields[2].rsplit(":", 1)[1], 16)
        if remote_port == port and int(fields[9]) in inodes:
            count += 1
    return count


_STOPPED = re.compile(r"account (\S+) stopped: (.*)$", re.MULTILINE)


def failed_accounts(log: str) -> dict[str, str]:
    """Account → why it stopped, from the connector's log ("account NAME stopped: REASON", the
    line an account that fails logs; it stays failed)."""
    return {name: reason.strip() for name, reason in _STOPPED.findall(log)}


def metric_samples(text: str) -> list[Sample]:
    """Every sample of a Prometheus text exposition (prometheus_client's parser)."""
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def per_account(samples: list[Sample], name: str) -> dict[str, float]:
    """Account → value of the samples called `name` (a counter's `_total`, a histogram's
    `_count` or `_sum`)."""
    return {s.labels["account"]: s.value for s in samples if s.name == name}


def histogram_quantile(samples: list[Sample], histogram: str, q: float) -> float | None:
    """The q-quantile of `histogram` over all accounts: its buckets summed, interpolated as
    PromQL does (tools/demo.py's, which the demo prints the report lag with)."""
    return quantile(_buckets([s for s in samples if s.name == f"{histogram}_bucket"]), q)


def truth_msgids(lines: Iterable[bytes]) -> Counter:
    """The msgids the simulator handed out (its --record file), as the connector normalizes
    them (a JSON integer or a decimal string → its decimal text). Only the msgid is kept:
    devharness.ground_truth normalizes whole reports, too heavy for 1,000,000 of them."""
    out: Counter = Counter()
    for line in lines:
        if line.strip():
            out[str(int(json.loads(line)["msgid"]))] += 1
    return out


def compare(truth: Counter, delivered: Counter) -> dict[str, int]:
    """Lost (handed out, not in the topic), duplicated (in the topic more often than handed
    out: the extra copies), unexpected (in the topic, never handed out)."""
    return {
        "handed_out": sum(truth.values()),
        "delivered": sum(delivered.values()),
        "lost": sum(max(0, n - delivered[m]) for m, n in truth.items()),
        "duplicated": sum(max(0, n - truth[m]) for m, n in delivered.items() if m in truth),
        "unexpected": sum(n for m, n in delivered.items() if m not in truth),
    }


def dead_letter_summary(dead: list[ConsumedRecord], truth: Counter, delivered: Counter) -> dict:
    """Dead letters by their `reason` header, and how many of the reports missing from the data
    topic have their msgid in a dead letter's raw bytes."""
    reasons = Counter(dict(d.headers).get("reason", b"?").decode() for d in dead)
    in_dead = {str(int(m)) for d in dead for m in _MSGID.findall(d.value or b"")}
    missing = (m for m in truth if m not in delivered)
    return {
        "dead_letters": len(dead), "dead_letters_by_reason": dict(reasons),
        "lost_in_dead_letters": sum(1 for m in missing if m in in_dead),
    }  # fmt: skip


def beyond_last_bound(samples: list[Sample], histogram: str, q: float) -> bool:
    """Whether the q-quantile falls in the +Inf bucket (the figure is then only a lower bound)."""
    cumulative = _buckets([s for s in samples if s.name == f"{histogram}_bucket"])
    return len(cumulative) >= 2 and q * cumulative[-1][1] > cumulative[-2][1]


def cpu_by_name(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]
) -> dict[str, float]:
    """CPU seconds per thread name between two {tid: (comm, cpu)} snapshots; a thread that
    ended in between is left out, one that started counts from 0."""
    out: Counter = Counter()
    for tid, (name, cpu) in after.items():
        out[name] += cpu - before.get(tid, (name, 0.0))[1]
    return dict(out)


def cpu_at(series: list[tuple[float, float]], when: float) -> float:
    """The CPU seconds of the first (time, cpu) sample at or after `when` (else the last)."""
    return next((cpu for t, cpu in series if t >= when), series[-1][1])


def marginal(points: list[dict], key: Callable[[dict], float | None]) -> float | None:
    """What one more account adds to `key`, between the two largest points that have it."""
    have = [(p["accounts"], key(p)) for p in points if key(p) is not None]
    if len(have) < 2:
        return None
    (n1, v1), (n2, v2) = have[-2], have[-1]
    return (v2 - v1) / (n2 - n1)


def per_account_costs(points: list[dict]) -> dict[str, float | None]:
    """What one more account costs, idle, between the two largest points that measured it."""
    keys = {
        "threads": ("idle", "threads"), "peak_rss_mib": ("idle", "peak_rss_mib"),
        "cpu_s_per_s": ("idle", "cpu_s_per_s"),
        "broker_connections": ("idle", "broker_connections"),
    }  # fmt: skip
    return {name: marginal(points, lambda p, k=key: _get(p, *k)) for name, key in keys.items()}


def _get(point: dict, *path: str) -> float | None:
    value: object = point
    for key in path:
        if not isinstance(value, dict) or value.get(key) is None:
            return None
        value = value[key]
    return value  # type: ignore[return-value]


def _fmt(value: float | None, spec: str = ",.0f", unfinished: str = "–") -> str:
    return unfinished if value is None else format(value, spec)


def single_rate(points: list[dict]) -> float | None:
    return next((_get(p, "drain", "reports_per_s") for p in points if p["accounts"] == 1), None)


def table(points: list[dict]) -> str:
    """The markdown table of the points."""
    base = single_rate(points)
    head = (
        "| accounts | threads (idle) | peak RSS MiB (idle / drain) | idle CPU-s/s "
        "| broker connections | startup: every account's first commit, s | drain reports/s "
        "| × 1 account | CPU µs/report | commit p99 ms | lost / duplicated |\n"
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n"
    )
    rows = []
    for p in points:
        rate = _get(p, "drain", "reports_per_s")
        ratio = rate / base if rate is not None and base else None
        verdict = p.get("drain", {}).get("verdict")
        lost = "–" if not verdict else f"{verdict['lost']:,} / {verdict['duplicated']:,}"
        rows.append(
            f"| {p['accounts']:,} | {_fmt(_get(p, 'idle', 'threads'))} "
            f"| {_fmt(_get(p, 'idle', 'peak_rss_mib'))} / {_fmt(_get(p, 'drain', 'peak_rss_mib'))} "
            f"| {_fmt(_get(p, 'idle', 'cpu_s_per_s'), '.3f')} "
            f"| {_fmt(_get(p, 'idle', 'broker_connections'))} "
            f"| {_startup(p)} | {_fmt(rate)} | {_fmt(ratio, '.2f')} "
            f"| {_fmt(_get(p, 'drain', 'cpu_us_per_report'), '.1f')} "
            f"| {_p99(p)} | {lost} |"
        )
    notes = [f"- {p['accounts']:,} accounts: {n}" for p in points for n in p.get("notes", [])]
    return head + "\n".join(rows) + ("\n\n" + "\n".join(notes) if notes else "")


def _p99(point: dict) -> str:
    beyond = "≥ " if _get(point, "drain", "commit_p99_beyond_buckets") else ""
    return beyond + _fmt(_get(point, "drain", "commit_p99_ms"))


def _startup(point: dict) -> str:
    startup = point.get("idle", {}).get("startup", {})
    if startup.get("all_committed_s") is not None:
        return f"{startup['all_committed_s']:.1f}"
    if startup.get("failed"):
        return (
            f"never: {startup['failed']:,} failed; the other {startup['committed']:,} by "
            f"{_fmt(startup.get('live_committed_s'), '.1f')}"
        )
    if startup.get("cap_s") is not None:
        return (
            f"> {startup['cap_s']:.0f} ({startup.get('committed', 0):,} of {point['accounts']:,})"
        )
    return "–"


def _verdict(value: float | None, limit: float, at_most: bool, unfinished: bool) -> str:
    if unfinished:  # the phase ran out of --cap: far from the target, whatever it is
        return "NOT MET"
    if value is None:
        return "not measured"
    return "met" if (value <= limit if at_most else value >= limit) else "NOT MET"


def targets(points: list[dict]) -> tuple[str, dict]:
    """The targets line for the TARGET_ACCOUNTS point, each figure with its bound and whether
    it is met; and the same as data."""
    point = next((p for p in points if p["accounts"] == TARGET_ACCOUNTS), None)
    if point is None:
        return f"targets: no {TARGET_ACCOUNTS:,}-account point in this run", {}
    rss = _get(point, "idle", "peak_rss_mib")
    rss_mb = rss * 2**20 / 1e6 if rss is not None else None
    verdict = point.get("drain", {}).get("verdict")
    rate, base = _get(point, "drain", "reports_per_s"), single_rate(points)
    ratio = rate / base if rate is not None and base else None
    rate_text = f"{_fmt(rate)} reports/s = {_fmt(ratio, '.2f')}×"
    if _get(point, "drain", "cap_s") is not None:
        rate_text = f"drain did not finish within {_get(point, 'drain', 'cap_s'):.0f} s:"
    startup = _get(point, "idle", "startup", "all_committed_s")
    bad = ("lost", "duplicated", "unexpected", "not_handed_out")
    clean = None if not verdict else sum(verdict.get(key, 0) for key in bad)
    unfetched = "" if not verdict else f", {verdict.get('not_handed_out', 0):,} never fetched"
    rows = {  # key: (measured, target, at most?, the figure as text)
        "idle_threads": (_get(point, "idle", "threads"), TARGET_THREADS, True,
                         f"idle threads {_fmt(_get(point, 'idle', 'threads'))} "
                         f"(≤ {TARGET_THREADS})"),
        "idle_peak_rss_mb": (rss_mb, TARGET_RSS_MB, True,
                             f"idle peak RSS {_fmt(rss_mb)} MB (≤ {TARGET_RSS_MB})"),
        "idle_cpu_s_per_s": (_get(point, "idle", "cpu_s_per_s"), TARGET_IDLE_CPU, True,
                             f"idle CPU {_fmt(_get(point, 'idle', 'cpu_s_per_s'), '.3f')} "
                             f"CPU-s/s (≤ {TARGET_IDLE_CPU})"),
        "drain_lost_plus_duplicated": (clean, 0, True, "drain: " + (
            "lost, duplicated" if not verdict else
            f"lost {verdict['lost']:,}, duplicated {verdict['duplicated']:,} of "
            f"{verdict['handed_out']:,} handed out "
            f"({_fmt(_get(point, 'drain', 'reports'))} loaded{unfetched})")),
        "drain_ratio_to_single": (ratio, TARGET_RATIO, False,
                                  f"{rate_text} single-account {_fmt(base)} reports/s "
                                  f"(≥ {TARGET_RATIO}×)"),
        "startup_every_first_commit_s": (startup, TARGET_STARTUP_S, True, "every account's "
            f"first commit {_startup(point)} s (≤ {TARGET_STARTUP_S:.0f} s)"),
    }  # fmt: skip
    unfinished = {
        "drain_ratio_to_single": _get(point, "drain", "cap_s") is not None,
        "startup_every_first_commit_s": _get(point, "idle", "startup", "cap_s") is not None
        or bool(_get(point, "idle", "startup", "failed")),
    }
    data = {
        key: {"measured": value, "target": limit,
              "verdict": _verdict(value, limit, at_most, unfinished.get(key, False))}
        for key, (value, limit, at_most, _text) in rows.items()
    }  # fmt: skip
    parts = [f"{text} {data[key]['verdict']}" for key, (*_, text) in rows.items()]
    return f"targets ({TARGET_ACCOUNTS:,} accounts): " + "; ".join(parts), data


def plot(points: list[dict], path: Path, title: str = "") -> Path | None:
    """Threads, peak RSS and idle CPU against accounts (log x and y), the targets dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    panels = (
        ("threads (idle)", ("idle", "threads"), TARGET_THREADS, True),
        ("peak RSS, MiB (idle)", ("idle", "peak_rss_mib"), TARGET_RSS_MB * 1e6 / 2**20, True),
        ("idle CPU-s/s", ("idle", "cpu_s_per_s"), TARGET_IDLE_CPU, True),
    )
    fig, axes = plt.subplots(1, len(panels), figsize=(13, 4), constrained_layout=True)
    drawn = False
    for ax, (name, key, target, log_y) in zip(axes, panels, strict=True):
        have = [(p["accounts"], _get(p, *key)) for p in points if _get(p, *key) is not None]
        if have:
            xs, ys = zip(*have, strict=True)
            ax.plot(xs, ys, "o-", label="measured")
            for x, y in have:
                label = f"{y:,.0f}" if y >= 100 else f"{y:.3g}"
                ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, -12))
            drawn = True
        ax.axhline(target, color="tab:red", linestyle="--", label=f"target at {TARGET_ACCOUNTS:,}")
        ax.set_xscale("log")
        ax.margins(x=0.12)
        ax.set_xticks([p["accounts"] for p in points])
        if log_y:
            ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:,.4g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("accounts on one instance")
        ax.set_title(name)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="upper left", fontsize="small")
    if not drawn:
        plt.close(fig)
        return None
    fig.suptitle(title, fontsize="medium")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# --- /proc --------------------------------------------------------------------------------------
def status(pid: int) -> dict[str, int]:
    return parse_status(Path(f"/proc/{pid}/status").read_text())


def threads_by_name(pid: int) -> dict[int, tuple[str, float]]:
    """{tid: (comm, CPU seconds)} of every live thread of `pid`. The CPU is the scheduler's
    nanoseconds on CPU (/proc/<pid>/task/<tid>/schedstat): a thread's utime+stime there is
    counted in clock ticks, and a thread that runs a few µs per wake-up is seldom on CPU at a
    tick, so 700 idle threads summed to 0 while the process's own stat counted 0.05 CPU-s/s."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            name = (task / "comm").read_text().strip()
            out[int(task.name)] = (name, schedstat_seconds((task / "schedstat").read_text()))
    return out


def open_fds(pid: int) -> list[str]:
    """The targets of a process's open file descriptors ("socket:[123]", paths, "pipe:[…]")."""
    targets = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            targets.append(str(fd.readlink()))
    return targets


def tcp_tables(pid: int) -> str:
    """/proc/<pid>/net/tcp and tcp6: every TCP socket of the process's network namespace."""
    return "\n".join(Path(f"/proc/{pid}/net/{name}").read_text() for name in ("tcp", "tcp6"))


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


# --- processes ----------------------------------------------------------------------------------
class ProgressTail:
    """A read_committed consumer on the progress topic, in a thread: (account, committed_at,
    seen_at) per progress record, wall clock. One record per committed transaction."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.records: list[tuple[str, float, float]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._consumer = Consumer({
            "bootstrap.servers": bootstrap, "group.id": f"bench-accounts-{uuid.uuid4().hex[:8]}",
            "isolation.level": "read_committed", "enable.auto.commit": False,
            "fetch.wait.max.ms": 10,
        })  # fmt: skip
        self._consumer.assign(
            [TopicPartition(topic, p, OFFSET_BEGINNING) for p in self._partitions(topic)]
        )
        self._thread = threading.Thread(target=self._run, name="progress-tail", daemon=True)
        self._thread.start()

    def _partitions(self, topic: str) -> list[int]:
        """The topic's partitions once metadata shows every one of them with a leader: a topic
        just created may show fewer for a moment, and the ones left out would never be read."""
        found: list[int] = []

        def ready() -> bool:
            meta = self._consumer.list_topics(topic, timeout=30).topics[topic]
            found[:] = [p for p, m in meta.partitions.items() if m.leader >= 0]
            return meta.error is None and len(found) == run.PARTITIONS

        wait_until(ready, 60, f"the partitions of {topic}", 0.1)
        return sorted(found)

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self._consumer.poll(0.1)
            if message is None or message.error() is not None or not message.value():
                continue
            value = json.loads(message.value())
            with self._lock:
                self.records.append((value["account"], value["committed_at"], time.time()))

    def first_commits(self) -> dict[str, float]:
        """Each account's earliest committed_at."""
        out: dict[str, float] = {}
        with self._lock:
            for account, committed_at, _seen in self.records:
                out[account] = min(committed_at, out.get(account, committed_at))
        return out

    def committed_since(self, wall: float) -> set[str]:
        """The accounts with a commit whose committed_at is after `wall`."""
        with self._lock:
            return {account for account, committed_at, _s in self.records if committed_at > wall}

    def last_seen(self) -> float | None:
        with self._lock:
            return max((seen for _a, _c, seen in self.records), default=None)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._consumer.close()


def phase_config(workdir: Path, base_url: str, bootstrap: str, topics: Topics,
                 accounts: tuple[str, ...]) -> Path:  # fmt: skip
    """`make bench`'s production-like settings (run.bench_config: fsync, 20,000-record
    transactions, commit_interval 200 ms, 6 partitions, no archive topic), for N accounts, with
    the default poll_interval (5 s), so that an idle account polls as deployed."""
    return write_config(
        workdir / "connector.toml", base_url=base_url, bootstrap=bootstrap, topics=topics,
        spool=workdir / "spool", delivery="exactly_once", accounts=accounts,
        overrides={
            "platform": {"read_timeout": "10s", "poll_interval": "5s"},
            "kafka": {"commit_interval": "200ms", "max_batch_records": run.BATCH,
                      "topic_partitions": run.PARTITIONS, "archive_topic": ""},
            "spool": {"fsync": True},
        },
    )  # fmt: skip


class Phase:
    """One phase of a point: fresh topics, a simulator, a connector, all stopped by `close`."""

    def __init__(self, broker: Broker, n: int, sim_args: list[str], workdir: Path) -> None:
        self.bootstrap, self.n, self.workdir = broker.bootstrap, n, workdir
        self.accounts = account_names(n)
        self.topics = Topics.fresh("bench-acc")
        ensure_topics(run.kafka_settings(self.bootstrap, self.topics), self.topics.all())
        self.connector: ConnectorProcess | None = None
        self.tail = ProgressTail(self.bootstrap, self.topics.progress)
        try:
            self.simulator = SimulatorProcess(
                ["--seed", "1", *token_args(self.accounts), *sim_args]
            ).start()
        except BaseException:
            self.tail.close()
            raise

    def start_connector(self) -> float:
        """Start the connector; its start time (wall clock)."""
        config = phase_config(self.workdir, self.simulator.base_url, self.bootstrap,
                              self.topics, tuple(self.accounts))  # fmt: skip
        started = time.time()
        self.config = config
        self.connector = ConnectorProcess(
            config, self.workdir / "connector.log", env=connector_env(self.accounts)
        ).start()
        return started

    def spool_pending(self) -> int:
        """Reports in the spools above the committed sequence (`spool inspect`, read-only; the
        connector has stopped)."""
        command = [sys.executable, "-m", "connector", "spool", "inspect", "--config"]
        found = subprocess.run(
            [*command, str(self.config)], env=connector_env(self.accounts),
            capture_output=True, text=True, timeout=600, check=True,
        )  # fmt: skip
        return sum(a.get("reports", 0) for a in json.loads(found.stdout).values())

    def endpoints(self, timeout: float) -> Endpoints:
        return Endpoints(self.connector.metrics_base_url(timeout))

    def sample(self) -> dict:
        """/proc of the connector: threads, memory, CPU, fds, its ESTABLISHED connections."""
        pid = self.connector.pid
        fields, fds, tables = status(pid), open_fds(pid), tcp_tables(pid)
        inodes = socket_inodes(fds)
        return {
            "t": time.time(), "threads": fields["Threads"], "rss_mib": fields["VmRSS"] / 1024,
            "peak_rss_mib": fields["VmHWM"] / 1024, "cpu": run.cpu_seconds(pid), "fds": len(fds),
            "broker_connections": established_to(tables, port_of(self.bootstrap), inodes),
            "platform_connections": established_to(
                tables, port_of(self.simulator.base_url), inodes),
        }  # fmt: skip

    def stop_connector(self) -> dict:
        if self.connector is None or not self.connector.alive():
            return {}
        began = time.monotonic()
        code = self.connector.stop(120)  # SIGTERM; SIGKILL after 120 s
        return {"stop_seconds": time.monotonic() - began, "exit_code": code}

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop_connector()
        self.simulator.stop(60)
        self.tail.close()
        delete_topics(self.bootstrap, self.topics.all())

    def failed(self) -> dict[str, str]:
        return failed_accounts(self.connector.output()) if self.connector is not None else {}

    def fetching(self, endpoints: Endpoints) -> bool:
        """No account still starting or recovering (/status), or the connector gone."""
        return not self.connector.alive() or every_account_fetching(endpoints)

    def settled(self, accounts_done: Callable[[], int]) -> bool:
        """Every account done (`accounts_done`) or failed, or the connector gone."""
        if not self.connector.alive():
            return True
        return accounts_done() >= self.n or accounts_done() + len(self.failed()) >= self.n

    def log_tail(self) -> str:
        return self.connector.output()[-3000:] if self.connector is not None else ""


@contextlib.contextmanager
def running(broker: Broker, n: int, sim_args: list[str], workdir: Path) -> Iterator[Phase]:
    """A Phase, closed whatever happens; the connector's last log lines if something failed."""
    phase = Phase(broker, n, sim_args, workdir)
    try:
        yield phase
    except BaseException:
        print(phase.log_tail(), file=sys.stderr)
        raise
    finally:
        phase.close()


class Budget:
    """A phase's `--cap` seconds; `left()` is what remains of them."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._deadline = time.monotonic() + seconds

    def left(self) -> float:
        return max(self._deadline - time.monotonic(), 0.0)

    def wait(self, predicate: Callable[[], bool], interval: float) -> bool:
        """devharness.wait_until within what is left: True when `predicate` held, else False."""
        try:
            wait_until(predicate, self.left(), "a bench phase", interval)
        except AssertionError:
            return False
        return True


def idle_phase(broker: Broker, n: int, idle_seconds: float, cap: float) -> dict:
    """Startup to every account's first commit (1 report each), then idle sampling."""
    budget = Budget(cap)
    with (
        tempfile.TemporaryDirectory(prefix="rpt-bench-acc-") as tmp,
        running(broker, n, ["--reports", str(n)], Path(tmp)) as phase,
    ):
        started = phase.start_connector()
        phase.endpoints(max(budget.left(), 1.0))
        out: dict = {"startup": first_commits(phase, started, budget)}
        if out["startup"]["cap_s"] is not None or not phase.connector.alive():
            return out | _last_sample(phase) | phase.stop_connector()
        out |= idle_window(phase, min(idle_seconds, max(budget.left(), 1.0)))
        return out | phase.stop_connector()


def first_commits(phase: Phase, started: float, budget: Budget) -> dict:
    """Until every account has committed once (or failed, or the budget is spent): when."""
    metrics_up = time.time() - started
    settled = budget.wait(lambda: phase.settled(lambda: len(phase.tail.first_commits())), 0.5)
    firsts = sorted(t - started for t in phase.tail.first_commits().values())
    failed = phase.failed()
    return {
        "metrics_up_s": metrics_up, "committed": len(firsts), "failed": len(failed),
        "failures": dict(Counter(failed.values()).most_common()),
        "all_committed_s": firsts[-1] if len(firsts) == phase.n else None,
        "live_committed_s": firsts[-1] if settled and firsts else None,
        "first_commit_p50_s": statistics.median(firsts) if firsts else None,
        "within_target": sum(1 for t in firsts if t <= TARGET_STARTUP_S),
        "cap_s": None if settled else budget.seconds,
    }  # fmt: skip


def _last_sample(phase: Phase) -> dict:
    if not phase.connector.alive():
        return {"note": f"the connector exited ({phase.connector.process.returncode})"}
    sample = phase.sample()
    return {key: sample[key] for key in ("threads", "peak_rss_mib", "broker_connections")}


def idle_window(phase: Phase, seconds: float) -> dict:
    """/proc every second for `seconds`: nothing else asks the connector anything meanwhile."""
    pid = phase.connector.pid
    tasks0, first = threads_by_name(pid), phase.sample()
    series = [first]
    while series[-1]["t"] - first["t"] < seconds:
        time.sleep(1.0)
        series.append(phase.sample())
    last, tasks1 = series[-1], threads_by_name(pid)
    wall = last["t"] - first["t"]
    by_name = Counter(name for name, _cpu in tasks1.values())
    cpu_names = cpu_by_name(tasks0, tasks1)
    return {
        "threads": last["threads"], "threads_by_name": dict(by_name.most_common()),
        "rss_mib": last["rss_mib"], "peak_rss_mib": last["peak_rss_mib"],
        "cpu_s_per_s": (last["cpu"] - first["cpu"]) / wall, "idle_seconds": wall,
        "cpu_s_per_s_by_name": {k: v / wall for k, v in sorted(cpu_names.items())},
        "broker_connections": max(s["broker_connections"] for s in series),
        "platform_connections": max(s["platform_connections"] for s in series),
        "fds": max(s["fds"] for s in series), "samples": series,
    }  # fmt: skip


def drain_phase(broker: Broker, n: int, reports: int, cap: float) -> dict:
    """Start paused, resume once every account fetches, drain `reports`, verify."""
    budget = Budget(cap)
    out: dict = {"reports": reports}
    with tempfile.TemporaryDirectory(prefix="rpt-bench-acc-") as tmp:
        record = Path(tmp) / "handed-out.jsonl"
        sim_args = ["--reports", str(reports), "--record", str(record)]
        with running(broker, n, sim_args, Path(tmp)) as phase:
            phase.simulator.control("pause", seconds=cap + 600)
            started = phase.start_connector()
            endpoints = phase.endpoints(max(budget.left(), 1.0))
            if not budget.wait(lambda: phase.fetching(endpoints), 1.0):
                note = f"not every account was fetching within {cap:.0f} s; nothing drained"
                return out | {"cap_s": cap, "note": note} | _last_sample(phase)
            if not phase.connector.alive():
                return out | _last_sample(phase)
            out["startup_fetching_s"] = time.time() - started
            failed = phase.failed()
            out |= {"failed": len(failed), "failures": dict(Counter(failed.values()))}
            phase.simulator.control("resume")
            out |= drain_window(phase, endpoints, budget)
            out |= phase.stop_connector()
            handed_out = phase.simulator.stats()["handed_out"]
            phase.simulator.stop(60)  # its record file is complete
            out["verdict"] = verify(phase, record)
            out["verdict"]["not_handed_out"] = reports - handed_out
            return out


def every_account_fetching(endpoints: Endpoints) -> bool:
    """/status: no account is still starting or recovering (producer init, progress read)."""
    accounts = httpx.get(f"{endpoints.base_url}/status", timeout=HTTP_TIMEOUT).json()["accounts"]
    return all(a["state"] not in READY_STATES for a in accounts.values())


def scrape(endpoints: Endpoints) -> list[Sample]:
    return metric_samples(httpx.get(f"{endpoints.base_url}/metrics", timeout=HTTP_TIMEOUT).text)


class DrainWatch:
    """Is the drain over? Called every 0.1 s: the connector's CPU each time (its stat file
    only), a full /proc sample every 2 s, the simulator each time until every live account has
    had reports (the accounts wake from their backoff within `platform.backoff_max`), then every
    0.5 s, and /metrics once every live account's queue on the simulator is empty. Over when
    nothing is left in the spools and all that was handed out is published, or nothing more was
    published for `QUIET_S` (longer than any get-rpt answer may take): what is missing then was
    lost on the way."""

    def __init__(self, phase: Phase, endpoints: Endpoints) -> None:
        self.phase, self.endpoints, self.pid = phase, endpoints, phase.connector.pid
        self.cpu = [(time.time(), run.cpu_seconds(self.pid))]
        self.samples = [phase.sample()]
        self.handed_out = 0
        self.all_fetched_at: float | None = None  # when every live account had some reports
        self._checked = time.monotonic()
        self._published = (-1.0, time.monotonic())  # the last sum seen, and since when

    def __call__(self) -> bool:
        if not self.phase.connector.alive():
            return True
        now = time.time()
        self.cpu.append((now, run.cpu_seconds(self.pid)))
        if now - self.samples[-1]["t"] >= 2.0:
            self.samples.append(self.phase.sample())
        if self.all_fetched_at is not None and time.monotonic() - self._checked < 0.5:
            return False
        self._checked = time.monotonic()
        stats, failed = self.phase.simulator.stats(), self.phase.failed()
        live = [a for name, a in stats["accounts"].items() if name not in failed]
        if self.all_fetched_at is None and all(a["handed_out"] for a in live):
            self.all_fetched_at = now
        if any(a["pending"] for a in live):
            return False
        self.handed_out = stats["handed_out"]
        metrics = scrape(self.endpoints)
        if sum(per_account(metrics, "rpt_spool_pending_records").values()) > 0:
            return False
        published = sum(per_account(metrics, "rpt_records_published_total").values())
        if published != self._published[0]:
            self._published = (published, time.monotonic())
        quiet = time.monotonic() - self._published[1] >= QUIET_S
        return published >= self.handed_out or quiet


def drain_window(phase: Phase, endpoints: Endpoints, budget: Budget) -> dict:
    """First report handed out → the last commit seen by the progress consumer."""
    if not budget.wait(lambda: phase.simulator.stats()["handed_out"] > 0, 0.01):
        return {"cap_s": budget.seconds, "note": "nothing was handed out"}
    t0, watch = time.time(), DrainWatch(phase, endpoints)
    done = budget.wait(watch, 0.1)
    if not phase.connector.alive():
        return _last_sample(phase)
    time.sleep(1.0)  # the progress consumer catches up with the last commit
    full = [*watch.samples, phase.sample()]
    metrics = scrape(endpoints)
    count = sum(per_account(metrics, "rpt_transaction_duration_seconds_count").values())
    total = sum(per_account(metrics, "rpt_transaction_duration_seconds_sum").values())
    p99 = histogram_quantile(metrics, "rpt_transaction_duration_seconds", 0.99)
    published = sum(per_account(metrics, "rpt_records_published_total").values())
    out = {
        "published": published, "commits": count,
        "commit_mean_ms": total / count * 1000 if count else None,
        "commit_p99_ms": p99 * 1000 if p99 is not None else None,
        "commit_p99_beyond_buckets": beyond_last_bound(
            metrics, "rpt_transaction_duration_seconds", 0.99),
        "threads": max(s["threads"] for s in full), "peak_rss_mib": full[-1]["peak_rss_mib"],
        "broker_connections": max(s["broker_connections"] for s in full),
    }  # fmt: skip
    end = phase.tail.last_seen()
    if not done or end is None or not published:
        note = f"did not finish within {budget.seconds:.0f} s"
        return out | {"cap_s": budget.seconds, "note": note}
    used = cpu_at(watch.cpu, end) - watch.cpu[0][1]
    fetching = watch.all_fetched_at - t0 if watch.all_fetched_at is not None else None
    return out | {
        "every_account_fetched_after_s": fetching, "seconds": end - t0,
        "reports_per_s": published / (end - t0),
        "cpu_seconds": used, "cpu_us_per_report": used / published * 1e6,
    }  # fmt: skip


def verify(phase: Phase, record: Path) -> dict:
    """The data topic (read_committed) against the simulator's record of what it handed out;
    where the missing ones are: in dead letters (their raw bytes), in the spools (not yet
    committed when the connector stopped), or nowhere (cut off on the way)."""
    truth = truth_msgids(record.read_bytes().splitlines())
    delivered: Counter = Counter()
    for item in consume_all(phase.bootstrap, phase.topics.data, timeout=1800):
        delivered[decode_single_object(item.value)["msgid"]] += 1
    dead = consume_all(phase.bootstrap, phase.topics.dlq, timeout=120)
    return (
        compare(truth, delivered)
        | dead_letter_summary(dead, truth, delivered)
        | {"spool_pending_at_stop": phase.spool_pending()}
    )


# --- driver -------------------------------------------------------------------------------------
def measure_point(broker: Broker, n: int, args: argparse.Namespace) -> dict:
    point: dict = {"accounts": n, "notes": []}
    print(f"accounts {n:,}: idle phase", flush=True)
    point["idle"] = idle_phase(broker, n, args.idle_seconds, args.cap)
    startup = point["idle"]["startup"]
    if startup.get("cap_s"):
        point["notes"].append(
            f"startup did not finish within {args.cap:.0f} s: {startup['committed']:,} of "
            f"{n:,} accounts had committed; idle not measured"
        )
    print(f"accounts {n:,}: drain phase ({args.reports:,} reports)", flush=True)
    point["drain"] = drain_phase(broker, n, args.reports, args.cap)
    if point["drain"].get("note"):
        point["notes"].append(f"drain: {point['drain']['note']}")
    verdict = point["drain"].get("verdict") or {}
    if verdict.get("lost"):
        point["notes"].append(
            f"drain: of the {verdict['lost']:,} lost, {verdict['lost_in_dead_letters']:,} are in "
            f"dead letters ({verdict['dead_letters_by_reason']}), "
            f"{verdict['spool_pending_at_stop']:,} were in the spools when it stopped"
        )
    for phase in ("idle", "drain"):
        failures = point[phase].get("failures") or point[phase].get("startup", {}).get("failures")
        for reason, count in (failures or {}).items():
            point["notes"].append(f"{phase}: {count:,} accounts failed at start: {reason}")
    peaks = [_get(point, phase, "peak_rss_mib") for phase in ("idle", "drain")]
    point["peak_rss_mib"] = max((p for p in peaks if p is not None), default=None)
    return point


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", help="comma list of points (default 1,10,100,1000)")
    parser.add_argument("--reports", type=int, help="reports drained per point (default 1M)")
    parser.add_argument("--idle-seconds", type=float, help="idle sampling window (default 20)")
    parser.add_argument("--cap", type=float, default=900.0, help="seconds per phase of a point")
    parser.add_argument("--quick", action="store_true", help="1,10 accounts, 20,000 reports")
    parser.add_argument("--plot", type=Path, default=PLOT, help="the PNG to draw")
    parser.add_argument("--label", default="", help="what code this measures, for the JSON")
    parser.add_argument("--from-json", type=Path, help="redraw and print a results file only")
    parser.add_argument(
        "--shared-producer", action="store_true", help="kafka.shared_producer = true"
    )
    args = parser.parse_args(argv)
    points = args.accounts or ("1,10" if args.quick else ",".join(map(str, POINTS)))
    args.points = [int(n) for n in points.split(",") if n]
    args.reports = args.reports or (20_000 if args.quick else 1_000_000)
    args.idle_seconds = args.idle_seconds or (5.0 if args.quick else 20.0)
    return args


def measure(broker: Broker, argv: list[str] | None = None) -> dict:
    """Every point on a running `broker`; saves the JSON and the plot; the results."""
    args = parse_args(argv)
    if args.shared_producer:  # the connector's environment override of the config file
        os.environ["RPT_KAFKA__SHARED_PRODUCER"] = "true"
    results: dict = {
        "command": " ".join([Path(sys.executable).name, "bench/accounts.py", *(argv or [])]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": run.machine(), "reports": args.reports, "idle_seconds": args.idle_seconds,
        "cap_s": args.cap, "label": args.label or git_head(), "points": [],
        "shared_producer": args.shared_producer,
    }  # fmt: skip
    for n in args.points:
        results["points"].append(measure_point(broker, n, args))
        print(table(results["points"]), flush=True)
    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    results["finished_load_average"] = os.getloadavg()
    results["targets_line"], results["targets"] = targets(results["points"])
    results["per_account"] = per_account_costs(results["points"])
    results["plot"] = draw(results, args.plot)
    save(results)
    report(results)
    return results


def draw(results: dict, path: Path) -> str | None:
    machine, code = results["machine"], (results.get("label") or "this tree").split()[0]
    title = (
        f"bench/accounts.py, {results['started']}, code {code}: {machine['cpu']}, "
        f"{machine['cores']} cores; drain {results['reports']:,} reports"
    )
    drawn = plot(results["points"], path, title)
    return str(drawn.relative_to(REPO)) if drawn and drawn.is_relative_to(REPO) else None


def report(results: dict) -> None:
    print(table(results["points"]))
    print(f"one more account adds: {results['per_account']}")
    print(results["targets_line"], flush=True)


def git_head() -> str | None:
    found = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                           text=True, check=False)  # fmt: skip
    return found.stdout.strip() or None


def save(results: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = results["started"].replace(":", "").replace("-", "")
    text = json.dumps(results, indent=2) + "\n"
    (RESULTS / "accounts-latest.json").write_text(text)
    path = RESULTS / f"accounts-{stamp}.json"
    path.write_text(text)
    return path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json:  # no measurement: the table, targets and plot of an earlier run
        results = json.loads(args.from_json.read_text())
        draw(results, args.plot)
        report(results)
        return 0
    broker = Broker("bench-accounts")
    broker.start()
    try:
        measure(broker, argv)
    finally:
        broker.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
