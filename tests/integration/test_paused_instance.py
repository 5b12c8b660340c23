"""Cluster mode: an instance paused (SIGSTOP) past the session timeout, then continued.

While it is stopped the group gives its accounts to the other instance. Continued, it must not
make one more get-rpt call (destructive!) for an account it has lost: it has to know it may no
longer own it before calling. The two instances are given different tokens of the same
accounts, so the simulator's per-token call counts say which instance called. The spool
volume is shared, as a re-attached persistent volume would be; in the end every report is in
the topic exactly once.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from fault_rig import report_figures
from harness import (
    ConnectorProcess,
    Endpoints,
    SimulatorProcess,
    Topics,
    cluster_section,
    connector_env,
    free_port,
    ground_truth,
    verify,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.integration

ACCOUNTS = ("a1", "a2", "a3", "a4")
SESSION_TIMEOUT_S = 6
PAUSE_S = 3 * SESSION_TIMEOUT_S
WATCH_S = 20  # after SIGCONT: long enough to notice the loss and rebalance again
RATE, TOTAL = 400, 40_000


def tokens(instance: str) -> dict[str, str]:
    return {name: f"tok-{instance}-{name}-{uuid.uuid4().hex[:6]}" for name in ACCOUNTS}


class Instance:
    def __init__(self, config: Path, tmp_path: Path, name: str, account_tokens: dict) -> None:
        self.name, self.tokens = name, account_tokens
        port = free_port()
        self.endpoints = Endpoints(f"http://127.0.0.1:{port}")
        env = connector_env(account_tokens) | {"RPT_METRICS__LISTEN": f"127.0.0.1:{port}"}
        self.process = ConnectorProcess(config, tmp_path / f"{name}.log", env=env).start()

    def owned(self) -> set[str]:
        try:
            accounts = self.endpoints.status()["accounts"]
        except Exception:  # not listening (yet), or stopped
            return set()
        return {name for name, account in accounts.items() if account["owned"]}

    def calls(self, simulator: SimulatorProcess) -> Counter:
        by_token = simulator.stats()["calls_by_token"]
        return Counter({name: by_token[token] for name, token in self.tokens.items()})

    def signal(self, sig: signal.Signals) -> None:
        os.kill(self.process.process.pid, sig)


def zombie_calls(paused: Instance, other: Instance, simulator: SimulatorProcess) -> Counter:
    """get-rpt calls `paused` made for accounts `other` held all along, sampled for WATCH_S.

    A call seen between two samples counts when `other` owned the account at both: a legitimate
    move back needs `other` to release it first (its status then says not owned).
    """
    zombie: Counter = Counter()
    calls, held = paused.calls(simulator), other.owned()
    paused.signal(signal.SIGCONT)
    deadline = time.monotonic() + WATCH_S
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now_calls = paused.calls(simulator)  # calls first, then ownership: see the docstring
        now_held = other.owned()
        for name in held & now_held:
            zombie[name] += now_calls[name] - calls[name]
        calls, held = now_calls, now_held
    return +zombie


def test_a_paused_instance_makes_no_call_for_the_accounts_it_lost(
    kafka_bootstrap: str, tmp_path: Path, producers: str
) -> None:
    topics = Topics.fresh()
    record = tmp_path / "handed-out.jsonl"
    first, second = tokens("x"), tokens("y")
    token_args = [
        arg for each in (first, second) for name, token in each.items()
        for arg in ("--token", f"{name}={token}")
    ]  # fmt: skip
    simulator = SimulatorProcess(
        [*token_args, "--record", str(record), "--rate", str(RATE), "--rate-total", str(TOTAL)]
    ).start()
    cluster = cluster_section(topics, SESSION_TIMEOUT_S)
    config = write_config(
        tmp_path / "c.toml",
        base_url=simulator.base_url,
        bootstrap=kafka_bootstrap,
        topics=topics,
        spool=tmp_path / "spool",
        accounts=ACCOUNTS,
        extra=cluster,
    )
    started: list[Instance] = []
    try:
        paused = Instance(config, tmp_path, "paused", first)
        started.append(paused)
        other = Instance(config, tmp_path, "other", second)
        started.append(other)
        wait_until(
            lambda: len(paused.owned()) == 2 and len(other.owned()) == 2,
            90,
            "two accounts each",
        )
        lost = paused.owned()
        wait_until(lambda: sum(paused.calls(simulator)[n] for n in lost) > 20, 60, "fetching")
        paused.signal(signal.SIGSTOP)
        stopped = time.monotonic()
        wait_until(lambda: other.owned() == set(ACCOUNTS), 60, "the takeover")
        time.sleep(max(0.0, PAUSE_S - (time.monotonic() - stopped)))
        zombie = zombie_calls(paused, other, simulator)
        wait_until(
            lambda: sorted([*paused.owned(), *other.owned()]) == sorted(ACCOUNTS),
            90,
            "each account owned once again",
        )
        simulator.wait_drained(TOTAL, timeout=300)
        wait_until(
            lambda: all(
                instance.endpoints.metric("rpt_spool_pending_records", name) == 0
                for instance in (paused, other)
                for name in instance.owned()
            ),
            120,
            "every spooled report committed",
        )
        for instance in (paused, other):
            code = instance.process.terminate(60)
            assert code == 0, f"{instance.name}: exit {code}\n{instance.process.output()[-3000:]}"
    finally:
        for instance in started:
            if instance.process.alive():
                instance.signal(signal.SIGCONT)
                instance.process.kill()
        simulator.stop()
    good, _bad = ground_truth(record)
    verdict = verify(kafka_bootstrap, topics, good)
    report_figures(
        "paused_instance",
        reports=len(good),
        lost=len(verdict.lost),
        duplicated=len(verdict.duplicated),
        paused_s=PAUSE_S,
        zombie_calls=dict(zombie),
    )
    assert zombie == Counter(), f"get-rpt calls for accounts it had lost: {dict(zombie)}"
    assert verdict.lost == [], f"{len(verdict.lost)} lost"
    assert verdict.duplicated == [], f"{len(verdict.duplicated)} duplicated"
