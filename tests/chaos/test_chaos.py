"""Chaos: kill -9 the connector, restart the broker, pause the platform; account for every report.

`test_chaos_short` runs in `make test`; the long runs only in `make chaos` (see conftest.py).
The seed is printed (and `CHAOS_SEED` replays one); the summary line is printed too (`-s`).
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path

import pytest
from chaos_run import ChaosRun, Outcome, Plan


def seed() -> int:
    chosen = int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(10**6))
    print(f"chaos seed {chosen} (replay with CHAOS_SEED={chosen})")
    return chosen


def run(plan: Plan, isolated_broker: Callable, tmp_path: Path) -> Outcome:
    outcome = ChaosRun(plan, isolated_broker(), tmp_path).run()
    print(outcome.summary())
    assert outcome.lost_other == [], f"lost outside any in-flight window: {outcome.lost_other[:5]}"
    return outcome


@pytest.mark.integration
def test_chaos_short(isolated_broker: Callable, tmp_path: Path) -> None:
    plan = Plan(seed(), kills=3, broker_restarts=1, pauses=1, stall=1.0)
    outcome = run(plan, isolated_broker, tmp_path)
    assert outcome.duplicated == [], outcome.summary()
    assert len(outcome.kills) == 3 and outcome.broker_restarts == 1


@pytest.mark.integration
@pytest.mark.timeout(1200)
def test_chaos_200_accounts_through_one_shared_producer(isolated_broker, tmp_path) -> None:
    """kafka.shared_producer: 200 accounts' batches commit together in one producer's
    transactions, through kill -9 and a broker restart; every report once."""
    plan = Plan(seed(), kills=2, broker_restarts=1, pauses=0, stall=1.0, accounts=200,
                shared_producer=True, rate=3000)  # fmt: skip
    outcome = run(plan, isolated_broker, tmp_path)
    assert outcome.duplicated == [], outcome.summary()
    assert len(outcome.kills) == 2 and outcome.broker_restarts == 1
    log = (tmp_path / "connector.log").read_text()
    assert "shared producer rpt-" in log and "instance-" in log  # it ran through one


@pytest.mark.chaos
@pytest.mark.timeout(3600)
def test_chaos_long_exactly_once(isolated_broker: Callable, tmp_path: Path) -> None:
    plan = Plan(seed(), kills=20, broker_restarts=2, pauses=2)
    outcome = run(plan, isolated_broker, tmp_path)
    assert outcome.duplicated == [], outcome.summary()


@pytest.mark.chaos
@pytest.mark.timeout(3600)
def test_chaos_long_at_least_once(isolated_broker: Callable, tmp_path: Path) -> None:
    """Duplicates are allowed here: counted and printed, never a failure."""
    run(Plan(seed(), kills=20, broker_restarts=2, pauses=2, delivery="at_least_once"),
        isolated_broker, tmp_path)  # fmt: skip
