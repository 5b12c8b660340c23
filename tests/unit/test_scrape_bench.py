"""bench/scrape.py: its arithmetic, the values it feeds, and a smoke run with 3 accounts (the
connector's real endpoint server on a free port; a second or so)."""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import pytest

from connector.observe.metrics import Metrics

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import scrape as bench


def test_account_counts_are_positive_integers() -> None:
    assert bench.parse_counts("1,100,1000") == [1, 100, 1000]
    assert bench.parse_counts(" 3 ") == [3]
    for bad in ("", "0", "1,-2"):
        with pytest.raises(argparse.ArgumentTypeError):
            bench.parse_counts(bad)


def test_percentile_is_by_rank_and_p99_of_20_is_the_slowest() -> None:
    times = [float(n) for n in range(20, 0, -1)]
    assert bench.percentile(times, 0.99) == 20.0
    assert bench.percentile(times, 0.5) == 11.0
    assert bench.percentile([7.0], 0.99) == 7.0
    with pytest.raises(ValueError):
        bench.percentile([], 0.5)


def test_series_are_the_sample_lines() -> None:
    text = (
        "# HELP rpt_x x\n# TYPE rpt_x counter\n"
        'rpt_x_total{account="a"} 1.0\nrpt_x_total{account="b"} 2.0\n# EOF\n'
    )
    assert bench.count_series(text) == 2
    assert bench.count_series("") == 0


def test_the_reports_of_a_commit_add_up_over_a_few_dozen_keys() -> None:
    rng = random.Random(1)
    observed = bench.observed_reports(1_700_000_000_000, 437, rng)
    assert sum(observed.values()) == 437
    assert 5 <= len(observed) <= 40
    for rtime, stime, status in observed:
        assert rtime % 1000 == 0 and stime < rtime
        assert status in (0, 1, 5, None)
    assert sum(bench.observed_reports(1_700_000_000_000, 2, rng).values()) == 2


def test_librdkafka_statistics_reach_the_broker_series() -> None:
    stats = bench.librdkafka_stats(4, 1_700_000_000.0, random.Random(2))
    document = json.loads(stats)
    assert document["type"] == "producer" and "msg_cnt" in document
    metrics = Metrics(accounts=["a"], clock=lambda: 1_700_000_000.0)
    metrics.producer_statistics("a", stats)
    up = {
        s.labels["broker"]: s.value
        for family in metrics.registry.collect()
        if family.name == "rpt_broker_up"
        for s in family.samples
    }
    assert up == {f"kafka-{n}:9092/{n}": 1.0 for n in (1, 2, 3)}  # not the bootstrap one


def result(accounts: int, median: float) -> dict:
    return {
        "accounts": accounts,
        "metrics": {
            "median_ms": median, "p99_ms": median * 1.5, "cpu_median_ms": median / 2,
            "encode_cpu_median_ms": median / 3, "bytes": 9_800_000, "wire_bytes": 710_000,
            "series": 143_007,
        },
        "status": {"median_ms": 11.3, "p99_ms": 14.0, "bytes": 507_900},
    }  # fmt: skip


def test_the_table_and_the_verdict() -> None:
    rows = [result(1, 0.9), result(1000, 180.0)]
    lines = bench.table(rows).splitlines()
    assert len(lines) == 4
    assert "143,007" in lines[3] and "180 ms" in lines[3] and "9.8 MB" in lines[3]
    assert "0.9 ms" in lines[2]
    assert "within the 200 ms target" in str(bench.verdict(rows))
    assert "OVER" in str(bench.verdict([result(1000, 250.0)]))
    assert bench.verdict([result(100, 500.0)]) is None  # only said from 1,000 accounts up


def test_a_smoke_run_with_three_accounts(tmp_path: Path, capsys) -> None:
    out = tmp_path / "scrape.json"
    assert bench.main(["--accounts", "3", "--requests", "3", "--json", str(out)]) == 0
    document = json.loads(out.read_text())
    assert document["bench"] == "scrape" and document["requests"] == 3
    (only,) = document["results"]
    metrics, status = only["metrics"], only["status"]
    assert only["accounts"] == 3
    assert metrics["content_type"].startswith("application/openmetrics-text")
    assert metrics["series"] > 3 * 100  # every per-account series of 3 accounts
    assert 0 < metrics["wire_bytes"] < metrics["bytes"]  # gzipped
    assert metrics["median_ms"] > 0 and status["median_ms"] > 0 and status["bytes"] > 0
    assert "accounts" in capsys.readouterr().out
