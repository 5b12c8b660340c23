"""One chaos run: a faulty simulator, a real broker, `rpt-connector run` killed and restarted.

The verdict accounts for every report the simulator handed out. A SIGKILL that lands after
the platform answered but before the connector made the body durable loses that response (get-rpt
is destructive and has no acknowledgement): those reports are "lost in flight", allowed only
for responses handed out shortly before a kill. Any other loss, and in exactly_once mode any
duplicate beyond the platform's own re-sends, is a bug.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import harness

IN_FLIGHT_BEFORE_KILL = 2.0  # a response handed out this long before a kill may die with it
IN_FLIGHT_AFTER_KILL = 0.5  # the simulator stamps a response after it dequeued the reports
READ_TIMEOUT = 3.0  # harness.write_config's platform.read_timeout


@dataclass(frozen=True)
class Plan:
    seed: int
    kills: int
    broker_restarts: int
    pauses: int
    delivery: str = "exactly_once"
    rate: int = 1500
    stall: float = READ_TIMEOUT + 2  # longer than the read timeout: the client gives up
    gap: tuple[float, float] = (0.5, 4.0)  # seconds between two events
    accounts: int = 1  # more than one: a000, a001, ... each with its own token
    shared_producer: bool = False  # kafka.shared_producer: one transaction for all accounts

    def tokens(self) -> dict[str, str]:
        if self.accounts == 1:
            return {"main": harness.TOKEN}
        return {f"a{i:03d}": f"token-{i:03d}" for i in range(self.accounts)}


@dataclass
class Outcome:
    plan: Plan
    reports: int = 0
    kills: list[float] = field(default_factory=list)  # wall-clock time of each SIGKILL
    broker_restarts: int = 0
    pauses: int = 0
    lost_in_flight: list[str] = field(default_factory=list)
    lost_other: list[str] = field(default_factory=list)
    cut_by_platform: int = 0  # past the cut of a truncated body: the platform lost them
    duplicated: list[str] = field(default_factory=list)
    dead_letters: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        return (
            f"chaos seed={self.plan.seed} delivery={self.plan.delivery} reports={self.reports} "
            f"kills={len(self.kills)} broker_restarts={self.broker_restarts} "
            f"platform_pauses={self.pauses} lost_in_flight={len(self.lost_in_flight)} "
            f"lost_other={len(self.lost_other)} cut_by_platform={self.cut_by_platform} "
            f"duplicated={len(self.duplicated)} dead_letters={self.dead_letters} "
            f"duration={self.seconds:.0f}s"
        )


class ChaosRun:
    def __init__(self, plan: Plan, broker: object, workdir: Path) -> None:
        self.plan, self.broker, self.dir = plan, broker, workdir
        self.rng = random.Random(plan.seed)
        self.topics = harness.Topics.fresh()
        self.outcome = Outcome(plan)
        self.simulator: harness.SimulatorProcess | None = None
        self.connector: harness.ConnectorProcess | None = None
        self.endpoints: harness.Endpoints | None = None

    def run(self) -> Outcome:
        started = time.monotonic()
        self.simulator = self._start_simulator()
        try:
            self._start_connector()
            for event in self._events():
                time.sleep(self.rng.uniform(*self.plan.gap))
                event()
            self._drain()
        finally:
            harness.stop_everything(self.connector, self.simulator)
        self.outcome.seconds = time.monotonic() - started
        self._judge()
        return self.outcome

    # --- the events ----------------------------------------------------------------------
    def _events(self) -> list:
        plan = self.plan
        events = [self._kill] * plan.kills + [self._restart_broker] * plan.broker_restarts
        events += [self._pause_platform] * plan.pauses
        self.rng.shuffle(events)
        return events

    def _kill(self) -> None:
        self._check_alive()
        self.outcome.kills.append(time.time())
        self.connector.kill()
        self._start_connector()

    def _restart_broker(self) -> None:
        self._check_alive()
        self.broker.stop()
        time.sleep(self.rng.uniform(2.0, 6.0))
        self.broker.start()
        self.outcome.broker_restarts += 1

    def _pause_platform(self) -> None:
        self.simulator.control("pause", seconds=round(self.rng.uniform(2.0, 5.0), 1))
        self.outcome.pauses += 1

    def _check_alive(self) -> None:
        assert self.connector.alive(), "connector exited on its own:\n" + self.connector.output()

    # --- the processes -------------------------------------------------------------------
    def _start_simulator(self) -> harness.SimulatorProcess:
        plan = self.plan
        events = plan.kills + plan.broker_restarts * 3 + plan.pauses
        total = int(plan.rate * sum(plan.gap) / 2 * events)
        self.outcome.reports = total
        faults = ["--latency", "0.01", "--error-rate", "0.03", "--throttle-rate", "0.02"]
        faults += ["--stall-rate", "0.01", "--stall", str(plan.stall)]
        faults += ["--truncate-rate", "0.01", "--malformed-rate", "0.002"]
        faults += ["--duplicate-rate", "0.002", "--garbage-rate", "0.01"]
        return harness.SimulatorProcess(
            [*harness.token_args(plan.tokens()), "--seed", str(plan.seed), "--rate", str(plan.rate),
             "--rate-total", str(total), "--record", str(self.dir / "handed-out.jsonl"),
             "--record-responses", str(self.dir / "responses.jsonl"), *faults]
        ).start()  # fmt: skip

    def _start_connector(self) -> None:
        port = harness.free_port()
        config = harness.write_config(
            self.dir / "c.toml",
            base_url=self.simulator.base_url,
            bootstrap=self.broker.bootstrap,
            topics=self.topics,
            spool=self.dir / "spool",
            delivery=self.plan.delivery,
            accounts=tuple(self.plan.tokens()),
            overrides=self._overrides(),
        )
        env = harness.connector_env(self.plan.tokens())
        env["RPT_METRICS__LISTEN"] = f"127.0.0.1:{port}"
        self.connector = harness.ConnectorProcess(
            config, self.dir / "connector.log", env=env
        ).start()
        self.endpoints = harness.Endpoints(f"http://127.0.0.1:{port}")

    def _overrides(self) -> dict[str, dict[str, object]]:
        overrides: dict[str, dict[str, object]] = {"kafka": {}}
        if self.plan.shared_producer:
            overrides["kafka"]["shared_producer"] = True
        if self.plan.accounts > 1:  # every account polls; 100 ms each would be all it does
            overrides["platform"] = {"poll_interval": "1s", "fetch_threads": 16}
        return overrides

    def _drain(self) -> None:
        total = self.outcome.reports
        harness.wait_until(
            lambda: (
                self.simulator.stats()["handed_out"] >= total
                and self.simulator.stats()["pending"] == 0
            ),
            600,
            "the simulator to hand out every report",
        )
        self._check_alive()
        harness.wait_until(self.endpoints.answers, 60, "the status endpoint")
        harness.wait_until(
            lambda: all(
                self.endpoints.metric("rpt_spool_pending_records", account) == 0
                for account in self.plan.tokens()
            ),
            300,
            "commits",
        )
        assert self.connector.terminate(60) == 0, self.connector.output()

    # --- the verdict ---------------------------------------------------------------------
    def _judge(self) -> None:
        good, _bad = harness.ground_truth(self.dir / "handed-out.jsonl")
        verdict = harness.verify(self.broker.bootstrap, self.topics, good)
        expected = _times_handed_out(self.dir / "handed-out.jsonl", good)
        dead = b"\n".join(record.value for record in verdict.dead_letters)
        in_flight, truncated = self._responses()
        out = self.outcome
        out.dead_letters = len(verdict.dead_letters)
        for msgid in verdict.lost:
            if msgid.encode() in dead:
                continue  # a truncated body, dead-lettered whole
            if msgid in in_flight:
                out.lost_in_flight.append(msgid)
            elif msgid in truncated:
                out.cut_by_platform += 1
            else:
                out.lost_other.append(msgid)
        out.duplicated = [m for m, n in verdict.delivered.items() if n > expected[m]]

    def _responses(self) -> tuple[set[str], set[str]]:
        """Msgids of responses handed out around a kill, and of truncated responses."""
        in_flight: set[str] = set()
        truncated: set[str] = set()
        kills = self.outcome.kills
        for line in (self.dir / "responses.jsonl").read_text().splitlines():
            response = json.loads(line)
            t = response["t"]
            if any(k - IN_FLIGHT_BEFORE_KILL <= t <= k + IN_FLIGHT_AFTER_KILL for k in kills):
                in_flight.update(response["msgids"])
            if response["fault"] == "truncated":
                truncated.update(response["msgids"])
        return in_flight, truncated


def _times_handed_out(record_file: Path, good: dict[str, dict]) -> Counter:
    """How often the platform sent each good report (its duplicates are sent twice)."""
    counts: Counter = Counter()
    for line in record_file.read_bytes().splitlines():
        msgid = json.loads(line).get("msgid")
        if str(msgid) in good:
            counts[str(msgid)] += 1
    return counts
