#!/usr/bin/env python3
"""A real single-node Apache Kafka broker (KRaft, broker+controller) without Docker.

The broker jars are resolved from Maven Central with `mvn` into `.cache/kafka/lib`; each named
instance keeps its config, data, log, pid and port files under `.cache/kafka/<name>/`.

CLI:    python devkafka/devkafka.py fetch | up [--name N] [--port P] [--advertise HOST:PORT]
        | down [--name N] | status
Python: sys.path.insert(0, "<repo>/devkafka"); from devkafka import Broker

`advertise` makes the broker tell clients to reach it at another address (a TCP proxy in
front of it, for fault injection): the client listener then advertises HOST:PORT, while the
broker talks to itself (transaction markers, the group coordinator) over a separate internal
listener, so cutting the proxy cuts the clients off and nothing inside the broker.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from devkafka_base import (  # re-exported: `from devkafka import ...` is the public API
    DEFAULT_NAME,
    DEFAULT_PORT,
    DEFAULT_ROOT,
    HOST,
    START_TIMEOUT_S,
    STOP_TIMEOUT_S,
    DevKafkaError,
    fetch,
    free_port,
    is_fetched,
    java_bin,
    kafka_version,
    lib_dir,
    mvn_bin,
    new_cluster_id,
    port_answers,
    port_is_free,
)
from devkafka_broker import Broker, instances
from devkafka_config import parse_address

__all__ = [
    "DEFAULT_NAME",
    "DEFAULT_PORT",
    "DEFAULT_ROOT",
    "HOST",
    "START_TIMEOUT_S",
    "STOP_TIMEOUT_S",
    "Broker",
    "DevKafkaError",
    "fetch",
    "free_port",
    "instances",
    "is_fetched",
    "java_bin",
    "kafka_version",
    "lib_dir",
    "main",
    "mvn_bin",
    "new_cluster_id",
    "parse_address",
    "port_answers",
    "port_is_free",
]


# --------------------------------------------------------------------------- CLI


def _cmd_fetch(args: argparse.Namespace) -> None:
    started = time.monotonic()
    was_fetched = is_fetched(args.root)
    lib = fetch(args.root)
    state = "already present" if was_fetched else f"fetched in {time.monotonic() - started:.1f}s"
    print(f"kafka {kafka_version(args.root)} jars {state}: {lib}", file=sys.stderr)


def _cmd_up(args: argparse.Namespace) -> None:
    broker = Broker(args.name, port=args.port, root=args.root, advertise=args.advertise)
    started = time.monotonic()
    reused = broker.is_running()
    bootstrap = broker.start(timeout=args.timeout)
    how = "already running" if reused else f"started in {time.monotonic() - started:.1f}s"
    print(f"kafka {args.name!r} {how} (pid {broker.pid}, log {broker.log_file})", file=sys.stderr)
    print(bootstrap)


def _cmd_down(args: argparse.Namespace) -> None:
    broker = Broker(args.name, root=args.root)
    was_running = broker.pid is not None
    if args.wipe:
        broker.wipe()
    else:
        broker.stop()
    print(f"kafka {args.name!r} {'stopped' if was_running else 'was not running'}", file=sys.stderr)


def _cmd_status(args: argparse.Namespace) -> None:
    found = instances(args.root)
    if not found:
        print("no kafka instances")
    for broker in found:
        state = f"running pid {broker.pid}" if broker.is_running() else "stopped"
        via = f"\tadvertises {broker.advertised}" if broker.advertised != broker.bootstrap else ""
        print(f"{broker.name}\t{broker.bootstrap}\t{state}{via}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fetch", help="download the broker jars (idempotent)").set_defaults(
        func=_cmd_fetch
    )
    up = sub.add_parser("up", help="start a broker (reused if running); prints bootstrap")
    up.add_argument("--name", default=DEFAULT_NAME)
    up.add_argument("--port", type=int, default=None)
    up.add_argument("--timeout", type=float, default=START_TIMEOUT_S)
    up.add_argument(
        "--advertise",
        metavar="HOST:PORT",
        default=None,
        help="tell clients to connect here (e.g. a proxy forwarding to the broker's port)",
    )
    up.set_defaults(func=_cmd_up)
    down = sub.add_parser("down", help="stop a broker (no-op when not running)")
    down.add_argument("--name", default=DEFAULT_NAME)
    down.add_argument("--wipe", action="store_true", help="also delete the instance's data")
    down.set_defaults(func=_cmd_down)
    sub.add_parser("status", help="list instances").set_defaults(func=_cmd_status)
    args = parser.parse_args(argv)
    args.root = args.root.resolve()
    try:
        args.func(args)
    except DevKafkaError as exc:
        print(f"devkafka: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
