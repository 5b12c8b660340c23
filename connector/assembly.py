"""What the service builds from the settings: every account's pipeline and what they share.

`build_pipeline` is the one place an account's parts are assembled (platform client, spool
opener, publisher factory, record builder, observer hooks); `Shared` is what every account of
the process shares (fetch pool, watchdog, shared producer and its one-pass progress reads). The
service (`connector.service`) only decides when: at start, and on each group assignment.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from connector.codec.avro import make_value_encoder
from connector.codec.report import Normalizer
from connector.config.settings import Settings
from connector.config.views import AccountView
from connector.errors import ConnectorError, Disposition
from connector.fetcher import Hooks
from connector.kafka.committer import TransactionCommitter, shared_transactional_id
from connector.kafka.group_fence import Group, GroupFence
from connector.kafka.progress import ProgressSnapshot, ProgressTopic
from connector.kafka.publisher import AccountPublisher, Reachability
from connector.kafka.records import RecordBuilder
from connector.kafka.shared_publisher import SharedPublisher
from connector.kafka.topics import record_timestamps
from connector.observe.logs import RepeatSummary
from connector.pipeline import AccountPipeline, Limits, Parts
from connector.platform.client import PlatformClient, PollSchedule
from connector.platform.exchange import Alarm
from connector.retry import Backoff, Deadline
from connector.spool.io import SpoolHooks
from connector.spool.spool import Spool, spool_id
from connector.turn_pool import TurnPool

log = logging.getLogger("connector.service")


@dataclass
class Shared:
    """What every account of the process shares: the fetch pool (`platform.fetch_threads`
    threads for all get-rpt calls), one watchdog thread for their deadlines, and with
    `kafka.shared_producer` the transaction committer and the publish pool
    (`kafka.publish_threads` threads for all publish rounds). Built with the service, closed
    last."""

    fetch_pool: TurnPool
    alarm: Alarm
    committer: TransactionCommitter | None = None
    publish_pool: TurnPool | None = None  # with the committer
    progress: ProgressSnapshot | None = None  # with the committer: the accounts taken last

    @classmethod
    def for_settings(cls, settings: Settings, group: Group | None = None) -> Shared:
        """`group`: cluster mode's consumer group, which fences a shared producer's zombies."""
        kafka, names = settings.kafka, [a.name for a in settings.accounts]
        fetch_pool = TurnPool(settings.platform.fetch_threads, role="fetch")
        if not kafka.shared_producer:
            return cls(fetch_pool, Alarm())
        committer = TransactionCommitter(
            kafka,
            shared_transactional_id(kafka, names, settings.cluster),
            fence=GroupFence(group) if group is not None else None,
        )
        publish_pool = TurnPool(kafka.publish_threads, role="publish")
        return cls(fetch_pool, Alarm(), committer, publish_pool)

    def start(self, settings: Settings, stop: threading.Event) -> None:
        """With a shared producer: fence the instance's predecessor, waiting for Kafka as long
        as it takes (or until `stop`)."""
        if self.committer is None:
            return
        self.committer.start()
        backoff = Backoff(1.0, 30.0, stop=stop)
        while True:
            try:
                self.committer.connect(Deadline.after(settings.kafka.unreachable_after))
                return
            except ConnectorError as exc:
                if exc.disposition == Disposition.STOP_ACCOUNT:
                    raise  # fenced: a newer instance of this configuration runs
                log.warning("shared producer: %s; retrying", exc)
                if backoff.wait():
                    raise

    def take_over(self, names: list[str], settings: Settings) -> None:
        """Accounts about to start (all at start; cluster mode, each assignment): with a shared
        producer their progress is read in one pass when the first of them asks, after the
        fence (standalone) or once their group offsets are settled (cluster mode)."""
        if self.committer is None:
            return
        topic = ProgressTopic(settings.kafka)  # the committer settles in cluster mode only
        self.progress = ProgressSnapshot(topic, set(names), settle=self.committer.settle)

    def close(self, timeout: float) -> None:
        """After the pipelines: their fetch tasks have retired (unless one is still in a call)
        and every batch the committer will get has had its outcome."""
        self.fetch_pool.close(timeout=timeout)
        if self.publish_pool is not None:
            self.publish_pool.close(timeout=timeout)
        self.alarm.close()
        if self.committer is not None:
            self.committer.close(Deadline.after(5.0))


def build_pipeline(
    settings: Settings,
    view: AccountView,
    observer: object,
    *,
    owns: Callable[[], bool] = lambda: True,
    hooks: Hooks | None = None,
    spool_hooks: SpoolHooks | None = None,
    shared: Shared | None = None,
) -> AccountPipeline:
    """The one place an account pipeline's parts are assembled from the settings.
    Reads the credential and (confluent format) talks to the schema registry: may raise."""
    kafka, platform, spool = settings.kafka, settings.platform, settings.spool
    directory = spool.dir / view.name
    encoder = make_value_encoder(kafka, settings.schema_registry, view.topic)
    builder = RecordBuilder(
        view.name,
        Normalizer(view.name, platform.timezone),
        encoder,
        kafka.empty_custid_key,
        record_timestamps(kafka, view.topic),  # reads the topic's limits for "rtime"
        headers=kafka.record_headers,
    )
    # The fetch thread builds a body's records as it judges it (one pass), where it can.
    client = PlatformClient(
        platform,
        view.account,
        view.index,
        read_ahead=builder.read_ahead,
        alarm=shared.alarm if shared else None,
    )
    committer = shared.committer if shared else None
    reachability = Reachability(kafka.unreachable_after, observer.kafka_reachable)
    connection_errors = RepeatSummary()
    the_spool_id = spool_id(directory)

    def new_publisher(stop: threading.Event) -> AccountPublisher | SharedPublisher:
        if committer is not None:  # kafka.shared_producer
            return SharedPublisher(
                committer,
                view.name,
                spool_id=the_spool_id,
                reachability=reachability,
                progress=shared.progress or ProgressTopic(kafka),
                stop=stop,
            )
        return AccountPublisher(
            kafka,
            view.name,
            spool_id=the_spool_id,
            reachability=reachability,
            stop=stop,
            on_stats=observer.producer_statistics,
            connection_errors=connection_errors,
        )

    def open_spool(floor_seq: int) -> Spool:
        return Spool.open(
            directory,
            max_bytes=spool.max_bytes,
            segment_bytes=spool.segment_bytes,
            fsync=spool.fsync,
            floor_seq=floor_seq,
            hooks=spool_hooks,
        )

    parts = Parts(
        client=client,
        open_spool=open_spool,
        new_publisher=new_publisher,
        builder=builder,
        observer=observer,
        schedule=PollSchedule(
            retsize=view.retsize,
            poll_interval=view.poll_interval,
            min_request_interval=platform.min_request_interval,
            backoff_initial=platform.backoff_initial,
            backoff_max=platform.backoff_max,
            account=view.name,
            auth_failure_pause=platform.auth_failure_pause,
        ),
        owns=owns,
        hooks=hooks or Hooks(),
        fetch_pool=shared.fetch_pool if shared else None,
        publish_pool=shared.publish_pool if shared else None,
    )
    limits = Limits(
        topic=view.topic,
        dlq_topic=kafka.dlq_topic,
        spool_id=the_spool_id,
        commit_interval=kafka.commit_interval,
        max_batch_records=kafka.max_batch_records,
        max_response_bytes=platform.max_response_bytes,
        unreachable_after=kafka.unreachable_after,
        shutdown_timeout=settings.shutdown_timeout,
        archive_topic=kafka.archive_topic,
    )
    return AccountPipeline(view.name, limits, parts)
