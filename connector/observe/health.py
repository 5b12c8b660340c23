"""The account-health series: state, paused fetching, Kafka reachability, aborts, restarts.

What a Kafka Connect operator reads from task status and commit failures, and a Redpanda
Connect operator from `output_connection_up` and `output_error`. Every label value the code
can emit exists from the start (0), so alerts see the first change.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from connector.observe.metric_types import Counter, Gauge
from connector.observe.observer import AccountState, PauseReason


class HealthSeries:
    """rpt_account_state, rpt_fetch_paused, rpt_kafka_reachable and the abort/restart counters."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        # What each account's enum gauges say now: a call that changes nothing sets nothing
        # (the fetch loop says POLLING once per get-rpt call).
        self._shown: dict[tuple[str, str], object] = {}
        self._state = Gauge(
            "rpt_account_state",
            "1 for the account's current state, 0 for every other state.",
            ["account", "state"],
            registry=r,
        )
        self._paused = Gauge(
            "rpt_fetch_paused",
            "1 while the account does not call get-rpt for this reason.",
            ["account", "reason"],
            registry=r,
        )
        self._reachable = Gauge(
            "rpt_kafka_reachable",
            "1 while the account's Kafka requests succeed; 0 after kafka.unreachable_after "
            "without a success while work is pending.",
            ["account"],
            registry=r,
        )
        self._aborts = Counter(
            "rpt_transaction_aborts",
            "Kafka transactions aborted (their spool entries are sent again).",
            ["account"],
            registry=r,
        )
        self._restarts = Counter(
            "rpt_producer_restarts",
            "Producers closed and created again after a fatal error.",
            ["account"],
            registry=r,
        )

    def ensure(self, account: str) -> None:
        self.state(account, AccountState.STARTING)
        self.paused(account, None)
        # rpt_kafka_reachable stays absent until the first Kafka request says yes or no.
        self._aborts.labels(account)
        self._restarts.labels(account)

    def state(self, account: str, state: AccountState) -> None:
        current = AccountState(state)
        if self._shown.get((account, "state"), self) is current:
            return
        self._shown[account, "state"] = current
        for member in AccountState:
            self._state.labels(account, member.value).set(1 if member is current else 0)

    def paused(self, account: str, reason: PauseReason | None) -> None:
        current = PauseReason(reason) if reason is not None else None
        if self._shown.get((account, "paused"), self) is current:
            return
        self._shown[account, "paused"] = current
        for member in PauseReason:
            self._paused.labels(account, member.value).set(1 if member is current else 0)

    def reachable(self, account: str, reachable: bool) -> None:
        self._reachable.labels(account).set(1 if reachable else 0)

    def aborted(self, account: str) -> None:
        self._aborts.labels(account).inc()

    def producer_restarted(self, account: str) -> None:
        self._restarts.labels(account).inc()
