"""Every error the connector raises, in one tree.

    ConnectorError
     ├── ConfigError              the configuration file or environment is wrong (names the key)
     ├── PlatformError            a get-rpt call did not yield a batch of reports
     │    ├── RetriableError      HTTP 429 / 5xx, timeouts, connection errors     RETRY
     │    ├── AuthError           result 401, HTTP 401/403, failed login           PAUSE
     │    ├── PlatformResultError any other non-zero `result`, with `desc`         RETRY
     │    ├── TLSVerificationError the platform's certificate is not trusted       PAUSE
     │    └── InvalidResponseError the body is not a get-rpt answer; keeps raw     DEAD_LETTER
     ├── ReportError              one report cannot be normalized                  DEAD_LETTER
     ├── CodecError               a record does not fit the schema                 DEAD_LETTER
     │    └── RegistryError       the schema registry refused or is unreachable    STOP_ACCOUNT
     ├── SpoolError               the write-ahead spool cannot do what was asked   RETRY
     │    ├── SpoolFullError      spool.max_bytes or the filesystem is full        PAUSE
     │    ├── SpoolLockedError    another pipeline still holds the spool folder    RETRY
     │    └── SpoolWriteError     cannot write (disk full, read-only, EIO)         RETRY
     └── PublishError             Kafka refused a call; a new producer is needed   RESTART_PRODUCER
          ├── KafkaUnreachableError no broker answered in time                     RETRY
          ├── NotAssignedError    cluster mode: the group took the account away     STOP_ACCOUNT
          ├── TransactionAbortedError the open transaction must abort; re-sent     ABORT_TRANSACTION
          ├── TransactionTimedOutError our own transaction outlived
          │                           transaction.timeout.ms (a "fence" we caused) RESTART_PRODUCER
          └── FencedError         a live newer instance owns the transactional.id  STOP_ACCOUNT

Every class states what the loops must do with it as `disposition` (a `Disposition`); loops
act on that value and never read message text or test classes one by one.

Library errors (httpx, confluent-kafka, fastavro, OSError) are translated at the module that
talks to the library, with `raise ... from exc` so the cause is kept. No message here ever
contains a token, a secret or a password.
"""

from __future__ import annotations

from enum import StrEnum


class Disposition(StrEnum):
    """What the loop that caught an error does next."""

    RETRY = "retry"  # back off (full jitter, interruptible) and try the same step again
    PAUSE = "pause"  # stop this activity for a long, fixed time; a state of its own
    DEAD_LETTER = "dead_letter"  # the input is bad: route its raw bytes to the dead-letter topic
    ABORT_TRANSACTION = "abort_transaction"  # abort, then send the same spool entries again
    RESTART_PRODUCER = "restart_producer"  # new producer, progress re-read, entries re-sent
    STOP_ACCOUNT = "stop_account"  # the account cannot go on in this process
    STOP_PROCESS = "stop_process"  # configuration: exit 2


class ConnectorError(Exception):
    """Base of every error raised by rpt-connector."""

    disposition: Disposition = Disposition.STOP_ACCOUNT


class ConfigError(ConnectorError):
    """The configuration is invalid; the message names the offending key."""

    disposition = Disposition.STOP_PROCESS


class PlatformError(ConnectorError):
    """A get-rpt (or login) call did not produce a batch of reports."""

    outcome = "platform_error"
    disposition = Disposition.RETRY


class RetriableError(PlatformError):
    """A transient failure: retry with backoff, honouring `retry_after` when the server gave one."""

    outcome = "retriable_error"

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class AuthError(PlatformError):
    """The platform rejected the credentials."""

    outcome = "auth_error"
    disposition = Disposition.PAUSE


class PlatformResultError(PlatformError):
    """The platform answered with a non-zero `result` other than 401."""

    outcome = "platform_error"
    disposition = Disposition.RETRY

    def __init__(self, result: int | str, desc: str, raw: bytes | None = None) -> None:
        super().__init__(f"get-rpt result {result}: {desc}")
        self.result = result
        self.desc = desc
        self.raw = raw  # set when the answer carried reports anyway: the body must be kept


class TLSVerificationError(PlatformError):
    """The platform's TLS certificate failed verification; retrying cannot help."""

    outcome = "platform_error"
    disposition = Disposition.PAUSE


class InvalidResponseError(PlatformError):
    """The body is not a well-formed get-rpt answer; `raw` holds it for the spool and the DLQ."""

    outcome = "invalid_response"
    disposition = Disposition.DEAD_LETTER

    def __init__(self, message: str, raw: bytes) -> None:
        super().__init__(message)
        self.raw = raw


class ReportError(ConnectorError):
    """One report cannot become an Avro record; routed to the dead-letter topic."""

    disposition = Disposition.DEAD_LETTER

    def __init__(self, field: str, value: object, reason: str) -> None:
        shown = repr(value)
        if len(shown) > 120:
            shown = shown[:117] + "..."
        super().__init__(f"field {field!r}: {reason} (got {shown})")
        self.field = field
        self.value = value
        self.reason = reason


class CodecError(ConnectorError):
    """Avro encoding or decoding failed: a value of another format, or a record off the schema."""

    disposition = Disposition.DEAD_LETTER


class RegistryError(CodecError):
    """The schema registry refused to register or find the schema, or could not be reached."""

    disposition = Disposition.STOP_ACCOUNT


class SpoolError(ConnectorError):
    """The write-ahead spool cannot do what was asked."""

    disposition = Disposition.RETRY


class SpoolFullError(SpoolError):
    """The spool (or its filesystem) has no room for one more answer; fetching pauses."""

    disposition = Disposition.PAUSE


class SpoolLockedError(SpoolError):
    """Another pipeline (this process or another) still holds the account's spool folder."""


class SpoolWriteError(SpoolError):
    """The spool directory cannot be written; fetching stops at once."""


class PublishError(ConnectorError):
    """Kafka refused a transaction or a delivery; the producer is recreated."""

    disposition = Disposition.RESTART_PRODUCER


class KafkaUnreachableError(PublishError):
    """No broker answered (metadata, init, commit) within the configured time."""

    disposition = Disposition.RETRY


class NotAssignedError(PublishError):
    """Cluster mode, shared producer: the group has taken the account from this instance, so no
    transaction of ours may carry it any more. Its pipeline stops at once, without committing:
    retrying until its stop deadline held the spool folder's lock from the new owner."""

    disposition = Disposition.STOP_ACCOUNT


class FencedError(PublishError):
    """A live newer producer with the same transactional.id fenced this one."""

    disposition = Disposition.STOP_ACCOUNT


class TransactionTimedOutError(PublishError):
    """The broker aborted our transaction because it outlived transaction.timeout.ms.

    librdkafka reports this as a fence (`_FENCED`/`PRODUCER_FENCED`) too; it is ours, not a
    newer instance's, so a new producer re-reads progress and sends the same entries again."""

    disposition = Disposition.RESTART_PRODUCER


class TransactionAbortedError(PublishError):
    """The open transaction failed and was (or must be) aborted; its spool entries are re-sent."""

    disposition = Disposition.ABORT_TRANSACTION
