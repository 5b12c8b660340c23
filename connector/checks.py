"""`rpt-connector check` and `rpt-connector spool inspect`: look, never change, never get-rpt.

`check` validates the configuration, reads every secret it names (printing them masked), and
unless `--offline` reaches Kafka, the schema registry and the platform's host. It never calls
get-rpt: that call is destructive.
"""

from __future__ import annotations

import argparse
import json
import socket
from urllib.parse import urlsplit

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from connector.config import (
    Settings,
    account_secret,
    account_token,
    load_settings,
    registry_password,
)
from connector.errors import ConfigError, ConnectorError
from connector.publisher import client_config
from connector.spool import inspect as inspect_spool

EXIT_OK, EXIT_FAILURE = 0, 1


def check_from_cli(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    print(f"ok   configuration {args.config}")
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


def _check_secrets(settings: Settings) -> None:
    for index, account in enumerate(settings.accounts):
        if account.uses_login:
            secret = account_secret(account, index)
            print(f"ok   account {account.name}: login uuid {account.uuid}, secret {secret}")
        else:
            token = account_token(account, index)
            print(f"ok   account {account.name}: static token {token}")
    if settings.schema_registry is not None:
        password = registry_password(settings.schema_registry)
        if password is not None:
            print(f"ok   schema registry password {password}")


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
    from connector.avro_codec import registry_client

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
