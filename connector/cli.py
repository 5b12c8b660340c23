"""The `rpt-connector` command line.

Exit codes: 0 success / clean shutdown; 1 runtime failure (an account stopped with an error);
2 usage or configuration error; 130 a second interrupt forced an immediate exit.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from connector import __version__
from connector.errors import ConfigError

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2

EPILOG = """examples:
  rpt-connector run --config /etc/rpt-connector/connector.toml
  rpt-connector check --config connector.toml            # reaches Kafka, never calls get-rpt
  rpt-connector check --config connector.toml --offline  # validates the file only
  rpt-connector schema > status_report.avsc
  rpt-connector simulate --port 0 --token demo-token --reports 10000
  rpt-connector spool inspect --config connector.toml
  rpt-connector replay archive --config connector.toml --to-topic sms.status-reports.v2
  rpt-connector replay dlq --config connector.toml --reason invalid_report

exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error, 130 forced exit"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return EXIT_CONFIG
    try:
        return args.handler(args)
    except ConfigError as exc:
        print(f"rpt-connector: {exc}", file=sys.stderr)
        return EXIT_CONFIG


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rpt-connector",
        description="Exactly-once Kafka source connector for the SMS platform's get-rpt API.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"rpt-connector {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    run = _command(commands, "run", "poll get-rpt and publish every report to Kafka", _run)
    _config_arguments(run)

    check = _command(commands, "check", "validate the configuration and reach Kafka", _check)
    _config_arguments(check)
    check.add_argument(
        "--offline", action="store_true", help="validate the file only; contact nothing"
    )

    _command(commands, "schema", "print the Avro schema of the records as JSON", _schema)

    simulate = _command(commands, "simulate", "run the get-rpt platform simulator", _simulate)
    from connector.simulator import server as simulator

    simulator.add_arguments(simulate)

    spool = _command(commands, "spool", "look at the write-ahead spool", None)
    # `rpt-connector spool` alone shows the spool commands, not the top-level help.
    spool.set_defaults(handler=lambda _args: _help(spool))
    spool_commands = spool.add_subparsers(title="spool commands", metavar="COMMAND")
    inspect = _command(
        spool_commands, "inspect", "show pending spool entries per account (read-only)", _inspect
    )
    _config_arguments(inspect)

    from connector.replay import cli as replay_cli

    replay = _command(commands, "replay", "derive records again: from the archive, or DLQ", None)
    replay_cli.add_arguments(replay, _command)
    return parser


def _command(
    commands: argparse._SubParsersAction,
    name: str,
    help_text: str,
    handler: Callable[[argparse.Namespace], int] | None,
) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        name,
        help=help_text,
        description=help_text,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if handler is not None:
        parser.set_defaults(handler=handler)
    return parser


def _config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", required=True, help="the TOML configuration file")
    parser.add_argument(
        "--log-level",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="overrides [log] level of the file (default there: INFO)",
    )
    parser.add_argument(
        "--log-format",
        choices=["text", "json"],
        help="overrides [log] format: text for a terminal, json (one object per line) for "
        "log collectors (default there: text)",
    )


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return EXIT_CONFIG


def _run(args: argparse.Namespace) -> int:
    from connector import checks, service
    from connector.config.settings import load_settings

    # Property mistakes librdkafka would only report once running are found here first:
    # one line, exit 2.
    checks.validate_for_run(load_settings(args.config))
    return service.run_from_cli(args)


def _check(args: argparse.Namespace) -> int:
    from connector import checks

    return checks.check_from_cli(args)


def _schema(args: argparse.Namespace) -> int:
    from connector.codec.avro import load_schema

    print(json.dumps(load_schema(), indent=2, ensure_ascii=False))
    return EXIT_OK


def _simulate(args: argparse.Namespace) -> int:
    from connector.simulator import server as simulator

    return simulator.main(args)


def _inspect(args: argparse.Namespace) -> int:
    from connector import checks

    return checks.inspect_spool_from_cli(args)
