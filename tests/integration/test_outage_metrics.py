"""A real connector scraped through a Kafka outage (the broker process stopped, then started).

What an operator must see, from /metrics and /status of the running process: Kafka not
reachable, the uncommitted age growing while nothing commits, the spool counted in reports,
the aborted transaction counted, readiness 503 while the process-scope probe stays 200; and
after the broker is back, everything reachable, committed and at zero again. Every report is
then checked against the simulator's record of what it handed out.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from harness import (
    TOKEN,
    ConnectorProcess,
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
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.integration

UNREACHABLE_AFTER = 5


def scrape(endpoints: Endpoints) -> dict[tuple[str, frozenset], float]:
    text = httpx.get(f"{endpoints.base_url}/metrics", timeout=5).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(endpoints: Endpoints, name: str, **labels: str) -> float | None:
    return scrape(endpoints).get((name, frozenset({"account": "main", **labels}.items())))


def start(
    tmp_path: Path, bootstrap: str, topics: Topics
) -> tuple[SimulatorProcess, ConnectorProcess, Endpoints]:
    record = tmp_path / "handed-out.jsonl"
    simulator = SimulatorProcess(
        ["--token", f"main={TOKEN}", "--record", str(record), "--rate", "300",
         "--rate-total", "60000", "--seed", "5"]
    ).start()  # fmt: skip
    port = free_port()
    config = write_config(
        tmp_path / "c.toml",
        base_url=simulator.base_url,
        bootstrap=bootstrap,
        topics=topics,
        spool=tmp_path / "spool",
    )
    env = connector_env() | {
        "RPT_METRICS__LISTEN": f"127.0.0.1:{port}",
        "RPT_KAFKA__UNREACHABLE_AFTER": str(UNREACHABLE_AFTER),
    }
    connector = ConnectorProcess(config, tmp_path / "connector.log", env=env).start()
    endpoints = Endpoints(f"http://127.0.0.1:{port}")
    wait_until(endpoints.answers, 60, "the connector's endpoints")
    return simulator, connector, endpoints


def growing(endpoints: Endpoints, name: str, seen: list[float]) -> Callable[[], bool]:
    def check() -> bool:
        seen.append(sample(endpoints, name) or 0.0)
        return len(seen) >= 3 and seen[-3] < seen[-2] < seen[-1]

    return check


# The pipeline's log lines for "abort and send again" and "a new producer" (pipeline._handle).
SENT_AGAIN_AND_RECREATED = ("sending the spool entries again", "recreating the producer")


def test_the_new_series_follow_a_kafka_outage_and_recover(
    isolated_broker: Callable, tmp_path: Path
) -> None:
    broker = isolated_broker()
    bootstrap = broker.bootstrap
    topics = Topics.fresh()
    simulator, connector, endpoints = start(tmp_path, bootstrap, topics)
    try:
        wait_until(lambda: sample(endpoints, "rpt_kafka_reachable") == 1, 90, "reachable")
        wait_until(
            lambda: (sample(endpoints, "rpt_records_published_total") or 0) > 0, 90, "commits"
        )
        assert sample(endpoints, "rpt_account_state", state="polling") == 1
        assert sample(endpoints, "rpt_transaction_aborts_total") == 0
        restarts_before = sample(endpoints, "rpt_producer_restarts_total")

        broker.stop()
        outage_started = time.monotonic()
        wait_until(lambda: sample(endpoints, "rpt_kafka_reachable") == 0, 120, "reachable 0")
        ages: list[float] = []
        wait_until(growing(endpoints, "rpt_oldest_uncommitted_age_seconds", ages), 60,
                   "the uncommitted age to grow", interval=1.0)  # fmt: skip
        # Nothing commits, nothing calls the observer for it: the age grows at scrape time.
        wait_until(lambda: (sample(endpoints, "rpt_oldest_uncommitted_age_seconds") or 0) > 15,
                   60, "the uncommitted age to pass 15 s")  # fmt: skip
        status = endpoints.status()
        account = status["accounts"]["main"]
        assert status["kafka"]["reachable"] is False
        assert account["kafka_reachable"] is False
        # The spool is counted in reports (many per answer), in /status as in the gauge.
        assert account["spool_pending"] > account["spool_pending_entries"] > 0
        assert (sample(endpoints, "rpt_spool_pending_records") or 0) > 0
        assert account["oldest_uncommitted_age_s"] > 0
        # The connector is not ready, but the process can work: Kubernetes keeps the pod.
        assert httpx.get(f"{endpoints.base_url}/readyz", timeout=5).status_code == 503
        assert httpx.get(f"{endpoints.base_url}/readyz?scope=process", timeout=5).status_code == 200
        # Once the broker has been gone for 2 × statistics.interval.ms, no series says "up":
        # fresh statistics say down, stale ones are dropped.
        time.sleep(max(0.0, outage_started + 35 - time.monotonic()))
        up = [v for (n, _), v in scrape(endpoints).items() if n == "rpt_broker_up"]
        assert 1.0 not in up, up

        broker.start()
        wait_until(lambda: sample(endpoints, "rpt_kafka_reachable") == 1, 180, "reachable again")
        wait_until(lambda: simulator.stats()["pending"] == 0 and simulator.stats()["generated"]
                   >= 60000, 300, "the simulator to drain")  # fmt: skip
        wait_until(lambda: sample(endpoints, "rpt_spool_pending_records") == 0, 180, "commits")
        assert sample(endpoints, "rpt_oldest_uncommitted_age_seconds") == 0
        # The transaction open when the broker went away takes no more entries and is
        # committed again until the broker answers: within transaction.timeout.ms that commit
        # simply succeeds; past it the broker aborted it and a new producer sends it again.
        # Either way the counters say what the log says happened.
        aborts = sample(endpoints, "rpt_transaction_aborts_total")
        restarts = sample(endpoints, "rpt_producer_restarts_total")
        output = connector.output()
        sent_again, recreated = (output.count(line) for line in SENT_AGAIN_AND_RECREATED)
        assert restarts == recreated and restarts >= restarts_before, (restarts, recreated)
        assert sent_again - recreated <= aborts <= sent_again, (aborts, sent_again, recreated)
        assert endpoints.status()["accounts"]["main"]["spool_pending"] == 0
        wait_until(endpoints.ready, 60, "/readyz 200 again")
        assert connector.terminate(60) == 0, connector.output()
    finally:
        stop_everything(connector, simulator)
    good, bad = ground_truth(tmp_path / "handed-out.jsonl")
    verdict = verify(bootstrap, topics, good)
    assert verdict.lost == [] and verdict.duplicated == []
    assert set(verdict.delivered) == set(good)
    assert len(verdict.dead_letters) == len(bad)
