"""A platform that drips its answer (headers, then a byte at a time) and a SIGTERM mid-drip.

Before `platform.request_timeout`, one such call lasted as long as the platform liked (the read
timeout is per socket read), SIGTERM then exited 1 after shutdown_timeout and the reports being
read were in neither topic. Now: the exchange is cut at its deadline, what arrived is spooled
and dead-lettered with the reason, the process exits 0, nothing else is lost.
"""

from __future__ import annotations

import logging
import time

import hostile_platform as hostile
import pytest
from harness import Topics
from hostile_ledger import TOKEN, figures, read_outcome, start_connector

pytestmark = pytest.mark.integration
log = logging.getLogger("test_drip")

REQUEST_TIMEOUT = 4.0
SHUTDOWN_TIMEOUT = 12.0
FAST = 300  # body bytes sent at once before the drip


def test_sigterm_mid_drip_exits_0_with_the_partial_body_dead_lettered(
    kafka_bootstrap: str, tmp_path
) -> None:
    reports = hostile.Reports()
    first = hostile.good(reports, 10)
    drip = hostile.drip(reports, 30, interval=0.05, fast=FAST)
    never = hostile.good(reports, 10)  # would come next: must never be asked for after stop
    assert len(drip.body) * 0.05 > 10 * REQUEST_TIMEOUT  # undisturbed it would outlast all
    server = hostile.HostilePlatform([first, drip, never], token=TOKEN).start()
    topics = Topics.fresh()
    connector = start_connector(
        server, kafka_bootstrap, topics, tmp_path,
        shutdown_timeout=SHUTDOWN_TIMEOUT, request_timeout=f"{REQUEST_TIMEOUT:g}s",
    )  # fmt: skip
    try:
        hostile.wait_for(lambda: drip.sent > FAST + 5 or not connector.alive(), 90, "the drip")
        assert connector.alive(), connector.output()[-3000:]
        stopped_at = time.monotonic()
        code = connector.terminate(timeout=SHUTDOWN_TIMEOUT + 60)
        took = time.monotonic() - stopped_at
    finally:
        if connector.alive():
            connector.kill()
        server.stop()
    output = connector.output()
    assert code == 0, output[-3000:]
    assert took < SHUTDOWN_TIMEOUT + 20, f"exit took {took:.1f}s"  # loose: noisy machine
    assert never in server.script  # no fetch after the stop

    outcome = read_outcome(kafka_bootstrap, topics)
    assert figures(first, first.body, outcome).in_topic == 10
    (dead,) = outcome.dead_letters  # the partial body, and nothing else
    partial = dead.value
    assert FAST <= len(partial) < len(drip.body)
    assert partial == drip.body[: len(partial)]  # exactly the bytes that arrived, in order
    message = dict(dead.headers)["error.message"].decode()
    assert message.startswith(f"get-rpt body cut off after {len(partial)} bytes: ")
    assert f"request_timeout {REQUEST_TIMEOUT:g}s exceeded" in message
    case = figures(drip, partial, outcome)
    log.warning("%s; SIGTERM to exit %.1fs; %d of %d bytes", case.line(), took, len(partial),
                len(drip.body))  # fmt: skip
    assert (case.in_topic, case.lost, case.duplicated) == (0, 0, 0)
    assert case.in_dlq == case.received
    assert sum(outcome.data.values()) == 10  # only the first batch is data
