"""The dashboard's per-account panels draw at most `$topk` accounts, against a real Prometheus.

50 accounts in one `Metrics`, fed through the real observer (some in backoff, some paused,
some with Kafka unreachable, two owned by another instance), exposed by the connector's own
EndpointServer and scraped every second by Debian's `prometheus`. Every per-account query of
config/grafana/rpt-connector.json then runs over the window as Grafana would run it, with
$topk = 5: each returns at most 5 accounts over the whole range, while the same query without
its bound returns more; the state panels draw only unhealthy accounts; and selecting a few
accounts still draws exactly them.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from dashboard_kit import (  # and tools/ on sys.path
    Target,
    bounded,
    dashboard,
    scraped_while,
    targets,
)
from promserver import PrometheusServer
from render_dashboard import expand, variables

from connector.observe.account import make_observer
from connector.observe.metrics import Metrics
from connector.observe.observer import (
    AccountObserver,
    AccountState,
    CommitSummary,
    PauseReason,
    PollOutcome,
    SpoolLevel,
)
from connector.observe.status import EndpointServer, StatusBoard

pytestmark = pytest.mark.integration

ACCOUNTS = [f"acct-{i:02d}" for i in range(50)]
K = 5
SCRAPE_S = 1.0
PLAY_S = 8.0
RATE_INTERVAL = "4s"
NOT_OWNED = {1, 2}  # another instance has them: healthy, never on a state panel


def backoff(i: int) -> bool:
    return i % 4 == 0  # 13 accounts


def paused(i: int) -> bool:
    return i % 5 == 0  # 10 accounts


def unreachable(i: int) -> bool:
    return i % 3 == 0  # 17 accounts: they fetch and spool, nothing commits


def feed(observer: AccountObserver, i: int, tick: int) -> None:
    """One quarter second of account i: the bigger i, the busier (and slower) it is."""
    now = time.time()
    reports = 10 * (i + 1)
    failing = backoff(i) and tick % 2 == 0
    outcome = PollOutcome.RETRIABLE_ERROR if failing else PollOutcome.OK
    observer.polled(outcome, duration=0.01 * (i + 1), reports=0 if failing else reports,
                    attempt=i % 7 if failing else 0, next_in=0.2)  # fmt: skip
    oldest = now - i
    observer.spooled(SpoolLevel(i + 1, reports, reports * 300, oldest, (50 - i) << 16))
    if i % 9 == 0:
        observer.spool_write_failed("disk said no")
    observer.unknown_fields(i % 4)
    stats = {
        "msg_cnt": i * 3, "msg_size": i * 900,
        "brokers": {
            f"kafka-{n}:9092/{n}": {"nodeid": n, "state": "DOWN" if unreachable(i) and n == 1
                                    else "UP", "rtt": {"avg": 1000 * (i + n)}, "txerrs": i}
            for n in (1, 2)
        },
    }  # fmt: skip
    observer.producer_statistics(json.dumps(stats))
    if unreachable(i):
        observer.kafka_reachable(False, "no Kafka request succeeded for 30s")
        return
    now_ms = int(now * 1000)
    observed = Counter({
        (now_ms - 1000 * (i + 1), now_ms - 1000 * (i + 5), 0): reports - 2,
        (now_ms - 2000 * (i + 1), now_ms - 3000 * (i + 1), 5): 2,
    })  # fmt: skip
    dead = Counter({"invalid_report": i % 3}) if i % 2 else Counter()
    summary = CommitSummary(tick, reports, dead, observed, 0.002 * (i + 1), now)
    observer.committed(summary, SpoolLevel(0, 0, 0, None, 50 << 16))
    if i % 7 == 0:
        observer.aborted("fenced")
    if i % 11 == 0:
        observer.producer_restarted("fatal")


def settle(observers: list[AccountObserver]) -> None:
    """Each account's state for the whole window (set before Prometheus first scrapes)."""
    for i, observer in enumerate(observers):
        if i in NOT_OWNED:
            observer.state(AccountState.NOT_OWNED)  # also pauses fetching: reason not_owned
            continue
        observer.state(AccountState.BACKOFF if backoff(i) else AccountState.POLLING)
        if paused(i):
            observer.fetch_paused(PauseReason.SPOOL_FULL)


def play(observers: list[AccountObserver], stop: threading.Event) -> None:
    tick = 0
    while not stop.wait(0.25):
        tick += 1
        for i, observer in enumerate(observers):
            if i not in NOT_OWNED:
                feed(observer, i, tick)


@pytest.fixture(scope="module")
def scraped(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[PrometheusServer, tuple[float, float]]]:
    capacities = {a: 500 if i % 2 else 200 for i, a in enumerate(ACCOUNTS)}
    metrics = Metrics(accounts=ACCOUNTS, batch_capacities=capacities)
    board = StatusBoard(ACCOUNTS)
    server = EndpointServer("127.0.0.1:0", metrics, board)
    host, port = server.start()
    observers = [make_observer(metrics, board, a) for a in ACCOUNTS]
    settle(observers)
    workdir = tmp_path_factory.mktemp("prom-topk")
    try:
        with scraped_while(
            workdir, f"{host}:{port}", lambda stop: play(observers, stop), PLAY_S,
            interval=SCRAPE_S,
        ) as (prom, start, end):  # fmt: skip
            yield prom, (start, end)
    finally:
        server.stop()


def run(prom: PrometheusServer, target: Target, expr: str, window: tuple) -> list[dict]:
    """The query as its panel runs it: range panels over the window by 1 s, stats at its end."""
    start, end = window
    values = variables(dashboard(), RATE_INTERVAL, end - start, topk=str(K))
    promql = expand(expr, values)
    path, params = "/api/v1/query_range", {"query": promql, "start": start, "end": end, "step": 1}
    if target.kind == "stat":
        path, params = "/api/v1/query", {"query": promql, "time": end}
    body = httpx.get(prom.url + path, params=params, timeout=30).json()
    assert body["status"] == "success", (promql, body)
    return body["data"]["result"]


def accounts(result: list[dict]) -> set[str]:
    return {r["metric"]["account"] for r in result}


PER_ACCOUNT = [t for t in targets() if t.per_account]
UNHEALTHY_ONLY = {"Account state", "Fetching paused"}


@pytest.mark.parametrize("target", PER_ACCOUNT, ids=lambda t: f"{t.panel} {t.ref}")
def test_each_per_account_panel_draws_at_most_k_accounts(scraped, target: Target) -> None:
    prom, window = scraped
    bound = bounded(target.expr)
    assert bound is not None
    result = run(prom, target, target.expr, window)
    drawn = accounts(result)
    everyone = accounts(run(prom, target, bound.shown, window))
    assert len(everyone) > K, f"{target.panel}: the unbounded query draws only {everyone}"
    assert 0 < len(drawn) <= K
    assert drawn <= everyone
    if "{{series}}" in target.legend:  # both lines of each account drawn, for the same k
        assert set(Counter(r["metric"]["account"] for r in result).values()) == {2}


def test_the_state_panels_draw_only_unhealthy_accounts(scraped) -> None:
    prom, window = scraped
    panels = {t.panel: t for t in PER_ACCOUNT if t.panel in UNHEALTHY_ONLY}
    state = run(prom, panels["Account state"], panels["Account state"].expr, window)
    assert {r["metric"]["state"] for r in state} == {"backoff"}
    assert accounts(state) <= {a for i, a in enumerate(ACCOUNTS) if backoff(i)}
    pause = run(prom, panels["Fetching paused"], panels["Fetching paused"].expr, window)
    assert {r["metric"]["reason"] for r in pause} == {"spool_full"}
    assert accounts(pause) <= {a for i, a in enumerate(ACCOUNTS) if paused(i)}
    # Only healthy accounts selected (polling, or owned elsewhere): nothing to draw.
    healthy = "acct-01|acct-02|acct-03"
    for target in panels.values():
        assert run(prom, target, target.expr.replace("$account", healthy), window) == []


def test_the_k_accounts_are_the_worst_by_what_the_panel_shows(scraped) -> None:
    prom, window = scraped
    by_title = {(t.panel, t.ref): t for t in PER_ACCOUNT}
    # Reports per poll grow with i; an account in backoff fails every other poll.
    rate = {a: (i + 1) * (0.5 if backoff(i) else 1) for i, a in enumerate(ACCOUNTS)}
    busiest = set(sorted(ACCOUNTS, key=rate.__getitem__)[-K:])
    assert busiest == {"acct-49", "acct-47", "acct-46", "acct-45", "acct-43"}
    fetched = by_title["Reports fetched and published per second", "A"]
    assert accounts(run(prom, fetched, fetched.expr, window)) == busiest  # fetched and published
    reachable = by_title["Kafka reachable", "A"]
    result = run(prom, reachable, reachable.expr, window)
    assert accounts(result) <= {a for i, a in enumerate(ACCOUNTS) if unreachable(i)}
    assert {float(v) for r in result for _, v in r["values"]} == {0.0}


def test_selecting_a_few_accounts_still_draws_exactly_them(scraped) -> None:
    prom, window = scraped
    chosen = {"acct-07", "acct-11", "acct-31"}  # polling, reachable, not paused
    for target in PER_ACCOUNT:
        if target.panel in UNHEALTHY_ONLY:
            continue
        expr = target.expr.replace("$account", "|".join(sorted(chosen)))
        assert accounts(run(prom, target, expr, window)) == chosen, target.panel
