"""The raw archive: every get-rpt body, as received, in the transaction that publishes it.

get-rpt is destructive: once a spool entry is released, only what was derived from it is left.
The archive topic (`kafka.archive_topic`, default `sms.status-reports.raw`) keeps the body
itself, so history can be derived again (`rpt-connector replay archive`):

    value    the raw body bytes, exactly as the platform sent them
    key      the account: one account's bodies stay in one partition, in fetch order
    headers  account, fetched_at (epoch ms), spool.sequence, spool.id,
             content-type (application/json); above the message size the body is split into
             numbered parts with a `chunk` header "i/n" (like dead letters), consecutive in
             the partition and in the same transaction

A body the spool could not take (sent straight to Kafka) is archived too, with
spool.sequence 0. Nothing here talks to Kafka: the pipeline produces what this builds.
"""

from __future__ import annotations

from dataclasses import dataclass

from connector.kafka.records import DLQ_MAX_VALUE_BYTES, EntryLike, EntryRecords, Headers

ARCHIVE_CONTENT_TYPE = b"application/json"
ARCHIVE_MAX_VALUE_BYTES = DLQ_MAX_VALUE_BYTES  # under Kafka's default 1 MiB message limit


@dataclass(frozen=True, slots=True)
class ArchiveRecord:
    value: bytes
    key: bytes
    headers: Headers


def archive_records(
    entry: EntryLike, account: str, spool_id: str, max_bytes: int = ARCHIVE_MAX_VALUE_BYTES
) -> list[ArchiveRecord]:
    """The archive record(s) of one spool entry: one, or numbered chunks above `max_bytes`."""
    headers: Headers = [
        ("account", account.encode()),
        ("fetched_at", str(round(entry.fetched_at * 1000)).encode()),
        ("spool.sequence", str(entry.seq).encode()),
        ("spool.id", spool_id.encode()),
        ("content-type", ARCHIVE_CONTENT_TYPE),
    ]
    body, key = entry.body, account.encode()
    starts = range(0, max(len(body), 1), max_bytes)
    if len(starts) == 1:
        return [ArchiveRecord(body, key, headers)]
    return [
        ArchiveRecord(
            body[s : s + max_bytes], key, [*headers, ("chunk", f"{i}/{len(starts)}".encode())]
        )
        for i, s in enumerate(starts, start=1)
    ]


def archive_entry(
    publisher: object,
    topic: str,
    account: str,
    spool_id: str,
    entry: EntryLike,
    built: EntryRecords,
) -> None:
    """Produce the archive of `entry` into the publisher's open transaction; count it in
    `built` (the commit summary feeds rpt_archive_bytes_total / rpt_archive_records_total)."""
    for record in archive_records(entry, account, spool_id):
        publisher.produce(topic, record.value, record.key, record.headers)
    built.archive_records += 1
    built.archive_bytes += len(entry.body)


def chunk_of(headers: dict[str, bytes]) -> tuple[int, int]:
    """(i, n) of a chunked record, (1, 1) for a whole one; ValueError on a bad header."""
    raw = headers.get("chunk")
    if raw is None:
        return 1, 1
    index, _, total = raw.decode().partition("/")
    i, n = int(index), int(total)
    if not 1 <= i <= n:
        raise ValueError(f"bad chunk header {raw!r}")
    return i, n
