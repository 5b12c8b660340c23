"""`make demo` as a newcomer runs it: tools/demo.py in its own process, starting a real broker.

Each test gives the demo a private devkafka instance (`--broker`), so it starts (and, without
`--keep`, stops) a broker of its own and never touches the suite's shared one.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime

import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME
from harness import REPO, consume_all

import devkafka
from connector.codec.avro import decode_single_object
from connector.codec.report import FIELDS

pytestmark = pytest.mark.integration

DEMO = REPO / "tools" / "demo.py"
REPORTS, RATE, RATE_SECONDS = 300, 50, 1  # the simulator hands out 350 reports in all
HANDED_OUT = REPORTS + RATE * RATE_SECONDS
KCAT = re.compile(
    r"^  (kcat -b (\S+) -C -t (\S+) -o beginning -e -X isolation\.level=read_committed)$"
)


@pytest.fixture
def broker_name() -> Iterator[str]:
    name = f"pytest-demo-{uuid.uuid4().hex[:8]}"
    yield name
    broker = devkafka.Broker(name)
    broker.wipe()
    shutil.rmtree(broker.dir, ignore_errors=True)


def run_demo(*args: str) -> str:
    command = [sys.executable, str(DEMO), "--reports", str(REPORTS), "--rate", str(RATE)]
    command += ["--rate-seconds", str(RATE_SECONDS), *args]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def epoch_ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


def summary_value(output: str, name: str) -> int:
    return int(re.search(rf"^  {re.escape(name)}\s+(\d+)$", output, re.M).group(1))


def printed_record(output: str) -> tuple[int, int, dict]:
    """The partition, offset and decoded value of the record the demo printed."""
    head = re.search(r"^one record \(partition (\d+), offset (\d+), key .*\n", output, re.M)
    body, _end = json.JSONDecoder().raw_decode(output[head.end() :])
    return int(head.group(1)), int(head.group(2)), body


def test_demo_ends_with_the_topic_a_decoded_record_and_kcat_and_keep_leaves_the_broker_up(
    broker_name: str,
) -> None:
    output = run_demo("--keep", "--broker", broker_name)
    broker = devkafka.Broker(broker_name)
    assert broker.is_running(), output
    published = summary_value(output, "records published")
    assert published + summary_value(output, "dead letters") == HANDED_OUT, output

    topic_line = re.search(r"^topic (demo-\w+\.status-reports): (\d+) records", output, re.M)
    topic = topic_line.group(1)
    records = consume_all(broker.bootstrap, topic)
    assert int(topic_line.group(2)) == len(records) == published

    partition, offset, shown = printed_record(output)
    assert set(shown) == set(FIELDS) | {"account", "fetched_at"}
    assert shown["account"] == "demo"
    (stored,) = [r for r in records if (r.partition, r.offset) == (partition, offset)]
    assert shown == json.loads(json.dumps(decode_single_object(stored.value), default=str))

    # The Kafka timestamp is the produce time (CreateTime, after the fetch), not the rtime.
    for record in records:
        value = decode_single_object(record.value)
        kind, millis = record.timestamp
        assert kind == TIMESTAMP_CREATE_TIME
        assert millis >= epoch_ms(value["fetched_at"]) >= epoch_ms(value["rtime"])

    kcat = [KCAT.match(line) for line in output.splitlines() if KCAT.match(line)]
    assert [(m.group(2), m.group(3)) for m in kcat] == [(broker.bootstrap, topic)], output
    if shutil.which("kcat") is not None:
        read = subprocess.run(
            [*shlex.split(kcat[0].group(1)), "-f", "%p:%o\\n"],
            capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
        assert sorted(read.stdout.split()) == sorted(f"{r.partition}:{r.offset}" for r in records)
    else:
        assert "kcat is not installed here: apt-get install kcat" in output

    stop = re.search(r"keeps running at (\S+); stop it with: (.+)$", output, re.M)
    assert stop.group(1) == broker.bootstrap
    subprocess.run(shlex.split(stop.group(2)), cwd=REPO, check=True, timeout=120)
    assert not devkafka.Broker(broker_name).is_running()


def test_demo_without_keep_stops_the_broker_it_started(broker_name: str) -> None:
    output = run_demo("--broker", broker_name)
    assert "the Kafka broker the demo started is stopped" in output
    assert not devkafka.Broker(broker_name).is_running()
    assert re.search(r"^topic demo-\w+\.status-reports: \d+ records", output, re.M), output
