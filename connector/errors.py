"""Every error the connector raises, in one tree.

    ConnectorError
     ├── ConfigError              the configuration file or environment is wrong (names the key)
     ├── PlatformError            a get-rpt call did not yield a batch of reports
     │    ├── RetriableError      HTTP 429 / 5xx, timeouts, connection errors: back off, retry
     │    ├── AuthError           result 401, HTTP 401/403, failed login: pause the account
     │    ├── PlatformResultError any other non-zero `result`, with the decoded `desc`
     │    ├── TLSVerificationError the platform's certificate is not trusted: fix ca_bundle
     │    └── InvalidResponseError the body is not a get-rpt answer; keeps the raw bytes
     ├── ReportError              one report cannot be normalized (names field and value)
     ├── CodecError               a value is not our Avro encoding, or a record does not fit
     │    └── RegistryError       the schema registry refused or could not be reached
     ├── SpoolError               the write-ahead spool cannot do what was asked
     │    ├── SpoolFullError      spool.max_bytes reached: stop fetching until Kafka drains it
     │    ├── SpoolLockedError    another pipeline still holds the account's spool folder
     │    └── SpoolWriteError     the spool directory cannot be written (disk full, read-only)
     └── PublishError             Kafka refused a transaction or a delivery
          ├── TransactionAbortedError  the open transaction must abort; its entries are re-sent
          └── FencedError         another instance took over this account's transactional.id

Library errors (httpx, confluent-kafka, fastavro, OSError) are translated at the module that
talks to the library, with `raise ... from exc` so the cause is kept. No message here ever
contains a token, a secret or a password.
"""

from __future__ import annotations


class ConnectorError(Exception):
    """Base of every error raised by rpt-connector."""


class ConfigError(ConnectorError):
    """The configuration is invalid; the message names the offending key."""


class PlatformError(ConnectorError):
    """A get-rpt (or login) call did not produce a batch of reports."""

    outcome = "platform_error"


class RetriableError(PlatformError):
    """A transient failure: retry with backoff, honouring `retry_after` when the server gave one."""

    outcome = "retriable_error"

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class AuthError(PlatformError):
    """The platform rejected the credentials."""

    outcome = "auth_error"


class PlatformResultError(PlatformError):
    """The platform answered with a non-zero `result` other than 401."""

    outcome = "platform_error"

    def __init__(self, result: int | str, desc: str) -> None:
        super().__init__(f"get-rpt result {result}: {desc}")
        self.result = result
        self.desc = desc


class TLSVerificationError(PlatformError):
    """The platform's TLS certificate failed verification; retrying cannot help."""

    outcome = "platform_error"


class InvalidResponseError(PlatformError):
    """The body is not a well-formed get-rpt answer; `raw` holds it for the spool and the DLQ."""

    outcome = "invalid_response"

    def __init__(self, message: str, raw: bytes) -> None:
        super().__init__(message)
        self.raw = raw


class ReportError(ConnectorError):
    """One report cannot become an Avro record; routed to the dead-letter topic."""

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


class RegistryError(CodecError):
    """The schema registry refused to register or find the schema, or could not be reached."""


class SpoolError(ConnectorError):
    """The write-ahead spool cannot do what was asked."""


class SpoolFullError(SpoolError):
    """The spool reached spool.max_bytes; fetching pauses until Kafka drains it."""


class SpoolLockedError(SpoolError):
    """Another pipeline (this process or another) still holds the account's spool folder."""


class SpoolWriteError(SpoolError):
    """The spool directory cannot be written; fetching stops at once."""


class PublishError(ConnectorError):
    """Kafka refused a transaction or a delivery."""


class FencedError(PublishError):
    """A newer producer with the same transactional.id fenced this one."""


class TransactionAbortedError(PublishError):
    """The open transaction failed and was (or must be) aborted; its spool entries are re-sent."""
