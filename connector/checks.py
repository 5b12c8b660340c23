"""`rpt-connector check` and `rpt-connector spool inspect`: look, never change, never get-rpt.

`check` validates the configuration, reads every secret it names (printing them masked), and
unless `--offline` reaches Kafka, the schema registry and the platform's host. It never calls
get-rpt: that call is destructive.
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
from urllib.parse import urlsplit

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from connector.config.secrets import account_secret, account_token, registry_password
from connector.config.settings import Settings, load_settings
from connector.errors import ConfigError, ConnectorError
from connector.kafka.publisher import client_config, producer_config
from connector.spool.spool import inspect as inspect_spool

EXIT_OK, EXIT_FAILURE = 0, 1

# librdkafka warns that a producer without bootstrap.servers cannot connect: true and expected
# for the offline build below, so its log lines go nowhere.
_QUIET = logging.getLogger("connector.checks.offline-producer")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False
# librdkafka names a property by its canonical name; the operator may have used the alias.
_ALIASES = {
    "queue.buffering.max.ms": "linger.ms",
    "compression.codec": "compression.type",
    "message.send.max.retries": "retries",
    "request.required.acks": "acks",
    "message.timeout.ms": "delivery.timeout.ms",
    "metadata.broker.list": "bootstrap.servers",
    "max.in.flight.requests.per.connection": "max.in.flight",
}


def check_from_cli(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    build_producers_offline(settings)
    print(f"ok   configuration {args.config} (producer properties accepted by librdkafka)")
    _check_secrets(settings)
    if args.offline:
        print("--   offline: Kafka, registry and platform not contacted")
        return EXIT_OK
    failures = [
        problem
        for problem in (
            _check_kafka(settings),
            _check_registry(settings),
            _check_platform(settings),
        )
        if problem
    ]
    for problem in failures:
        print(f"FAIL {problem}")
    return EXIT_FAILURE if failures else EXIT_OK


def build_producers_offline(settings: Settings) -> None:
    """Construct each account's producer with its final properties, contacting nobody.

    librdkafka checks every property name and value at construction ("No such configuration
    property", "Invalid value"), so a typo fails here as a ConfigError naming the key instead
    of as a traceback in `run`. Without bootstrap.servers the client has no broker to reach.
    """
    for account in settings.accounts:
        config = producer_config(settings.kafka, account.name, None, _ignore_error)
        config.pop("bootstrap.servers", None)
        config["logger"] = _QUIET
        try:
            Producer(config)
        except KafkaException as exc:
            message = _kafka_message(exc, settings.kafka.producer)
            raise ConfigError(f"kafka.producer: {message}") from None
        except (TypeError, ValueError) as exc:  # e.g. a value of a type librdkafka cannot take
            raise ConfigError(f"kafka.producer: {exc}") from None


def _kafka_message(exc: KafkaException, producer: dict) -> str:
    error = exc.args[0] if exc.args else None
    message = error.str() if isinstance(error, KafkaError) else str(exc)
    for canonical, alias in _ALIASES.items():
        if f'"{canonical}"' in message and canonical not in producer and alias in producer:
            message += f' (set as "{alias}")'
    return message


def _ignore_error(_error: KafkaError) -> None:
    """No broker is contacted, so no error callback can matter here."""


def validate_for_run(settings: Settings) -> None:
    """What `run` checks before it starts anything: every producer's properties build.

    A mistake raises ConfigError (exit 2 with one line), never a traceback. Secrets are not
    read here: an unreadable token file is an account that cannot start (exit 1, the README's
    exit-code table), and in cluster mode it must not stop the accounts that can.
    """
    build_producers_offline(settings)


def _check_secrets(settings: Settings) -> None:
    for line in _secret_lines(settings):
        print(f"ok   {line}")


def _secret_lines(settings: Settings) -> list[str]:
    """Read every secret the configuration names (ConfigError if one is missing), masked."""
    lines = []
    for index, account in enumerate(settings.accounts):
        if account.uses_login:
            secret = account_secret(account, index)
            lines.append(f"account {account.name}: login uuid {account.uuid}, secret {secret}")
        else:
            token = account_token(account, index)
            lines.append(f"account {account.name}: static token {token}")
    if settings.schema_registry is not None:
        password = registry_password(settings.schema_registry)
        if password is not None:
            lines.append(f"schema registry password {password}")
    return lines


def _check_kafka(settings: Settings) -> str | None:
    kafka = settings.kafka
    bootstrap = kafka.producer["bootstrap.servers"]
    admin = AdminClient(client_config(kafka))
    try:
        existing = set(admin.list_topics(timeout=10).topics)
    except KafkaException as exc:
        return f"Kafka at {bootstrap}: {exc.args[0].str()}"
    print(f"ok   Kafka at {bootstrap} answers")
    for topic in settings.topics:  # data, dead letters, progress, per-account, archive
        if topic in existing:
            print(f"ok   topic {topic} exists")
        elif kafka.create_topics:
            print(f"--   topic {topic} missing; `run` will create it")
        else:
            return f"topic {topic} is missing and kafka.create_topics = false"
    return None


def _check_registry(settings: Settings) -> str | None:
    registry = settings.schema_registry
    if registry is None:
        return None
    from connector.codec.avro import registry_client

    try:
        registry_client(registry).get_subjects()
    except Exception as exc:  # the registry client raises several unrelated types
        return f"schema registry at {registry.url}: {type(exc).__name__}: {exc}"
    print(f"ok   schema registry at {registry.url} answers")
    return None


def _check_platform(settings: Settings) -> str | None:
    url = urlsplit(settings.platform.base_url)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), settings.platform.connect_timeout):
            pass
    except OSError as exc:
        return f"platform host {url.hostname}:{port}: {exc.strerror or exc}"
    print(f"ok   platform host {url.hostname}:{port} accepts connections (get-rpt not called)")
    return None


def inspect_spool_from_cli(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    report = {}
    for account in settings.accounts:
        directory = settings.spool.dir / account.name
        try:
            report[account.name] = inspect_spool(directory)
        except (ConnectorError, OSError) as exc:
            report[account.name] = {"error": str(exc)}
    print(json.dumps(report, indent=2, default=str))
    if not report:
        raise ConfigError("no accounts configured")
    return EXIT_OK
