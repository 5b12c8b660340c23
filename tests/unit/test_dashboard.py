"""The dashboard stays readable at 1,000 accounts: every per-account query draws only the top
`$topk` accounts (a dashboard variable), the state panels only accounts not in a healthy state.

Static checks over config/grafana/rpt-connector.json; tests/integration/test_dashboard_topk.py
runs the same queries against a real Prometheus scraping 50 accounts.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from dashboard_kit import Target, bounded, dashboard, targets

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
from render_dashboard import expand, variables

PER_ACCOUNT = [t for t in targets() if t.per_account]
INSTANCE_LEVEL = {
    "Instances up (of expected)": ['sum(up{job=~"$job"})', 'count(up{job=~"$job"})'],
    "Accounts not polling": [
        'count(max by (account) (rpt_account_state{job=~"$job",account=~"$account",'
        'state!~"polling|backoff|not_owned"}) == 1) or vector(0)'
    ],
    "Version": ['count by (version) (rpt_build_info{job=~"$job"})'],
}
UNHEALTHY_ONLY = {
    "Account state": 'state!~"polling|not_owned"',
    "Fetching paused": 'reason!="not_owned"',
}
LOW_IS_WORST = {"Kafka reachable", "Broker connections up"}


def ids(target: Target) -> str:
    return f"{target.panel} {target.ref}"


def test_the_topk_variable_is_a_custom_choice_defaulting_to_10() -> None:
    (topk,) = [v for v in dashboard()["templating"]["list"] if v["name"] == "topk"]
    assert topk["type"] == "custom"
    assert topk["query"].split(",") == ["5", "10", "20", "50"]
    assert [o["value"] for o in topk["options"]] == ["5", "10", "20", "50"]
    assert topk["current"]["value"] == "10"
    assert [o["value"] for o in topk["options"] if o["selected"]] == ["10"]
    assert not topk["multi"] and not topk["includeAll"]


def test_every_panel_but_the_instance_level_ones_is_per_account() -> None:
    per_panel: dict[str, list[str]] = {}
    for target in targets():
        if not target.per_account:
            per_panel.setdefault(target.panel, []).append(target.expr)
    assert per_panel == INSTANCE_LEVEL
    assert len(PER_ACCOUNT) == 26


@pytest.mark.parametrize("target", PER_ACCOUNT, ids=ids)
def test_every_per_account_query_is_bounded_by_topk(target: Target) -> None:
    bound = bounded(target.expr)
    assert bound is not None, f"{target.panel}: not cut to $topk accounts: {target.expr}"
    expected = "bottomk" if target.panel in LOW_IS_WORST else "topk"
    assert bound.how == expected
    # A range panel ranks once over the whole window: topk at each step would draw the union
    # of every step's top k (at 1,000 similar accounts, far more than k lines).
    assert bound.stable == (target.kind != "stat"), target.expr
    if bound.stable:
        assert "[$__range] @ end()" in bound.rank
    # $account still filters both what is drawn and what is ranked.
    selectors = re.findall(r"\brpt_\w+\{[^}]*\}", target.expr)
    assert selectors
    assert all('account=~"$account"' in s and 'job=~"$job"' in s for s in selectors)
    assert "by (account" in bound.rank or bound.rank == bound.shown


def test_every_per_account_panel_says_how_it_chooses_its_accounts() -> None:
    panels = {t.panel for t in PER_ACCOUNT}
    described = {
        p["title"]: p.get("description", "") for p in dashboard()["panels"] if p["type"] != "row"
    }
    assert [title for title in panels if "Top $topk accounts by" not in described[title]] == []


@pytest.mark.parametrize("title", sorted(UNHEALTHY_ONLY))
def test_state_panels_draw_only_accounts_not_in_a_healthy_state(title: str) -> None:
    (target,) = [t for t in PER_ACCOUNT if t.panel == title]
    bound = bounded(target.expr)
    assert bound is not None
    healthy = UNHEALTHY_ONLY[title]
    assert bound.shown.count(healthy) == 1 and bound.rank.count(healthy) == 1
    assert bound.shown.rstrip().endswith("== 1")  # only the flags that are set
    assert bound.rank.rstrip().endswith("> 0")  # never a healthy account to fill k


PAIRED = {
    "Reports fetched and published per second": ("fetched", "published"),
    "Batch size (reports per poll)": ("mean", "retsize"),
    "Report lag (rtime → Kafka commit)": ("p50", "p99"),
    "Delivery latency (stime → rtime)": ("p50", "p99"),
    "get-rpt call duration": ("p50", "p99"),
    "Kafka transaction duration": ("p50", "p99"),
    "Spool pending": ("reports", "answers"),
}


@pytest.mark.parametrize("title", sorted(PAIRED))
def test_two_lines_of_one_account_are_one_query_ranked_once(title: str) -> None:
    """Two targets would each pick their own k accounts among ties (a p99 of one bucket, a full
    batch): the p50 of some accounts next to the p99 of others."""
    (target,) = [t for t in PER_ACCOUNT if t.panel == title]
    assert target.legend == "{{series}} {{account}}"
    bound = bounded(target.expr)
    assert bound is not None
    names = re.findall(r'"series", "(\w+)", "", ""', bound.shown)
    assert tuple(names) == PAIRED[title]
    if names == ["p50", "p99"]:
        assert bound.rank.startswith("histogram_quantile(0.99, ")  # by the tail


def test_the_renderer_fills_topk_from_the_dashboard_default_and_the_window() -> None:
    values = variables(dashboard(), "4s", 299.6)
    assert values["topk"] == "10"
    assert values["__range"] == "300s"
    assert variables(dashboard(), "4s", 0.2, topk="5")["__range"] == "1s"
    expr = 'topk($topk, rate(x{job=~"$job",account=~"${account}"}[$__rate_interval] @ end()))'
    assert expand(expr, {**values, "topk": "5"}) == (
        'topk(5, rate(x{job=~".*",account=~".*"}[4s] @ end()))'
    )
    assert expand("x[$__range] $unknown", values) == "x[300s] $unknown"


def test_bounded_reads_both_shapes_and_refuses_the_rest() -> None:
    whole = bounded("topk($topk, sum by (account) (x))")
    assert whole is not None and whole.shown == "sum by (account) (x)" and not whole.stable
    joined = bounded('a{s="(" } and on (account) bottomk($topk, min by (account) (b @ end()))')
    assert joined is not None and joined.how == "bottomk" and joined.stable
    assert joined.shown == 'a{s="(" }'
    assert bounded("sum by (account) (x)") is None
    assert bounded("topk($topk, x) + y") is None
    assert bounded("(a and on (account) topk($topk, b))") is None
    assert bounded("topk(10, x)") is None
