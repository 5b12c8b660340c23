"""Counting what a hostile platform handed out against what Kafka holds, report by report.

Ground truth is the server's own log (tests/hostile_platform.py): per answer, the msgids in
the body and the bytes it wrote. Every msgid is unique across a run, so the data topic (by
the Avro record's msgid) and the dead-letter topic (by the msgids inside each raw value) can
be matched to their answers exactly, without trusting the connector's own bookkeeping.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from harness import ConnectorProcess, Topics, connector_env, write_config
from hostile_platform import Answer, HostilePlatform, msgids_in, wait_for
from kafka_helpers import ConsumedRecord, consume_all

from connector.codec.avro import decode_single_object

TOKEN = "hostile-token-5c2a"


@dataclass
class Outcome:
    """What Kafka holds after the run (read_committed)."""

    data: Counter  # msgid → how many records
    dead_letters: list[ConsumedRecord]

    def dead_msgids(self) -> Counter:
        return Counter(m for record in self.dead_letters for m in msgids_in(record.value))

    def dead_letters_of(self, answer: Answer, received: bytes) -> list[ConsumedRecord]:
        """The dead letters holding bytes of this answer (whole, cut, or one report)."""
        mine = set(msgids_in(received))
        return [r for r in self.dead_letters if mine & set(msgids_in(r.value))]


@dataclass
class CaseFigures:
    kind: str
    handed_out: int  # reports in the body the platform meant to send
    received: int  # msgids whose bytes reached the connector
    in_topic: int
    in_dlq: int
    lost: int  # received, yet in neither topic
    duplicated: int  # more copies than received

    def line(self) -> str:
        return (
            f"{self.kind:22} handed out {self.handed_out:3}  received {self.received:3}  "
            f"topic {self.in_topic:3}  dlq {self.in_dlq:3}  lost {self.lost}  "
            f"duplicated {self.duplicated}"
        )


def figures(answer: Answer, received: bytes, outcome: Outcome) -> CaseFigures:
    expected = Counter(msgids_in(received))
    in_topic = Counter({m: outcome.data[m] for m in expected if outcome.data[m]})
    dead = outcome.dead_msgids()
    in_dlq = Counter({m: dead[m] for m in expected if dead[m]})
    delivered = in_topic + in_dlq
    return CaseFigures(
        kind=answer.kind,
        handed_out=answer.reports,
        received=sum(expected.values()),
        in_topic=sum(in_topic.values()),
        in_dlq=sum(in_dlq.values()),
        lost=sum((expected - delivered).values()),
        duplicated=sum((delivered - expected).values()),
    )


def read_outcome(bootstrap: str, topics: Topics) -> Outcome:
    data: Counter = Counter()
    for record in consume_all(bootstrap, topics.data, timeout=60):
        data[decode_single_object(record.value)["msgid"]] += 1
    return Outcome(data, consume_all(bootstrap, topics.dlq, timeout=60))


def start_connector(
    server: HostilePlatform,
    bootstrap: str,
    topics: Topics,
    tmp_path: Path,
    shutdown_timeout: float | None = None,
    accounts: dict[str, str] | None = None,
    **platform: object,
) -> ConnectorProcess:
    """`python -m connector run` against the hostile server; [platform] keys through RPT_*.
    `accounts`: name → token (default: one account, "main", with TOKEN)."""
    accounts = accounts or {"main": TOKEN}
    config = write_config(
        tmp_path / "connector.toml",
        base_url=server.base_url,
        bootstrap=bootstrap,
        topics=topics,
        spool=tmp_path / "spool",
        accounts=tuple(accounts),
    )
    env = connector_env(accounts)
    env.update({f"RPT_PLATFORM__{key.upper()}": str(value) for key, value in platform.items()})
    if shutdown_timeout is not None:
        env["RPT_SHUTDOWN_TIMEOUT"] = str(shutdown_timeout)
    return ConnectorProcess(config, tmp_path / "connector.log", env=env).start()


def serve_then_stop(server: HostilePlatform, connector: ConnectorProcess, timeout: float) -> int:
    """Wait until every scripted answer was served, then SIGTERM; the exit status."""
    wait_for(lambda: server.finished or not connector.alive(), timeout, "the script to be served")
    assert connector.alive(), connector.output()
    wait_for(lambda: server.empty_answers >= 2, timeout, "two polls after the script")
    return connector.terminate(timeout=60)
