"""The network to Kafka fails under a running connector: a partition, then a refusing broker.

Real processes throughout: a private broker behind the TCP proxy (tests/tcp_proxy.py), the
simulator, and `python -m connector run --log-format json`. Every report the simulator handed
out (its --record file) must be in the topic exactly once, read back with read_committed.
"""

from __future__ import annotations

import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fault_rig import (
    JsonConnector,
    ProxiedBroker,
    add_producer_settings,
    committed,
    first_commits_after,
    json_events,
    proxied_broker,
    report_figures,
)
from harness import (
    Endpoints,
    SimulatorProcess,
    Topics,
    connector_env,
    free_port,
    ground_truth,
    stop_everything,
    verify,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.integration

ACCOUNTS = ("a1", "a2")
TOKENS = {name: f"tok-{name}-{uuid.uuid4().hex[:6]}" for name in ACCOUNTS}
# Short librdkafka timeouts so that a cut of CUT_S outlives them both: the broker aborts the
# open transactions on its own, and librdkafka fails the deliveries in flight.
TRANSACTION_TIMEOUT_MS = 10_000
MESSAGE_TIMEOUT_MS = 8_000
UNREACHABLE_AFTER_S = 5
CUT_S = 22
RATE, TOTAL = 200, 12_000  # one minute of reports, spread over both accounts
SHUTDOWN_TIMEOUT_S = 30  # above platform.request_timeout (20s by default)
# librdkafka's connection errors and the connector's own: with the summary, one line per 30 s
# per client at most (+2: the first line, and one with the count after the outage).
CONNECTION_ERROR = re.compile(r"Connection refused|Connect to \S+ failed|brokers are down")


def start_simulator(tmp_path: Path) -> SimulatorProcess:
    tokens = [arg for name in ACCOUNTS for arg in ("--token", f"{name}={TOKENS[name]}")]
    record = tmp_path / "handed-out.jsonl"
    args = [*tokens, "--record", str(record), "--rate", str(RATE), "--rate-total", str(TOTAL)]
    return SimulatorProcess([*args, "--seed", "14"]).start()


def start_connector(
    tmp_path: Path, simulator: SimulatorProcess, bootstrap: str, topics: Topics
) -> tuple[JsonConnector, Endpoints]:
    config = write_config(
        tmp_path / "c.toml",
        base_url=simulator.base_url,
        bootstrap=bootstrap,
        topics=topics,
        spool=tmp_path / "spool",
        accounts=ACCOUNTS,
    )
    add_producer_settings(
        config,
        {
            "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS,
            "message.timeout.ms": MESSAGE_TIMEOUT_MS,
        },
    )
    port = free_port()
    env = connector_env(TOKENS) | {
        "RPT_METRICS__LISTEN": f"127.0.0.1:{port}",
        "RPT_KAFKA__UNREACHABLE_AFTER": f"{UNREACHABLE_AFTER_S}s",
        "RPT_SHUTDOWN_TIMEOUT": str(SHUTDOWN_TIMEOUT_S),
    }
    connector = JsonConnector(config, tmp_path / "connector.log", env=env).start()
    endpoints = Endpoints(f"http://127.0.0.1:{port}")
    try:
        wait_until(endpoints.answers, 60, "the connector's status endpoint")
    except AssertionError:
        stop_everything(connector, simulator)
        raise AssertionError(f"the connector did not come up:\n{connector.output()}") from None
    return connector, endpoints


def reachable(endpoints: Endpoints) -> dict[str, float]:
    return {name: endpoints.metric("rpt_kafka_reachable", name) for name in ACCOUNTS}


def watch_the_cut(endpoints: Endpoints, seconds: float) -> dict[str, float | None]:
    """Sample /readyz and rpt_kafka_reachable through the cut; when each first said 'down'."""
    started = time.monotonic()
    first: dict[str, float | None] = {"readyz_503": None, **dict.fromkeys(ACCOUNTS)}
    while time.monotonic() - started < seconds:
        elapsed = time.monotonic() - started
        if first["readyz_503"] is None and not endpoints.ready():
            first["readyz_503"] = elapsed
        for name, value in reachable(endpoints).items():
            if first[name] is None and value == 0:
                first[name] = elapsed
        time.sleep(0.5)
    return first


def assert_exactly_once(direct: str, topics: Topics, tmp_path: Path) -> dict[str, int]:
    good, bad = ground_truth(tmp_path / "handed-out.jsonl")
    verdict = verify(direct, topics, good)
    figures = {
        "reports": len(good),
        "lost": len(verdict.lost),
        "duplicated": len(verdict.duplicated),
    }
    assert verdict.lost == [], f"{len(verdict.lost)} of {len(good)} reports lost"
    assert verdict.duplicated == [], f"{len(verdict.duplicated)} reports duplicated"
    assert len(verdict.dead_letters) == len(bad)
    return figures


def connection_error_lines(events: list[dict]) -> Counter:
    """Per (logger, account), the log lines that report a failed connection to Kafka."""
    return Counter(
        (e["logger"], e["account"]) for e in events if CONNECTION_ERROR.search(e["message"])
    )


@pytest.fixture
def rig() -> Iterator[ProxiedBroker]:
    with proxied_broker() as running:
        yield running


def test_a_partition_past_the_transaction_timeout_heals_without_loss_or_restart(
    rig: ProxiedBroker, tmp_path: Path, producers: str
) -> None:
    topics = Topics.fresh()
    simulator = start_simulator(tmp_path)
    connector, endpoints = start_connector(tmp_path, simulator, rig.bootstrap, topics)
    pid = connector.process.pid
    try:
        wait_until(
            lambda: all(committed(endpoints, name) > 3 for name in ACCOUNTS),
            90,
            "a few commits of every account before the cut",
        )
        assert reachable(endpoints) == dict.fromkeys(ACCOUNTS, 1.0)
        fetched_before = {n: simulator.stats()["accounts"][n]["handed_out"] for n in ACCOUNTS}
        with rig.proxy.cut(duration=CUT_S + 30):  # the timer only heals if this test hangs
            down = watch_the_cut(endpoints, CUT_S)
            marks = {name: committed(endpoints, name) for name in ACCOUNTS}
        healed = time.monotonic()
        # While cut off, /readyz said so within kafka.unreachable_after (plus sampling slack).
        assert down["readyz_503"] is not None, "/readyz answered 200 throughout the cut"
        assert down["readyz_503"] <= UNREACHABLE_AFTER_S + 10, down
        assert all(down[name] is not None for name in ACCOUNTS), down
        # Healed: every account commits again, in the same process, none stopped for good.
        recovered = first_commits_after(endpoints, marks, timeout=120)
        wait_until(lambda: reachable(endpoints) == dict.fromkeys(ACCOUNTS, 1.0), 60, "reachable")
        assert connector.alive() and connector.process.pid == pid, connector.output()[-3000:]
        simulator.wait_drained(TOTAL, timeout=240)
        fetched_after = {n: simulator.stats()["accounts"][n]["handed_out"] for n in ACCOUNTS}
        assert all(fetched_after[n] > fetched_before[n] for n in ACCOUNTS), fetched_after
        wait_until(
            lambda: all(endpoints.metric("rpt_spool_pending_records", n) == 0 for n in ACCOUNTS),
            120,
            "every spooled report committed",
        )
        states = {n: a["state"] for n, a in endpoints.status()["accounts"].items()}
        assert "failed" not in states.values(), states
        assert connector.terminate(SHUTDOWN_TIMEOUT_S + 30) == 0, connector.output()[-3000:]
    finally:
        stop_everything(connector, simulator)
    events = json_events(connector.output())  # --log-format json: every line, even librdkafka's
    assert not any(e["message"].startswith("%") for e in events)
    figures = assert_exactly_once(rig.direct, topics, tmp_path)
    report_figures(
        f"partition ({producers})",
        cut_s=CUT_S,
        readyz_503_after_s=down["readyz_503"],
        recovery_s={n: round(t - healed, 1) for n, t in recovered.items()},
        **figures,
    )


def test_a_refusing_broker_gives_json_lines_and_summarized_connection_errors(
    isolated_broker: Callable, tmp_path: Path, producers: str
) -> None:
    broker = isolated_broker()
    topics = Topics.fresh()
    simulator = start_simulator(tmp_path)
    connector, endpoints = start_connector(tmp_path, simulator, broker.bootstrap, topics)
    outage_s = 40
    try:
        wait_until(
            lambda: all(committed(endpoints, name) > 3 for name in ACCOUNTS), 90, "first commits"
        )
        broker.stop()  # the port now refuses: librdkafka retries every reconnect backoff
        stopped = time.monotonic()
        time.sleep(outage_s)
        broker.start()
        restarted = time.monotonic()
        marks = {name: committed(endpoints, name) for name in ACCOUNTS}
        recovered = first_commits_after(endpoints, marks, timeout=120)
        simulator.wait_drained(TOTAL, timeout=240)
        wait_until(
            lambda: all(endpoints.metric("rpt_spool_pending_records", n) == 0 for n in ACCOUNTS),
            120,
            "every spooled report committed",
        )
        assert connector.terminate(SHUTDOWN_TIMEOUT_S + 30) == 0, connector.output()[-3000:]
    finally:
        stop_everything(connector, simulator)
    events = json_events(connector.output())
    librdkafka = [e for e in events if e["logger"].startswith("librdkafka.")]
    assert librdkafka, "librdkafka said nothing through Python logging during the outage"
    lines = connection_error_lines(events)
    assert lines, "no connection error was logged at all during the outage"
    limit = int((restarted - stopped) // 30) + 2
    assert max(lines.values()) <= limit, lines
    figures = assert_exactly_once(broker.bootstrap, topics, tmp_path)
    report_figures(
        f"broker_refusing ({producers})",
        outage_s=round(restarted - stopped, 1),
        connection_error_lines=sum(lines.values()),
        per_client_max=max(lines.values()),
        recovery_s={n: round(t - restarted, 1) for n, t in recovered.items()},
        **figures,
    )
