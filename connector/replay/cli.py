"""The `rpt-connector replay archive|dlq` commands: arguments, progress, summary.

Progress: a bar on stderr when it is a terminal; the replay's own Prometheus registry
(`rpt_replay_messages_read`, `rpt_replay_messages_total`: offsets of the topic being read,
reset for each reason of a `replay dlq`) is served on `--metrics-listen HOST:PORT` while the
replay runs (nothing is served without it). The
summary line (or one JSON object with `--json`) goes to stdout at the end.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from confluent_kafka import KafkaException
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from connector.config.settings import load_settings
from connector.errors import ConfigError, ConnectorError
from connector.observe.logs import setup_logging
from connector.replay.archived import ProgressBar, ReplayParts, Summary, Window, parse_time
from connector.replay.loop import LoopHooks, hooks_from_env

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2
# What ends a replay early: Kafka refusing or away (TimeoutError: no progress for 30 s). The
# open transaction is aborted by the broker; the same command resumes from committed offsets.
_RUNTIME_ERRORS = (ConnectorError, KafkaException, RuntimeError, TimeoutError)


def add_arguments(replay: argparse.ArgumentParser, command: object) -> None:
    """`replay archive` and `replay dlq` under the `replay` command."""
    commands = replay.add_subparsers(title="replay commands", metavar="COMMAND")
    archive = command(commands, "archive", "derive records again from the raw archive", _archive)
    _common(archive)
    archive.add_argument("--to-topic", required=True, help="a new topic for the records")
    archive.add_argument("--dlq-topic", help="dead letters of the replay (default: TO_TOPIC.dlq)")
    archive.add_argument("--account", help="only this account's bodies")
    archive.add_argument("--since", type=_time, help="fetched_at >= TIME (ISO-8601 or epoch ms)")
    archive.add_argument("--until", type=_time, help="fetched_at < TIME (ISO-8601 or epoch ms)")
    dlq = command(commands, "dlq", "retry dead letters into the data topic", _dlq)
    _common(dlq)
    dlq.add_argument("--reason", help="only dead letters with this reason header")
    dlq.add_argument("--to-topic", help="records go here instead of the account's data topic")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", required=True, help="the TOML configuration file")
    parser.add_argument("--dry-run", action="store_true", help="read and count; write nothing")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--batch", type=int, default=200, help="messages per transaction")
    parser.add_argument("--metrics-listen", help="serve the replay's gauges on HOST:PORT")
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def _time(text: str) -> int:
    try:
        return parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class Gauges:
    """The replay's own registry: how far it is, per source topic."""

    def __init__(self, listen: str | None) -> None:
        self.registry = CollectorRegistry()
        self.read = Gauge("rpt_replay_messages_read", "Messages read.", registry=self.registry)
        self.total = Gauge("rpt_replay_messages_total", "Messages to read.", registry=self.registry)
        if listen:
            host, _, port = listen.rpartition(":")
            start_http_server(int(port), host or "0.0.0.0", registry=self.registry)

    def __call__(self, done: int, total: int) -> None:
        self.read.set(done)
        self.total.set(total)


def _parts(args: argparse.Namespace, what: str) -> tuple[object, ReplayParts, ProgressBar]:
    settings = load_settings(args.config)
    setup_logging(args.log_level or "WARNING", "text")
    bar, gauges = ProgressBar(what), Gauges(args.metrics_listen)
    env_hooks = hooks_from_env(dict(os.environ))

    def progress(done: int, total: int) -> None:
        bar(done, total)
        gauges(done, total)

    hooks = LoopHooks(before_commit=env_hooks.before_commit, progress=progress)
    return settings, ReplayParts.from_settings(settings, hooks), bar


def _report(args: argparse.Namespace, what: str, summary: Summary) -> int:
    print(summary.as_json() if args.json else summary.line(what))
    return EXIT_OK


def _archive(args: argparse.Namespace) -> int:
    from connector.replay.archived import replay_archive

    window = Window(args.account, args.since, args.until)
    return _replay(args, "replay archive", lambda settings, parts: replay_archive(
        settings, parts, to_topic=args.to_topic, dlq_topic=args.dlq_topic,
        window=window, dry_run=args.dry_run, batch=args.batch,
    ))  # fmt: skip


def _dlq(args: argparse.Namespace) -> int:
    from connector.replay.dlq import replay_dlq

    return _replay(args, "replay dlq", lambda settings, parts: replay_dlq(
        settings, parts, reason=args.reason, to_topic=args.to_topic,
        dry_run=args.dry_run, batch=args.batch,
    ))  # fmt: skip


def _replay(args: argparse.Namespace, what: str, replay: Callable) -> int:
    """Run one replay with its progress bar; a bad argument is exit 2, a Kafka failure exit 1."""
    settings, parts, bar = _parts(args, what)
    try:
        summary = replay(settings, parts)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    except _RUNTIME_ERRORS as exc:
        return _failed(what, exc)
    finally:
        bar.close()
    return _report(args, what, summary)


def _failed(what: str, exc: Exception) -> int:
    print(f"rpt-connector: {what} stopped: {exc}; run the same command again to resume",
          file=sys.stderr)  # fmt: skip
    return EXIT_FAILURE
