"""Builds an AccountPipeline from real in-process parts (spool, records, publisher) over the
fakes: the FakeKafka broker model and a scripted platform. Shared by the pipeline tests."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from connector.codec.avro import decode_single_object, single_object_encoder
from connector.codec.report import Normalizer
from connector.config.settings import KafkaSettings
from connector.fetcher import Hooks
from connector.kafka.committer import TransactionCommitter
from connector.kafka.publisher import AccountPublisher, Reachability
from connector.kafka.records import RecordBuilder
from connector.kafka.shared_publisher import SharedPublisher
from connector.pipeline import AccountPipeline, Limits, Parts
from connector.platform.client import PollSchedule
from connector.retry import Backoff, Deadline
from connector.spool.spool import Spool
from connector.turn_pool import Runner, TurnPool
from tests.fakes import FakeClock, FakeKafka, FakeProgress, FaultySpool, RecordingObserver

ACCOUNT = "acme"
TOPIC = "sms.status-reports"
DLQ = "sms.status-reports.dlq"
SPOOL_ID = "spool-of-this-instance"


@dataclass
class Rig:
    kafka: FakeKafka
    platform: object
    observer: RecordingObserver
    clock: FakeClock
    pipeline: AccountPipeline
    spools: list = field(default_factory=list)

    def msgids(self) -> list[int]:
        return [int(decode_single_object(r.value)["msgid"]) for r in self.kafka.visible(TOPIC)]

    def wait_for(self, condition, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, "condition not reached"
            time.sleep(0.01)

    def stop(self, timeout: float = 20.0) -> None:
        deadline = Deadline.after(timeout)
        self.pipeline.stop(deadline)
        assert self.pipeline.join(deadline), "pipeline did not stop"


def schedule() -> PollSchedule:
    return PollSchedule(
        retsize=500, poll_interval=0.01, min_request_interval=0.001, backoff_initial=0.01,
        backoff_max=0.02, auth_failure_pause=0.05, rng=random.Random(2), account=ACCOUNT,
    )  # fmt: skip


def make_rig(
    tmp_path: Path,
    platform: object,
    *,
    delivery: str = "exactly_once",
    commit_interval: float = 0.01,
    max_batch_records: int = 20000,
    kafka: FakeKafka | None = None,
    clock: FakeClock | None = None,
    owns=lambda: True,
    hooks: Hooks | None = None,
    spool_wrapper=FaultySpool,
    spool_id: str = SPOOL_ID,
    fetch_pool: TurnPool | None = None,
    publish_pool: Runner | None = None,
    committer: TransactionCommitter | None = None,
    account: str = ACCOUNT,
) -> Rig:
    clock = clock or FakeClock()
    kafka = kafka or FakeKafka(clock)
    observer = RecordingObserver()
    settings = KafkaSettings(producer={"bootstrap.servers": "fake:9092"}, delivery=delivery)
    reachability = Reachability(30.0, observer.kafka_reachable, clock)
    spools: list = []

    def new_publisher(stop: threading.Event) -> AccountPublisher | SharedPublisher:
        if committer is not None:
            return SharedPublisher(
                committer, account, spool_id=spool_id, reachability=reachability,
                progress=FakeProgress(kafka), stop=stop,
            )  # fmt: skip
        return AccountPublisher(
            settings,
            account,
            spool_id=spool_id,
            reachability=reachability,
            producer_factory=kafka.producer,
            progress=FakeProgress(kafka),
            clock=clock,
            stop=stop,
            rng=random.Random(1),
        )

    def open_spool(floor_seq: int) -> object:
        spool = Spool.open(
            tmp_path / account, max_bytes=2**30, segment_bytes=2**20, fsync=False,
            floor_seq=floor_seq,
        )  # fmt: skip
        spools.append(spool_wrapper(spool))
        return spools[-1]

    encoder = single_object_encoder()
    parts = Parts(
        client=platform,
        open_spool=open_spool,
        new_publisher=new_publisher,
        builder=RecordBuilder(account, Normalizer(account), encoder, "msgid"),
        observer=observer,
        schedule=schedule(),
        owns=owns,
        backoff=lambda stop: Backoff(0.001, 0.01, stop=stop, rng=random.Random(3)),
        hooks=hooks or Hooks(),
        clock=clock,
        fetch_pool=fetch_pool,
        publish_pool=publish_pool,
    )
    limits = Limits(
        topic=TOPIC, dlq_topic=DLQ, spool_id=spool_id, commit_interval=commit_interval,
        max_batch_records=max_batch_records, max_response_bytes=2**20, unreachable_after=30.0,
        shutdown_timeout=20.0,
    )  # fmt: skip
    pipeline = AccountPipeline(account, limits, parts)
    return Rig(kafka, platform, observer, clock, pipeline, spools)
