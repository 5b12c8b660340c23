"""testcontainers' Kafka module on an engine like this machine's: no bridge, no registry.

`KafkaContainer` (KRaft mode) expects Confluent's image layout and a bridge network with
published ports. The image `make image-test` builds (tools/image_test_kafka/: Apache Kafka from
devkafka's Maven Central jars) has that layout; this subclass only moves the container onto the
host network with free loopback ports, which an engine started with `--bridge=none` needs.
"""

from __future__ import annotations

import os
import socket
from textwrap import dedent

# No ryuk image can be pulled here; the fixture stops its container itself.
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

from testcontainers.community.kafka import KafkaContainer

START_TIMEOUT_S = 180


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class HostNetworkKafka(KafkaContainer):
    """KafkaContainer(...).with_kraft() on the host network: client, broker, controller ports."""

    def __init__(self, image: str) -> None:
        self.client_port, self.broker_port, self.controller_port = (_free_port() for _ in "abc")
        super().__init__(image=image, port=self.client_port, network_mode="host")
        self.ports.clear()  # the host network publishes nothing (docker refuses port bindings)
        self.listeners = (
            f"PLAINTEXT://127.0.0.1:{self.client_port},BROKER://127.0.0.1:{self.broker_port}"
        )
        self.with_env("KAFKA_LISTENERS", self.listeners)
        # One broker: transactions and groups need every internal topic at one replica.
        for key in (
            "TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
            "TRANSACTION_STATE_LOG_MIN_ISR",
            "DEFAULT_REPLICATION_FACTOR",
            "MIN_INSYNC_REPLICAS",
        ):
            self.with_env(f"KAFKA_{key}", "1")
        self.with_env("KAFKA_TRANSACTION_STATE_LOG_NUM_PARTITIONS", "4")
        # As devkafka: a misspelt topic must fail, not appear.
        self.with_env("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false")
        self.with_kraft()

    def _verify_min_kraft_version(self) -> None:
        """The check compares Confluent Platform versions; this image is Apache Kafka 4."""

    def _configure_kraft(self) -> None:
        super()._configure_kraft()
        controller = f"127.0.0.1:{self.controller_port}"
        self.with_env("KAFKA_LISTENERS", f"{self.listeners},CONTROLLER://{controller}")
        self.with_env("KAFKA_CONTROLLER_QUORUM_VOTERS", f"1@{controller}")

    def get_container_host_ip(self) -> str:
        return "127.0.0.1"

    def _get_exposed_port(self, port: int) -> int:
        return port  # host network: nothing is mapped

    def tc_start(self) -> None:
        """The module's start script, with loopback listeners instead of `hostname -i`."""
        script = dedent(
            f"""
            #!/bin/bash
            {self.boot_command}
            export KAFKA_ADVERTISED_LISTENERS={self.listeners}
            . /etc/confluent/docker/bash-config
            /etc/confluent/docker/configure
            /etc/confluent/docker/launch
            """
        )
        self.create_file(script.strip().encode(), KafkaContainer.TC_START_SCRIPT)

    def start(self, timeout: int = START_TIMEOUT_S) -> HostNetworkKafka:
        super().start(timeout=timeout)
        return self
