"""Configuration: one TOML file plus `RPT_*` environment overrides, validated at start.

Environment overrides use `RPT_<SECTION>__<KEY>`, e.g. `RPT_KAFKA__TOPIC=sms.reports` or
`RPT_PLATFORM__RETSIZE=200`. Secrets are never values in the file: an account names the
environment variable or file that holds its token or login secret, and they are read once
at start into `SecretStr`, so they print as `**********`.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from connector.config.describe import describe_environment_error, describe_validation_error
from connector.config.units import Duration, Size, parse_duration
from connector.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PlatformSettings(_Section):
    base_url: str = "https://client.xuandashi.com"
    path: str = "/client-sms/v2/sms/get-rpt"
    login_path: str = "/client-sms/user/login"
    method: Literal["POST", "GET"] = "POST"
    retsize: int = Field(500, ge=1, le=500)
    poll_interval: Duration = 5.0
    min_request_interval: Duration = 0.05
    timezone: str = "Asia/Shanghai"
    connect_timeout: Duration = 5.0
    read_timeout: Duration = 30.0
    # Total time for one get-rpt call (logins included): read_timeout is per socket read, so a
    # server dripping a byte at a time would hold a call for ever. Must be < shutdown_timeout;
    # unset, 20s or 2/3 of a shorter shutdown_timeout (Settings._request_timeout_default).
    request_timeout: Duration = Field(20.0, gt=0)
    verify_tls: bool = True
    ca_bundle: Path | None = None
    max_response_bytes: Size = 16 * 2**20
    backoff_initial: Duration = 0.5
    backoff_max: Duration = 60.0
    auth_failure_pause: Duration = 600.0
    token_ttl: Duration = 1800.0
    # Threads that make the get-rpt calls of all accounts (a pool): a slow call holds one.
    fetch_threads: int = Field(16, ge=1)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("path", "login_path")
    @classmethod
    def _absolute_path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with '/'")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value


class AccountSettings(_Section):
    """One platform account. Credentials: a static token, or uuid + secret for login."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    token_env: str | None = None
    token_file: Path | None = None
    uuid: str | None = None
    secret_env: str | None = None
    secret_file: Path | None = None
    topic: str | None = None
    retsize: int | None = Field(None, ge=1, le=500)
    poll_interval: Duration | None = None

    @model_validator(mode="after")
    def _one_credential(self) -> AccountSettings:
        static = [k for k in ("token_env", "token_file") if getattr(self, k)]
        login = [k for k in ("secret_env", "secret_file") if getattr(self, k)]
        if len(static) + len(login) != 1:
            raise ValueError(
                "set exactly one of token_env, token_file (static token) "
                "or secret_env, secret_file (with uuid, for login)"
            )
        if login and not self.uuid:
            raise ValueError("uuid is required with secret_env/secret_file")
        if static and self.uuid:
            raise ValueError("uuid goes with secret_env/secret_file, not with a static token")
        return self

    @property
    def uses_login(self) -> bool:
        return self.uuid is not None


class KafkaSettings(_Section):
    topic: str = "sms.status-reports"
    dlq_topic: str = "sms.status-reports.dlq"
    progress_topic: str = "rpt-connector.progress"
    delivery: Literal["exactly_once", "at_least_once"] = "exactly_once"
    value_format: Literal["avro-single-object", "confluent"] = "avro-single-object"
    empty_custid_key: Literal["msgid", "null"] = "msgid"
    transactional_id_prefix: str = "rpt-connector-"
    max_batch_records: int = Field(20000, ge=1)
    commit_interval: Duration = 0.1
    create_topics: bool = True
    topic_partitions: int = Field(6, ge=1)
    replication_factor: int = Field(-1, ge=-1)
    producer: dict[str, str | int | float | bool] = Field(default_factory=dict)
    # Seconds without any successful Kafka request while work is pending → "not reachable".
    unreachable_after: Duration = 30.0
    # Every raw get-rpt body, in the transaction of its records ("" = none; kafka.archive).
    archive_topic: str = "sms.status-reports.raw"
    archive_retention: Duration = Field(30 * 86400.0, gt=0)  # the archive topic's retention.ms
    # A data record's Kafka timestamp: its produce time (CreateTime), or the report's rtime
    # (clamped to what the topic accepts; connector.kafka.records.RecordTimestamps).
    record_timestamp: Literal["produce", "rtime"] = "produce"
    # Per data record the headers account, content-type and schema-fingerprint; false: none
    # (the value names its account and schema; ≈ 3.5 µs of CPU per record less, BENCHMARKS.md).
    record_headers: bool = True
    # One transactional producer for all of the instance's accounts (their batches commit
    # together, connector.kafka.committer) instead of one per account; exactly_once only.
    shared_producer: bool = False
    # With the shared producer: threads that take every account's publish rounds (a round
    # hands its batch to the committer and comes back for the outcome, so a few suffice).
    publish_threads: int = Field(8, ge=1)

    @model_validator(mode="after")
    def _archive_apart(self) -> KafkaSettings:
        # Raw bodies in the data, dead-letter or progress topic would break its consumers.
        if self.archive_topic in (self.topic, self.dlq_topic, self.progress_topic):
            raise ValueError(
                f"kafka.archive_topic ({self.archive_topic!r}) must differ from topic, "
                'dlq_topic and progress_topic (or be "" for no archive)'
            )
        return self

    @model_validator(mode="after")
    def _producer_settings(self) -> KafkaSettings:
        if "bootstrap.servers" not in self.producer:
            raise ValueError('kafka.producer needs "bootstrap.servers"')
        _check_delivery_mode(self.delivery, self.producer)
        if self.shared_producer and self.delivery != "exactly_once":
            raise ValueError(
                'kafka.shared_producer = true needs kafka.delivery = "exactly_once" (it shares '
                "one transactional producer)"
            )
        if self.delivery == "exactly_once":
            message = int(self.producer.get("message.timeout.ms", 45_000))
            transaction = int(self.producer.get("transaction.timeout.ms", 60_000))
            if message >= transaction:
                raise ValueError(
                    f"kafka.producer: message.timeout.ms ({message}) must be below "
                    f"transaction.timeout.ms ({transaction}), or a delivery could outlive "
                    "its transaction"
                )
        return self


def _check_delivery_mode(delivery: str, producer: dict[str, str | int | float | bool]) -> None:
    """Refuse producer properties that silently break the promise of the delivery mode."""
    acks = producer.get("acks")
    if acks is not None and str(acks).strip().lower() not in {"all", "-1"}:
        raise ValueError(
            f'kafka.producer."acks" = {acks!r}: both delivery modes need "all" (-1); with fewer '
            "acknowledgements a leader change loses reports the connector counted as delivered"
        )
    idempotence = producer.get("enable.idempotence")
    if delivery == "exactly_once" and _is_false(idempotence):
        raise ValueError(
            'kafka.producer."enable.idempotence" = false: exactly_once needs an idempotent '
            'producer; remove the key, or set kafka.delivery = "at_least_once"'
        )
    if "transactional.id" in producer:
        raise ValueError(
            'kafka.producer."transactional.id" is set by the connector, one per account '
            "(kafka.transactional_id_prefix + account name); remove it and set "
            "kafka.transactional_id_prefix instead"
        )


def _is_false(value: object) -> bool:
    return value is not None and str(value).strip().lower() in {"false", "0", "no", "off"}


class SchemaRegistrySettings(_Section):
    url: str
    username: str | None = None
    password_env: str | None = None
    password_file: Path | None = None
    ca_location: Path | None = None
    auto_register: bool = True


class SpoolSettings(_Section):
    dir: Path = Path("/var/lib/rpt-connector")
    max_bytes: Size = 2**30
    segment_bytes: Size = 64 * 2**20
    fsync: bool = True


class MetricsSettings(_Section):
    listen: str = "0.0.0.0:9108"
    enabled: bool = True

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        _host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("must be HOST:PORT, e.g. '0.0.0.0:9108'")
        return value


class ClusterSettings(_Section):
    group_id: str | None = None
    instance_id: str | None = None  # group.instance.id: static membership (e.g. the pod name)
    control_topic: str = "rpt-connector.control"
    session_timeout: Duration = 10.0


class LogSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"


class Settings(BaseSettings):
    """The whole configuration. Build it with `load_settings(path)`."""

    model_config = SettingsConfigDict(
        env_prefix="RPT_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    platform: PlatformSettings = PlatformSettings()
    accounts: list[AccountSettings] = Field(min_length=1)
    kafka: KafkaSettings
    schema_registry: SchemaRegistrySettings | None = None
    spool: SpoolSettings = SpoolSettings()
    metrics: MetricsSettings = MetricsSettings()
    cluster: ClusterSettings = ClusterSettings()
    log: LogSettings = LogSettings()
    shutdown_timeout: Duration = 30.0

    @model_validator(mode="before")
    @classmethod
    def _request_timeout_default(cls, data: Any) -> Any:
        """Unset, platform.request_timeout is 20s, or 2/3 of a shorter shutdown_timeout, so
        that a configuration valid before the key existed stays valid."""
        if not isinstance(data, dict):
            return data
        platform = data.get("platform", {})
        if isinstance(platform, PlatformSettings):
            if "request_timeout" in platform.model_fields_set:
                return data
            platform = platform.model_dump(exclude_unset=True)
        if not isinstance(platform, dict) or "request_timeout" in platform:
            return data
        try:
            shutdown = parse_duration(data.get("shutdown_timeout", 30.0))
        except ValueError:
            return data  # the field's own validation names the problem
        default = min(PlatformSettings.model_fields["request_timeout"].default, shutdown * 2 / 3)
        return {**data, "platform": {**platform, "request_timeout": default}}

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        names = [a.name for a in self.accounts]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"account names must be unique; repeated: {', '.join(duplicates)}")
        if self.spool.max_bytes < self.platform.max_response_bytes + 64:
            raise ValueError(
                f"spool.max_bytes ({self.spool.max_bytes}) must exceed "
                f"platform.max_response_bytes ({self.platform.max_response_bytes}): the spool "
                "must have room for the largest answer before a (destructive) get-rpt"
            )
        if self.platform.request_timeout >= self.shutdown_timeout:
            raise ValueError(
                f"platform.request_timeout ({self.platform.request_timeout:g}s) must be less than "
                f"shutdown_timeout ({self.shutdown_timeout:g}s): a stop waits for the call in "
                "flight, then must still spool and commit what it brought"
            )
        if self.kafka.value_format == "confluent" and self.schema_registry is None:
            raise ValueError('kafka.value_format = "confluent" needs a [schema_registry] section')
        return self

    @property
    def topics(self) -> list[str]:
        """Every topic the connector writes: data (shared and per account), dead letters,
        progress, archive; in this order, without repeats."""
        k = self.kafka
        own = [a.topic for a in self.accounts if a.topic]
        archive = [k.archive_topic] if k.archive_topic else []
        return list(dict.fromkeys([k.topic, k.dlq_topic, k.progress_topic, *own, *archive]))

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment overrides the file, which is passed in as init values.
        return env_settings, init_settings


def load_settings(path: Path | str) -> Settings:
    """Read the TOML file, apply `RPT_*` overrides, validate; ConfigError names every bad key."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"configuration file not found: {path}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return settings_from_dict(data)


def settings_from_dict(data: dict[str, Any]) -> Settings:
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, Settings)) from None
    except SettingsError as exc:  # an RPT_* variable pydantic-settings could not even parse
        raise ConfigError(describe_environment_error(exc)) from None
