"""devkafka behind a proxy: clients follow the advertised address, so a cut really cuts them."""

from __future__ import annotations

import shutil
import time
import uuid

import pytest
from confluent_kafka import KafkaError, Producer
from fault_rig import proxied_broker
from kafka_helpers import consume_all, create_topic

import devkafka

pytestmark = pytest.mark.integration


def deliver(bootstrap: str, topic: str, value: bytes, timeout: float) -> list[KafkaError | None]:
    """Produce one record and wait; the delivery results (None = delivered)."""
    producer = Producer(
        {"bootstrap.servers": bootstrap, "message.timeout.ms": int(timeout * 1000), "log_level": 0}
    )
    results: list[KafkaError | None] = []
    producer.produce(topic, value=value, on_delivery=lambda err, _msg: results.append(err))
    producer.flush(timeout + 10)
    return results


def test_a_client_bootstrapped_at_the_broker_is_sent_through_the_proxy() -> None:
    with proxied_broker() as rig:
        topic = f"adv-{uuid.uuid4().hex[:8]}"
        create_topic(rig.direct, topic)
        assert rig.broker.advertised == rig.proxy.address
        # Bootstrapped at the broker's own client port, yet every later request goes through
        # the proxy: black-holed, nothing is delivered.
        rig.proxy.blackhole()
        assert deliver(rig.broker.bootstrap, topic, b"cut", timeout=5)[0] is not None
        rig.proxy.heal()
        before = rig.proxy.forwarded_bytes
        assert deliver(rig.broker.bootstrap, topic, b"healed", timeout=30) == [None]
        assert rig.proxy.forwarded_bytes > before
        values = [r.value for r in consume_all(rig.direct, topic)]
        assert values == [b"healed"]


def test_transactions_commit_through_the_proxy_and_checks_bypass_it() -> None:
    with proxied_broker() as rig:
        topic = f"adv-txn-{uuid.uuid4().hex[:8]}"
        create_topic(rig.direct, topic)
        producer = Producer({"bootstrap.servers": rig.bootstrap, "transactional.id": topic})
        producer.init_transactions(30)
        producer.begin_transaction()
        producer.produce(topic, value=b"in a transaction")
        producer.commit_transaction(30)
        # The broker's own transaction markers use the internal listener, and so does the
        # check: with the proxy black-holed, the committed record is still readable.
        rig.proxy.blackhole()
        started = time.monotonic()
        values = [r.value for r in consume_all(rig.direct, topic)]
        assert values == [b"in a transaction"], time.monotonic() - started
        rig.proxy.heal()


def test_the_cli_starts_an_advertising_broker_and_status_shows_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    name, proxy_port = f"pytest-cli-{uuid.uuid4().hex[:8]}", devkafka.free_port()
    assert devkafka.main(["up", "--name", name, "--advertise", "nowhere"]) == 1
    assert "'nowhere' is not HOST:PORT" in capsys.readouterr().err
    try:
        assert devkafka.main(["up", "--name", name, "--advertise", f"127.0.0.1:{proxy_port}"]) == 0
        bootstrap = capsys.readouterr().out.strip()
        assert devkafka.main(["status"]) == 0
        line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith(name + "\t"))
        assert line.split("\t")[1] == bootstrap
        assert line.endswith(f"advertises 127.0.0.1:{proxy_port}")
    finally:
        devkafka.main(["down", "--name", name, "--wipe"])
        shutil.rmtree(devkafka.DEFAULT_ROOT / name, ignore_errors=True)
