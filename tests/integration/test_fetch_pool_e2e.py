"""Two accounts in one connector process, one platform dripping: the other account goes on.

The hostile platform answers each account by its token. The "dripping" account's first call
gets a body that comes a byte every 50 ms (minutes long; `platform.request_timeout` would cut it
only after REQUEST_TIMEOUT). While that call holds one fetch thread, the "steady" account's
answers are handed out: with `platform.fetch_threads = 2` every one of its reports is in Kafka,
exactly once, while the drip is still going. With one fetch thread the same steady account gets
no call at all while the drip lasts: the bound is real, and this test would see it broken.

Ground truth is the server's own account of what it handed out; Kafka is read back
(read_committed) and counted against it, msgid by msgid.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass

import hostile_platform as hostile
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from harness import ConnectorProcess, Topics
from hostile_ledger import figures, read_outcome, start_connector

from connector.codec.avro import decode_single_object

pytestmark = pytest.mark.integration
log = logging.getLogger("test_fetch_pool_e2e")

DRIPPING, STEADY = "dripping", "steady"
TOKENS = {DRIPPING: "drip-token-41b7", STEADY: "steady-token-9e03"}
REQUEST_TIMEOUT = 180.0  # the drip holds its call this long unless the platform goes away
SHUTDOWN_TIMEOUT = 200.0  # must exceed request_timeout (not waited for: the server stops first)
STEADY_BOUND = 60.0  # every steady report in Kafka within this: far below the drip's hold
FAST = 300  # drip body bytes sent at once


@dataclass
class Run:
    reports: hostile.Reports
    drip: hostile.Answer
    server: hostile.HostilePlatform
    topics: Topics
    connector: ConnectorProcess


def start_dripping(kafka_bootstrap: str, tmp_path, fetch_threads: int) -> Run:
    """Both accounts running, the dripping one's first call under way (the steady one has
    nothing to fetch yet); the server and connector are stopped if that never happens."""
    reports = hostile.Reports()
    drip = hostile.drip(reports, 40, interval=0.05, fast=FAST)
    assert len(drip.body) * 0.05 > 2 * REQUEST_TIMEOUT  # undisturbed it outlasts the test
    server = hostile.HostilePlatform(
        [drip], token=TOKENS[DRIPPING], tokens={TOKENS[STEADY]: []}
    ).start()
    topics = Topics.fresh()
    connector = start_connector(
        server, kafka_bootstrap, topics, tmp_path,
        shutdown_timeout=SHUTDOWN_TIMEOUT, accounts=TOKENS,
        request_timeout=f"{REQUEST_TIMEOUT:g}s", fetch_threads=fetch_threads,
    )  # fmt: skip
    try:
        hostile.wait_for(lambda: drip.sent > FAST + 5 or not connector.alive(), 90, "the drip")
        assert connector.alive(), connector.output()[-3000:]
    except BaseException:
        server.stop()
        if connector.alive():
            connector.kill()
        raise
    return Run(reports, drip, server, topics, connector)


def wait_until_in_kafka(bootstrap: str, topic: str, msgids: set[str], bound: float) -> float:
    """Poll the data topic (read_committed) until every msgid is there; seconds it took."""
    began = time.monotonic()
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"fetch-pool-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        missing = set(msgids)
        while missing:
            assert time.monotonic() - began < bound, f"{len(missing)} reports not in Kafka"
            message = consumer.poll(0.2)
            if message is not None and message.error() is None:
                missing.discard(str(decode_single_object(message.value())["msgid"]))
        return time.monotonic() - began
    finally:
        consumer.close()


def test_a_dripping_platform_for_one_account_does_not_delay_the_other(
    kafka_bootstrap: str, tmp_path
) -> None:
    run = start_dripping(kafka_bootstrap, tmp_path, fetch_threads=2)
    drip, server, topics, connector = run.drip, run.server, run.topics, run.connector
    steady = [hostile.good(run.reports, 100) for _ in range(5)]
    try:
        drip_began = time.monotonic()
        server.add(TOKENS[STEADY], steady)  # handed out only now, while the drip holds a thread
        wanted = {m for answer in steady for m in answer.msgids}
        took = wait_until_in_kafka(kafka_bootstrap, topics.data, wanted, STEADY_BOUND)
        drip_so_far = time.monotonic() - drip_began
        assert not drip.done.is_set() and drip.sent < len(drip.body)  # still dripping
        assert connector.alive(), connector.output()[-3000:]
    finally:
        server.stop()  # ends the drip: the connector keeps the partial body (dead letter)
    try:
        code = connector.terminate(timeout=60)
    finally:
        if connector.alive():
            connector.kill()
    output = connector.output()
    assert code == 0, output[-3000:]

    outcome = read_outcome(kafka_bootstrap, topics)
    for answer in steady:
        case = figures(answer, answer.body, outcome)
        assert (case.in_topic, case.lost, case.duplicated) == (100, 0, 0), case.line()
    assert sum(outcome.data.values()) == 500  # the drip's reports are in no data record
    dead = [r for r in outcome.dead_letters if set(hostile.msgids_in(r.value)) & set(drip.msgids)]
    partial = dead[0].value if dead else b""
    assert len(dead) <= 1 and drip.body.startswith(partial)
    case = figures(drip, partial, outcome)
    assert (case.in_topic, case.lost, case.duplicated) == (0, 0, 0), case.line()
    # A pool thread carries the account's name while it fetches: its log lines still name it
    # (the call the server's stop cut short is logged from the fetch side, on a pool thread).
    assert f"connector.platform [{DRIPPING}] account {DRIPPING}: " in output
    assert "[pool-" not in output and "[fetchpool" not in output
    log.warning(
        "steady account: 500 reports in Kafka %.1fs after its platform had them; the drip had "
        "been going %.1fs then (%d of %d bytes sent), and would hold its call %.0fs",
        took, drip_so_far, drip.sent, len(drip.body), REQUEST_TIMEOUT,
    )  # fmt: skip


def test_with_one_fetch_thread_the_drip_holds_up_the_other_account(
    kafka_bootstrap: str, tmp_path
) -> None:
    """The control: the same setup with `platform.fetch_threads = 1`. The steady account gets
    no call while the drip lasts: no report of it is handed out."""
    run = start_dripping(kafka_bootstrap, tmp_path, fetch_threads=1)
    drip, server, connector = run.drip, run.server, run.connector
    steady = [hostile.good(run.reports, 10)]
    try:
        calls = server.requests
        server.add(TOKENS[STEADY], steady)
        time.sleep(5.0)  # what must NOT happen: any get-rpt call while the drip holds the thread
        assert server.requests == calls
        assert not any(answer is steady[0] for answer in server.handed_out)
        assert not drip.done.is_set()
    finally:
        server.stop()
        if connector.alive():
            connector.terminate(timeout=60)
        if connector.alive():
            connector.kill()
