"""Every malformed get-rpt body, end to end: hostile server → `connector run` → real Kafka.

One connector process is run against a script holding every case between good batches; each
case is then checked record by record against what the server handed out: data topic +
dead-letter topic = everything that reached the connector, exactly once, and each dead letter
carries the reason the fetcher saw (`error.message`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import hostile_platform as hostile
import pytest
from harness import Topics
from hostile_ledger import TOKEN, Outcome, figures, read_outcome, serve_then_stop, start_connector

pytestmark = pytest.mark.integration
log = logging.getLogger("test_malformed_bodies")

MAX_RESPONSE_BYTES = 20_000  # small, so that the oversized case stays small


@dataclass
class Run:
    cases: dict[str, hostile.Answer]
    good: list[hostile.Answer]
    outcome: Outcome
    exit_code: int
    output: str


def script() -> tuple[dict[str, hostile.Answer], list[hostile.Answer]]:
    reports = hostile.Reports()
    cases = {
        "duplicate_rpts": hostile.duplicate_rpts(reports, 4),
        "duplicate_msgid": hostile.duplicate_msgid(reports, 4),
        "result_501_with_rpts": hostile.result_with_reports(reports, 5),
        "rpts_null": hostile.rpts_null(),
        "bom": hostile.with_bom(reports, 6),
        "lone_surrogate": hostile.lone_surrogate(reports, 7, bad=3),
        "leading_zero": hostile.leading_zero(reports, 7, bad=0),
        "cut": hostile.cut(reports, 8),
        "oversized": hostile.oversized(reports, 80),
    }
    assert len(cases["oversized"].body) > MAX_RESPONSE_BYTES
    good = [hostile.good(reports, 10) for _ in range(len(cases) + 1)]
    answers = [good[0]]
    for index, answer in enumerate(cases.values()):
        answers += [answer, good[index + 1]]
    return cases, answers


@pytest.fixture(scope="module")
def run(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Run:
    tmp_path: Path = tmp_path_factory.mktemp("malformed")
    cases, answers = script()
    topics = Topics.fresh()
    server = hostile.HostilePlatform(answers, token=TOKEN, log_file=tmp_path / "handed-out.jsonl")
    server.start()
    connector = None
    try:
        connector = start_connector(
            server, kafka_bootstrap, topics, tmp_path,
            max_response_bytes=MAX_RESPONSE_BYTES, request_timeout="5s",
        )  # fmt: skip
        code = serve_then_stop(server, connector, timeout=120)
    finally:
        if connector is not None and connector.alive():
            connector.kill()
        server.stop()
    good = [a for a in answers if a.kind == "good"]
    return Run(cases, good, read_outcome(kafka_bootstrap, topics), code, connector.output())


def received(answer: hostile.Answer) -> bytes:
    """The bytes of the answer the connector could keep (a cap cuts an oversized body)."""
    if answer.kind == "oversized":
        return answer.body[:MAX_RESPONSE_BYTES]
    return answer.sent_body


def headers(record) -> dict[str, str]:
    return {key: value.decode() for key, value in record.headers}


def test_the_run_ends_cleanly(run: Run) -> None:
    assert run.exit_code == 0, run.output[-3000:]


def test_nothing_outside_the_script_and_every_good_batch_published(run: Run) -> None:
    handed = {m for a in [*run.cases.values(), *run.good] for m in hostile.msgids_in(received(a))}
    assert set(run.outcome.data) <= handed
    assert set(run.outcome.dead_msgids()) <= handed
    for answer in run.good:
        case = figures(answer, received(answer), run.outcome)
        assert (case.in_topic, case.in_dlq, case.lost, case.duplicated) == (10, 0, 0, 0)


WHOLE_BODY = {
    # case: (error.class, reason header, text the error.message must contain)
    "duplicate_rpts": ("InvalidResponseError", "invalid_response", "repeats the key 'rpts'"),
    "duplicate_msgid": ("InvalidResponseError", "invalid_response", "repeats the key 'msgid'"),
    "result_501_with_rpts": ("PlatformResultError", "rejected_result", "result 501: 系统忙"),
    "cut": ("InvalidResponseError", "invalid_response", "body cut off after {n} bytes"),
    "oversized": (
        "InvalidResponseError", "invalid_response", "exceeds max_response_bytes (20000)",
    ),
}  # fmt: skip


@pytest.mark.parametrize("kind", list(WHOLE_BODY))
def test_a_body_dead_lettered_whole_with_the_fetch_time_reason(run: Run, kind: str) -> None:
    answer = run.cases[kind]
    kept = received(answer)
    case = figures(answer, kept, run.outcome)
    log.warning("%s", case.line())
    (dead,) = run.outcome.dead_letters_of(answer, kept)
    assert dead.value == kept  # every byte that arrived, as it arrived
    error_class, reason, message = WHOLE_BODY[kind]
    got = headers(dead)
    assert (got["error.class"], got["reason"], got["account"]) == (error_class, reason, "main")
    assert message.format(n=len(kept)) in got["error.message"]
    assert TOKEN not in got["error.message"]
    assert (case.in_topic, case.lost, case.duplicated) == (0, 0, 0)
    assert case.in_dlq == case.received > 0


@pytest.mark.parametrize(
    ("kind", "field", "why"),
    [
        ("lone_surrogate", "errdesc", "lone UTF-16 surrogate"),
        ("leading_zero", "pknum", "leading zeros"),
    ],
)
def test_one_bad_report_is_one_dead_letter_the_others_are_published(
    run: Run, kind: str, field: str, why: str
) -> None:
    answer = run.cases[kind]
    case = figures(answer, received(answer), run.outcome)
    log.warning("%s", case.line())
    assert (case.handed_out, case.in_topic, case.in_dlq) == (7, 6, 1)
    assert (case.lost, case.duplicated) == (0, 0)
    (dead,) = run.outcome.dead_letters_of(answer, received(answer))
    assert dead.value in answer.body and dead.value.startswith(b"{")  # the report's own bytes
    got = headers(dead)
    assert (got["error.class"], got["reason"]) == ("ReportError", "invalid_report")
    assert f"field '{field}'" in got["error.message"] and why in got["error.message"]


@pytest.mark.parametrize("kind", ["bom", "rpts_null"])
def test_bodies_that_are_fine_after_all_are_published(run: Run, kind: str) -> None:
    answer = run.cases[kind]
    case = figures(answer, received(answer), run.outcome)
    log.warning("%s", case.line())
    assert case.in_topic == case.handed_out == {"bom": 6, "rpts_null": 0}[kind]
    assert (case.in_dlq, case.lost, case.duplicated) == (0, 0, 0)


def test_no_dead_letter_is_left_unexplained(run: Run) -> None:
    # 5 whole bodies + 2 single reports; rpts null must not be an invalid response any more.
    assert len(run.outcome.dead_letters) == len(WHOLE_BODY) + 2
    assert "invalid_response" not in [
        headers(r)["reason"] for r in run.outcome.dead_letters if not hostile.msgids_in(r.value)
    ]
