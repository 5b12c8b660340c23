#!/usr/bin/env python3
"""`make dashboard-demo`: a few minutes of incident under a real Prometheus, drawn as the dashboard.

Starts a private devkafka broker, the simulator (a backlog and a steady rate for two accounts),
the connector with three accounts (`main` retsize 500, `partner` retsize 200, `expired` with a
token the platform refuses; a 2 MiB spool each, so the outage fills it) and Debian's
`prometheus` scraping it every 2 s. After a calm start the broker is stopped for about a minute
(a Kafka outage), then started again and the connector catches up. Then
tools/render_dashboard.py draws every panel over the whole run into docs/dashboard/
(contact-sheet.png, summary.json, panels/). Everything started here is stopped here, by pid.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "devkafka"))
sys.path.insert(0, str(REPO / "tools"))
from promserver import PrometheusServer  # noqa: E402
from render_dashboard import Shade, render  # noqa: E402

from devkafka import Broker, free_port  # noqa: E402

TOKENS = {"main": "dash-main-7c1", "partner": "dash-partner-93b"}  # the simulator's accounts
REFUSED_TOKEN = "expired-token-000"  # noqa: S105 - deliberately wrong: the bad-token account
SCRAPE_S = 2.0


def config_text(sim_url: str, bootstrap: str, spool: Path, listen: str) -> str:
    tag = uuid.uuid4().hex[:8]
    return f"""[platform]
base_url = "{sim_url}"
poll_interval = "200ms"
min_request_interval = 0
backoff_initial = "1s"
backoff_max = "10s"
auth_failure_pause = "20s"
max_response_bytes = 262144

[[accounts]]
name = "main"
token_env = "RPT_DASH_MAIN"

[[accounts]]
name = "partner"
token_env = "RPT_DASH_PARTNER"
retsize = 200

[[accounts]]
name = "expired"
token_env = "RPT_DASH_EXPIRED"

[kafka]
topic = "dash-{tag}.status-reports"
dlq_topic = "dash-{tag}.status-reports.dlq"
progress_topic = "dash-{tag}.progress"
topic_partitions = 3
unreachable_after = "10s"

[kafka.producer]
"bootstrap.servers" = "{bootstrap}"

[spool]
dir = "{spool}"
max_bytes = 2097152  # small, so the outage fills it and fetching pauses (spool_full)

[metrics]
listen = "{listen}"
"""


@contextlib.contextmanager
def process(command: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator:
    with log.open("wb") as out:
        child = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        yield child
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(60)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def simulator_url(log: Path, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("listening on "):
                return line.removeprefix("listening on ").strip()
        time.sleep(0.2)
    raise SystemExit(f"dashboard-demo: the simulator did not start:\n{log.read_text()}")


def wait_for(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url, timeout=2.0).status_code < 500:
                return
        time.sleep(0.5)
    raise SystemExit(f"dashboard-demo: {url} did not answer within {timeout:.0f}s")


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S', time.gmtime())}] {text}", flush=True)


def connector_env() -> dict[str, str]:
    return {
        **os.environ,
        "RPT_DASH_MAIN": TOKENS["main"],
        "RPT_DASH_PARTNER": TOKENS["partner"],
        "RPT_DASH_EXPIRED": REFUSED_TOKEN,
    }


def simulator_command(rate: float) -> list[str]:
    tokens = [a for name, token in TOKENS.items() for a in ("--token", f"{name}={token}")]
    return [
        sys.executable, "-m", "connector", "simulate", "--port", "0", *tokens,
        "--reports", "main=4000", "--reports", "partner=1000", "--rate", str(rate),
        "--malformed-rate", "0.002", "--seed", "16",
    ]  # fmt: skip


def incident(args: argparse.Namespace, broker: Broker, connector: subprocess.Popen) -> Shade:
    """Calm, the broker stopped for `args.outage` seconds, then catching up."""
    say(f"calm for {args.calm:.0f}s")
    time.sleep(args.calm)
    say(f"stopping the broker for {args.outage:.0f}s (Kafka outage)")
    broker.stop()
    outage = Shade(time.time(), 0.0, "Kafka broker stopped")
    time.sleep(args.outage)
    broker.start()
    outage.end = time.time()
    say(f"broker back; catching up for {args.after:.0f}s")
    time.sleep(args.after)
    if connector.poll() is not None:
        raise SystemExit(f"dashboard-demo: the connector exited with {connector.returncode}")
    return outage


def run(args: argparse.Namespace, tmp: Path) -> tuple[float, float, Shade]:
    broker = Broker(f"dashboard-demo-{os.getpid()}")
    with contextlib.ExitStack() as stack:
        say("starting a private Kafka broker")
        bootstrap = broker.start()
        stack.callback(broker.wipe)
        stack.enter_context(process(simulator_command(args.rate), tmp / "simulator.log"))
        sim = simulator_url(tmp / "simulator.log")
        port = free_port()
        config = tmp / "connector.toml"
        config.write_text(config_text(sim, bootstrap, tmp / "spool", f"127.0.0.1:{port}"))
        target = f"127.0.0.1:{port}"
        prom = stack.enter_context(PrometheusServer(tmp / "prom", [target], interval=SCRAPE_S))
        command = [sys.executable, "-m", "connector", "run", "--config", str(config)]
        start = time.time()
        connector = stack.enter_context(process(command, tmp / "connector.log", connector_env()))
        wait_for(f"http://{target}/status")
        prom.wait_for_scrape()
        say(f"connector on {target}, Prometheus on {prom.url}")
        outage = incident(args, broker, connector)
        end = time.time()
        say("rendering the dashboard")
        title = "rpt-connector: make dashboard-demo"
        render(prom.url, start, end, args.out, step=SCRAPE_S, rate_interval="10s",
               shades=[outage], title=title)  # fmt: skip
        return start, end, outage


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "dashboard")
    parser.add_argument("--calm", type=float, default=60.0, help="seconds before the outage")
    parser.add_argument("--outage", type=float, default=60.0, help="seconds without Kafka")
    parser.add_argument("--after", type=float, default=75.0, help="seconds after it")
    parser.add_argument("--rate", type=float, default=200.0, help="new reports per second")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rpt-dashboard-demo-") as tmp:
        start, end, outage = run(args, Path(tmp))
    sheet = args.out / "contact-sheet.png"
    window = f"outage {outage.start - start:.0f}s-{outage.end - start:.0f}s of {end - start:.0f}s"
    say(f"{sheet} ({sheet.stat().st_size // 1024} KiB), {window}; details in summary.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
