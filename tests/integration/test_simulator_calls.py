"""The simulator counts get-rpt calls per static token: two instances of one account told apart."""

from __future__ import annotations

import httpx
import pytest
from fixtures import GET_RPT_PATH

from connector.simulator.server import Simulator

pytestmark = pytest.mark.integration


def test_calls_are_counted_per_token_even_for_one_account() -> None:
    sim = Simulator.from_argv(
        ["--seed", "1", "--token", "a=tok-x", "--token", "a=tok-y", "--reports", "a=10"]
    )
    sim.start()
    try:
        with httpx.Client(base_url=sim.base_url) as http:
            for token, times in (("tok-x", 3), ("tok-y", 1), ("wrong", 2)):
                for _ in range(times):
                    headers = {"Finovy-Access-Token": token}
                    http.post(GET_RPT_PATH, json={"retsize": 2}, headers=headers)
            stats = http.get("/stats").json()
    finally:
        sim.stop()
    assert stats["calls_by_token"] == {"tok-x": 3, "tok-y": 1}
    assert stats["accounts"]["a"]["handed_out"] == 8  # both tokens read the one queue
    assert stats["faults"]["auth_failures"] == 2
