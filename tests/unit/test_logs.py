"""librdkafka's lines go through Python logging, and repeated connection errors are summarized."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap

import pytest

from connector.observe.logs import JsonFormatter, RepeatSummary, librdkafka_logger

# What confluent-kafka passes to logger.log for a refused connection (seen from 2.x).
FORMAT = "%s [%s] %s"
REFUSED = (
    "FAIL",
    "rdkafka#producer-1",
    "[thrd:127.0.0.1:1/bootstrap]: 127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: "
    "Connection refused (after 0ms in state CONNECT)",
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def captured() -> Capture:
    handler = Capture()
    parent = logging.getLogger("librdkafka")
    parent.addHandler(handler)
    parent.setLevel(logging.DEBUG)
    yield handler
    parent.removeHandler(handler)
    parent.setLevel(logging.NOTSET)


def test_a_line_keeps_its_level_and_text_under_the_clients_logger_name(captured: Capture) -> None:
    logger = librdkafka_logger("producer-main")
    logger.log(logging.INFO, FORMAT, "CONFWARN", "rdkafka#producer-1", "a config warning")
    (record,) = captured.records
    assert record.name == "librdkafka.producer-main"
    assert record.levelno == logging.INFO
    assert record.getMessage() == "CONFWARN [rdkafka#producer-1] a config warning"
    assert json.loads(JsonFormatter().format(record))["message"] == record.getMessage()


def test_repeated_connection_errors_give_one_line_per_interval_with_a_count(
    captured: Capture,
) -> None:
    clock = FakeClock()
    logger = librdkafka_logger("producer-main", summary=RepeatSummary(clock))
    for _ in range(100):  # 100 errors within 29.7 s: only the first is logged
        logger.log(logging.ERROR, FORMAT, *REFUSED)
        clock.now += 0.3
    assert len(captured.records) == 1
    clock.now += 1.0  # now past 30 s since the logged one
    logger.log(logging.ERROR, FORMAT, *REFUSED)
    first, second = captured.records
    assert "(+" not in first.getMessage()
    assert second.getMessage().endswith("(+99 more connection errors since the last one logged)")
    assert second.levelno == logging.ERROR
    clock.now += 29.0
    logger.log(logging.ERROR, FORMAT, *REFUSED)
    assert len(captured.records) == 2


def test_other_lines_are_never_held_back_and_each_client_counts_its_own(
    captured: Capture,
) -> None:
    clock = FakeClock()
    producer = librdkafka_logger("producer-a", summary=RepeatSummary(clock))
    consumer = librdkafka_logger("progress-a", summary=RepeatSummary(clock))
    for _ in range(3):
        producer.log(logging.ERROR, FORMAT, *REFUSED)
        producer.log(logging.WARNING, FORMAT, "TXNERR", "rdkafka#producer-1", "abortable")
        consumer.log(logging.ERROR, FORMAT, "REQTMOUT", "rdkafka#consumer-2", "timed out")
    names = [(r.name, r.args[0]) for r in captured.records]
    assert names == [
        ("librdkafka.producer-a", "FAIL"),
        ("librdkafka.producer-a", "TXNERR"),
        ("librdkafka.progress-a", "REQTMOUT"),
        ("librdkafka.producer-a", "TXNERR"),
        ("librdkafka.producer-a", "TXNERR"),
    ]


def test_a_real_client_logs_json_lines_only_and_summarized() -> None:
    """A real librdkafka producer against a closed port: stderr stays JSON, one FAIL line."""
    script = textwrap.dedent(
        """
        import socket, threading
        from confluent_kafka import Producer
        from connector.observe.logs import librdkafka_logger, setup_logging

        setup_logging("INFO", "json")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]  # closed once the block ends: connections are refused

        logger = librdkafka_logger("producer-main")

        def run():
            producer = Producer({
                "bootstrap.servers": f"127.0.0.1:{port}",
                "reconnect.backoff.ms": 10, "reconnect.backoff.max.ms": 50,
                "logger": logger,
            })
            for _ in range(30):
                producer.poll(0.1)

        thread = threading.Thread(target=run, name="publish-main")
        thread.start()
        thread.join()
        print(logger.summary.held_back)  # what librdkafka repeated, held back
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    events = [json.loads(line) for line in result.stderr.splitlines()]  # every line is JSON
    failures = [e for e in events if e["message"].startswith("FAIL ")]
    assert len(failures) == 1, events
    assert failures[0]["logger"] == "librdkafka.producer-main"
    assert failures[0]["account"] == "main"
    assert failures[0]["level"] == "ERROR"
    assert "Connection refused" in failures[0]["message"]
    assert int(result.stdout) >= 1  # librdkafka did repeat itself: the summary held it back


def test_clients_made_again_under_one_name_share_its_summary(captured: Capture) -> None:
    name = f"progress-{id(captured)}"  # a name no other test has used
    for _ in range(3):  # e.g. a progress consumer made anew for every read, Kafka still away
        librdkafka_logger(name).log(logging.ERROR, FORMAT, *REFUSED)
    assert len(captured.records) == 1


def test_repeat_summary_counts_what_it_held_back_for_error_callbacks_too() -> None:
    clock = FakeClock()
    summary = RepeatSummary(clock, interval=30.0)
    assert summary.admit() == 0
    assert [summary.admit() for _ in range(4)] == [None] * 4
    clock.now += 30.0
    assert summary.admit() == 4
    assert summary.admit() is None
