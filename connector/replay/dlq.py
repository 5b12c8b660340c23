"""`rpt-connector replay dlq`: dead letters again through the current code, exactly once.

What a dead letter holds (connector.kafka.records) decides how it is retried:

    invalid_response, rejected_result   the whole body: parsed again like a fresh get-rpt body
    invalid_report                      one report's raw JSON: parsed as a body of that report
    unencodable_record, a `chunk` part  not retried here (a Python repr; a split body: replay
                                        it from the archive) — counted as still failing

Records go to the account's data topic (or `--to-topic`). What still fails is written again
to the dead-letter topic, at its end, in the same transaction (header `replayed.from` =
topic/partition/offset of the one it replaces), and the offsets commit past everything read:
the unprocessed tail of the dead-letter topic is then exactly what is left to fix, and the
next `replay dlq` after the next fix starts there. Each reason has its own group.id and
transactional.id, `rpt-replay-dlq.<dlq topic>.<reason>`, so `--reason R` and a run over all
reasons never take the same dead letter twice. The replayed record's fetched_at is the dead
letter's Kafka timestamp (dead letters carry no fetched_at header; it is the commit time of
the original fetch, within a commit interval of it).
"""

from __future__ import annotations

import time

from confluent_kafka import Message

from connector.config.settings import Settings
from connector.config.views import account_views
from connector.kafka.topics import record_timestamps
from connector.observe.observer import DeadLetterReason
from connector.replay.archived import (
    ArchivedBody,
    Builders,
    ReplayParts,
    Summary,
    derive,
    headers_of,
)
from connector.replay.loop import Out, replay_ids

_WHOLE_BODY = {str(DeadLetterReason.INVALID_RESPONSE), str(DeadLetterReason.REJECTED_RESULT)}
_ONE_REPORT = str(DeadLetterReason.INVALID_REPORT)


def as_body(reason: str, value: bytes) -> bytes | None:
    """The get-rpt body a dead letter stands for, or None when it cannot be retried."""
    if reason in _WHOLE_BODY:
        return value
    if reason == _ONE_REPORT:
        return b'{"result":0,"rpts":[' + value + b"]}"
    return None


class DeadLetterTransform:
    """Dead letter of one reason → records (fixed) or a dead letter again (still failing)."""

    def __init__(
        self,
        builders: Builders,
        settings: Settings,
        reason: str,
        to_topic: str | None,
        dry_run: bool,
        summary: Summary,
    ) -> None:
        self.reason, self.summary = reason, summary
        self._builders, self._settings = builders, settings
        self._to_topic, self._dry_run = to_topic, dry_run
        self._dlq = settings.kafka.dlq_topic

    def __call__(self, message: Message) -> list[Out]:
        headers = headers_of(message)
        if headers.get("reason", b"").decode() != self.reason:
            return []  # another reason's run takes it
        body = None if "chunk" in headers else as_body(self.reason, message.value() or b"")
        if body is None:
            self.summary.left[self.reason] = self.summary.left.get(self.reason, 0) + 1
            return []
        account = headers.get("account", b"").decode()
        seq = int(headers.get("spool.sequence", b"0") or 0)
        entry = ArchivedBody(seq, message.timestamp()[1] / 1000, body)
        before = self.summary.dead_letters
        outs = derive(self._builders(account), entry, self._topic(account), self._dlq, self.summary)
        if self.summary.dead_letters > before:
            self.summary.left[self.reason] = self.summary.left.get(self.reason, 0) + 1
        origin = f"{message.topic()}/{message.partition()}/{message.offset()}".encode()
        outs = [_marked(out, origin) if out.topic == self._dlq else out for out in outs]
        return [] if self._dry_run else outs

    def _topic(self, account: str) -> str:
        if self._to_topic:
            return self._to_topic
        for view in account_views(self._settings):
            if view.name == account:
                return view.topic
        return self._settings.kafka.topic


def _marked(out: Out, origin: bytes) -> Out:
    return Out(out.topic, out.value, out.key, [*out.headers, ("replayed.from", origin)])


def replay_dlq(
    settings: Settings,
    parts: ReplayParts,
    *,
    reason: str | None = None,
    to_topic: str | None = None,
    dry_run: bool = False,
    batch: int = 200,
) -> Summary:
    """Retry the dead letters of `reason` (all reasons when None) into the data topic."""
    from connector.replay.archived import run_copy  # one engine for both replays

    reasons = [str(r) for r in DeadLetterReason] if reason is None else [reason]
    unknown = set(reasons) - {str(r) for r in DeadLetterReason}
    if unknown:
        known = ", ".join(str(r) for r in DeadLetterReason)
        raise ValueError(f"unknown dead-letter reason {reason!r} (known: {known})")
    began, summary = time.monotonic(), Summary()
    source = settings.kafka.dlq_topic
    for name in reasons:
        target = to_topic or settings.kafka.topic
        stamps = None if dry_run else record_timestamps(settings.kafka, target)
        builders = Builders(
            parts.normalizer, parts.encoder(target), settings.kafka.empty_custid_key, stamps,
            settings.kafka.record_headers,
        )  # fmt: skip
        transform = DeadLetterTransform(builders, settings, name, to_topic, dry_run, summary)
        ids = replay_ids("dlq", f"{source}.{name}")
        run_copy(settings, parts, source, ids, transform, batch=batch, dry_run=dry_run)
    summary.seconds = time.monotonic() - began
    return summary
