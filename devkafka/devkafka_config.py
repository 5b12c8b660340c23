"""The broker's server.properties: KRaft single node, optionally advertising another address."""

from __future__ import annotations

from pathlib import Path

from devkafka_base import HOST, NODE_ID, DevKafkaError


def parse_address(value: str) -> tuple[str, int]:
    """HOST:PORT, as given to `--advertise`; a clear error for anything else."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise DevKafkaError(f"advertised address {value!r} is not HOST:PORT")
    return host, int(port)


def _listener_properties(
    broker_port: int, controller_port: int, advertise: str | None, internal_port: int | None
) -> dict[str, str]:
    controller = f"CONTROLLER://{HOST}:{controller_port}"
    if advertise is None:
        return {
            "listeners": f"PLAINTEXT://{HOST}:{broker_port},{controller}",
            "advertised.listeners": f"PLAINTEXT://{HOST}:{broker_port}",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        }
    assert internal_port is not None
    internal = f"INTERNAL://{HOST}:{internal_port}"
    return {
        "listeners": f"PLAINTEXT://{HOST}:{broker_port},{internal},{controller}",
        "advertised.listeners": f"PLAINTEXT://{advertise},{internal}",
        "inter.broker.listener.name": "INTERNAL",
        "listener.security.protocol.map": (
            "PLAINTEXT:PLAINTEXT,INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT"
        ),
    }


def _server_properties(
    broker_port: int,
    controller_port: int,
    data_dir: Path,
    advertise: str | None = None,
    internal_port: int | None = None,
) -> str:
    props = {
        "process.roles": "broker,controller",
        "node.id": str(NODE_ID),
        # Static voters: `storage format` then needs no --standalone/--initial-controllers.
        "controller.quorum.voters": f"{NODE_ID}@{HOST}:{controller_port}",
        **_listener_properties(broker_port, controller_port, advertise, internal_port),
        "controller.listener.names": "CONTROLLER",
        "log.dirs": str(data_dir),
        # One broker: every internal topic must be satisfiable with a single replica, or
        # transactions and consumer groups hang waiting for replicas that never come.
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # Few internal partitions: creating 50 of each on first use costs seconds.
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.num.partitions": "4",
        "num.partitions": "1",
        "group.initial.rebalance.delay.ms": "0",
        # The connector creates its own topics; a typo must fail loudly, not create a topic.
        "auto.create.topics.enable": "false",
        # Abort transactions of crashed producers promptly (chaos tests wait on this).
        "transaction.abort.timed.out.transaction.cleanup.interval.ms": "5000",
        "transaction.remove.expired.transaction.cleanup.interval.ms": "60000",
        "transactional.id.expiration.ms": str(24 * 3600 * 1000),
        # After a SIGKILL the old registration blocks the restarted broker until its session
        # expires (default 9 s); shorter keeps kill/restart chaos tests quick, while still
        # tolerating multi-second stalls on a busy 2-core machine.
        "broker.heartbeat.interval.ms": "1000",
        "broker.session.timeout.ms": "4000",
        "num.network.threads": "2",
        "num.io.threads": "4",
        "num.recovery.threads.per.data.dir": "1",
        "log.retention.hours": "24",
        "log.segment.bytes": str(64 * 1024 * 1024),
    }
    return "".join(f"{key}={value}\n" for key, value in props.items())
