"""bench/accounts.py's arithmetic: /proc parsing, the metrics it reads, the exactly-once count,
the table and the targets line. No process is started."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import accounts as bench

STATUS = """Name:\tpython
State:\tS (sleeping)
Tgid:\t9120
VmHWM:\t   97440 kB
VmRSS:\t   95000 kB
Threads:\t72
Cpus_allowed_list:\t0-1
"""

# /proc/<pid>/net/tcp: the connector (inodes 11, 12, 13) and another process (inode 99).
TCP = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  inode
   0: 0100007F:A1B2 0100007F:DB97 01 00000000:00000000 00:00000000 00000000     0        0 11 1
   1: 0100007F:A1B3 0100007F:DB97 01 00000000:00000000 00:00000000 00000000     0        0 12 1
   2: 0100007F:A1B4 0100007F:DB97 06 00000000:00000000 00:00000000 00000000     0        0 13 1
   3: 0100007F:A1B5 0100007F:DB97 01 00000000:00000000 00:00000000 00000000     0        0 99 1
   4: 0100007F:A1B6 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 13 1
"""
BROKER_PORT = 0xDB97


def test_status_fields_are_numbers_in_their_units() -> None:
    fields = bench.parse_status(STATUS)
    assert (fields["Threads"], fields["VmHWM"], fields["VmRSS"]) == (72, 97440, 95000)
    assert "State" not in fields and "Name" not in fields


def test_schedstat_is_nanoseconds_on_cpu() -> None:
    assert bench.schedstat_seconds("1500000000 20000 31\n") == 1.5


def test_only_the_process_s_established_sockets_to_the_port_count() -> None:
    inodes = bench.socket_inodes(
        ["socket:[11]", "socket:[12]", "pipe:[5]", "/dev/null", "socket:[13]"]
    )
    assert inodes == {11, 12, 13}
    # 13 is TIME_WAIT (06) towards the broker, 99 is not ours, the last row goes elsewhere.
    assert bench.established_to(TCP, BROKER_PORT, inodes) == 2
    assert bench.established_to(TCP, 0x1F90, inodes) == 1
    assert bench.established_to(TCP.splitlines()[0], BROKER_PORT, inodes) == 0
    assert bench.established_to(TCP + TCP, BROKER_PORT, inodes) == 4  # tcp, then tcp6


def test_cpu_per_thread_name_between_two_snapshots() -> None:
    before = {1: ("python", 1.0), 2: ("rdk:main", 0.5), 3: ("python", 2.0)}
    after = {1: ("python", 1.25), 2: ("rdk:main", 0.75), 4: ("python", 0.5)}  # 3 ended, 4 began
    assert bench.cpu_by_name(before, after) == {"python": 0.75, "rdk:main": 0.25}


def test_cpu_at_takes_the_first_sample_at_or_after_the_moment() -> None:
    series = [(10.0, 1.0), (10.1, 1.2), (10.2, 1.3)]
    assert bench.cpu_at(series, 10.05) == 1.2
    assert bench.cpu_at(series, 10.1) == 1.2
    assert bench.cpu_at(series, 11.0) == 1.3


METRICS = """# HELP rpt_records_published_total Records committed.
# TYPE rpt_records_published_total counter
rpt_records_published_total{account="a0000"} 600.0
rpt_records_published_total{account="a0001"} 400.0
rpt_transaction_duration_seconds_bucket{account="a0000",le="0.01"} 1.0
rpt_transaction_duration_seconds_bucket{account="a0000",le="0.1"} 9.0
rpt_transaction_duration_seconds_bucket{account="a0000",le="+Inf"} 10.0
rpt_transaction_duration_seconds_bucket{account="a0001",le="0.01"} 1.0
rpt_transaction_duration_seconds_bucket{account="a0001",le="0.1"} 9.0
rpt_transaction_duration_seconds_bucket{account="a0001",le="+Inf"} 10.0
rpt_transaction_duration_seconds_count{account="a0000"} 10.0
rpt_build_info{version="0.1.0"} 1.0
"""


def test_samples_per_account() -> None:
    samples = bench.metric_samples(METRICS)
    assert bench.per_account(samples, "rpt_records_published_total") == {
        "a0000": 600.0,
        "a0001": 400.0,
    }
    assert bench.per_account(samples, "rpt_transaction_duration_seconds_count") == {"a0000": 10.0}


def test_a_histogram_quantile_over_all_accounts() -> None:
    samples = bench.metric_samples(METRICS)  # summed: (0.01, 2), (0.1, 18), (+Inf, 20)
    quantile = bench.histogram_quantile
    assert quantile(samples, "rpt_transaction_duration_seconds", 0.5) == pytest.approx(
        0.01 + 0.09 * (10 - 2) / 16
    )
    assert quantile(samples, "rpt_transaction_duration_seconds", 0.05) == pytest.approx(0.005)
    assert quantile(samples, "rpt_transaction_duration_seconds", 0.99) == 0.1  # +Inf: the bound
    assert quantile(samples, "rpt_poll_duration_seconds", 0.99) is None  # no such histogram


def test_ground_truth_msgids_are_normalized_like_the_connector_s() -> None:
    lines = [json.dumps({"msgid": 9223372045854775808}).encode(),
             json.dumps({"msgid": "0042"}).encode(), b""]  # fmt: skip
    assert bench.truth_msgids(lines) == Counter({"9223372045854775808": 1, "42": 1})


def test_compare_counts_lost_duplicated_and_unexpected() -> None:
    truth = Counter({"1": 1, "2": 1, "3": 1})
    assert bench.compare(truth, Counter({"1": 1, "2": 1, "3": 1})) == {
        "handed_out": 3, "delivered": 3, "lost": 0, "duplicated": 0, "unexpected": 0,
    }  # fmt: skip
    assert bench.compare(truth, Counter({"1": 3, "9": 1})) == {
        "handed_out": 3, "delivered": 4, "lost": 2, "duplicated": 2, "unexpected": 1,
    }  # fmt: skip


def _point(n: int, threads: int, rss: float, cpu: float, rate: float | None, **extra) -> dict:
    verdict = {"handed_out": 1000, "lost": 0, "duplicated": 0}
    drain = {"reports": 1000, "reports_per_s": rate, "verdict": verdict} if rate else {}
    startup = {"all_committed_s": extra.get("startup", 1.0), "committed": n}
    idle = {"threads": threads, "peak_rss_mib": rss, "cpu_s_per_s": cpu, "startup": startup}
    return {"accounts": n, "idle": idle, "drain": drain, "notes": extra.get("notes", [])}


def test_per_account_cost_is_the_slope_between_the_two_largest_points() -> None:
    points = [_point(1, 9, 76, 0.002, 100.0), _point(10, 72, 94, 0.006, 50.0),
              _point(100, 702, 239, 0.038, 40.0)]  # fmt: skip
    costs = bench.per_account_costs(points)
    assert costs["threads"] == 7.0
    assert costs["peak_rss_mib"] == pytest.approx(145 / 90)
    assert costs["broker_connections"] is None
    assert bench.marginal(points[:1], lambda p: p["idle"]["threads"]) is None


def test_the_table_has_a_row_per_point_and_says_what_did_not_finish() -> None:
    unfinished = _point(1000, 7002, 2000, 0.4, None, notes=["drain: did not finish within 900 s"])
    unfinished["idle"]["startup"] = {"all_committed_s": None, "cap_s": 900.0, "committed": 412}
    text = bench.table([_point(1, 9, 76, 0.002, 100_000.0), unfinished])
    rows = text.splitlines()
    assert rows[2].startswith("| 1 | 9 | 76 / – | 0.002 |") and "| 100,000 | 1.00 |" in rows[2]
    assert rows[3].startswith("| 1,000 | 7,002 |") and "> 900 (412 of 1,000)" in rows[3]
    assert rows[-1] == "- 1,000 accounts: drain: did not finish within 900 s"


def test_the_targets_line_gives_each_figure_and_whether_it_is_met() -> None:
    points = [_point(1, 9, 76, 0.002, 100_000.0),
              _point(1000, 60, 250, 0.03, 85_000.0, startup=12.5)]  # fmt: skip
    line, data = bench.targets(points)
    assert line.startswith("targets (1,000 accounts): idle threads 60 (≤ 64) met;")
    assert "idle peak RSS 262 MB (≤ 300) met" in line
    assert "idle CPU 0.030 CPU-s/s (≤ 0.02) NOT MET" in line
    assert "lost 0, duplicated 0 of 1,000 handed out (1,000 loaded, 0 never fetched) met" in line
    assert "85,000 reports/s = 0.85× single-account 100,000 reports/s (≥ 0.8×) met" in line
    assert line.endswith("every account's first commit 12.5 s (≤ 10 s) NOT MET")
    assert data["idle_cpu_s_per_s"] == {"measured": 0.03, "target": 0.02, "verdict": "NOT MET"}


def test_targets_without_the_point_or_with_an_unfinished_one() -> None:
    assert bench.targets([_point(1, 9, 76, 0.002, 1.0)])[0].startswith("targets: no 1,000")
    unfinished = _point(1000, 7002, 2000, 0.4, None)
    unfinished["idle"]["startup"] = {"all_committed_s": None, "cap_s": 900.0, "committed": 412}
    line, data = bench.targets([_point(1, 9, 76, 0.002, 1.0), unfinished])
    assert "; drain: lost, duplicated not measured;" in line
    assert "every account's first commit > 900 (412 of 1,000) s (≤ 10 s) NOT MET" in line
    assert data["drain_ratio_to_single"]["verdict"] == "not measured"
    unfinished["drain"] = {"reports": 1000, "cap_s": 900.0}
    line, data = bench.targets([_point(1, 9, 76, 0.002, 1.0), unfinished])
    assert "drain did not finish within 900 s: single-account 1 reports/s (≥ 0.8×) NOT MET" in line
    assert data["drain_ratio_to_single"] == {"measured": None, "target": 0.8, "verdict": "NOT MET"}


def test_the_plot_is_drawn_only_with_data(tmp_path: Path) -> None:
    assert bench.plot([{"accounts": 1, "idle": {}}], tmp_path / "none.png") is None
    drawn = bench.plot([_point(1, 9, 76, 0.002, 1.0), _point(10, 72, 94, 0.006, 1.0)],
                       tmp_path / "a.png")  # fmt: skip
    assert drawn is not None and drawn.read_bytes().startswith(b"\x89PNG")


LOG = """2026-12-07 12:34:05,364 ERROR   connector.pipeline [a0998] account a0998: publishing failed unexpectedly
Traceback (most recent call last):
RuntimeError: Failed to initialize thread local storage
2026-12-07 12:34:05,845 ERROR   connector.pipeline [a0997] account a0997 stopped: publishing failed unexpectedly: RuntimeError: Failed to initialize thread local storage
2026-12-07 12:34:05,955 INFO    connector.pipeline [a0994] account a0994: committed spool sequence 0, 0 spool entries to replay
2026-12-07 12:34:06,001 ERROR   connector.pipeline [a0001] account a0001 stopped: fenced
"""  # noqa: E501 - log lines as the connector writes them


def test_failed_accounts_and_their_reasons_come_from_the_log() -> None:
    assert bench.failed_accounts(LOG) == {
        "a0997": "publishing failed unexpectedly: RuntimeError: Failed to initialize thread "
        "local storage",
        "a0001": "fenced",
    }
    assert bench.failed_accounts("") == {}


def test_accounts_that_failed_at_start_miss_the_startup_and_drain_targets() -> None:
    point = _point(1000, 6981, 1850, 0.05, 90_000.0)
    point["idle"]["startup"] = {"all_committed_s": None, "live_committed_s": 130.2,
                                "committed": 997, "failed": 3}  # fmt: skip
    point["drain"]["verdict"] |= {"handed_out": 997, "not_handed_out": 3}
    line, data = bench.targets([_point(1, 9, 76, 0.002, 100_000.0), point])
    assert "lost 0, duplicated 0 of 997 handed out (1,000 loaded, 3 never fetched) NOT MET" in line
    assert line.endswith("first commit never: 3 failed; the other 997 by 130.2 s (≤ 10 s) NOT MET")
    assert data["startup_every_first_commit_s"]["verdict"] == "NOT MET"


def test_missing_reports_found_in_dead_letters_and_the_reasons() -> None:
    def dead(value: bytes, reason: bytes) -> bench.ConsumedRecord:
        return bench.ConsumedRecord("t.dlq", 0, 0, None, value, [("reason", reason)])

    cut = b'{"result":0,"data":[{"msgid":"0042","custid":"c"},{"msgid":43,"cu'
    records = [dead(cut, b"invalid_response"), dead(b"<html>", b"invalid_response"),
               dead(b'{"msgid":44}', b"invalid_report")]  # fmt: skip
    truth = Counter({"42": 1, "43": 1, "44": 1, "45": 1})
    summary = bench.dead_letter_summary(records, truth, Counter({"44": 1}))
    assert summary == {
        "dead_letters": 3,
        "dead_letters_by_reason": {"invalid_response": 2, "invalid_report": 1},
        "lost_in_dead_letters": 2,  # 42 and 43; 44 was delivered, 45 is nowhere
    }


def test_a_quantile_in_the_inf_bucket_is_only_a_lower_bound() -> None:
    samples = bench.metric_samples(METRICS)  # 18 of 20 within 0.1 s
    assert bench.beyond_last_bound(samples, "rpt_transaction_duration_seconds", 0.99)
    assert not bench.beyond_last_bound(samples, "rpt_transaction_duration_seconds", 0.9)
    assert not bench.beyond_last_bound(samples, "rpt_poll_duration_seconds", 0.99)
    point = _point(100, 702, 238, 0.037, 1.0)
    point["drain"] |= {"commit_p99_ms": 30_000.0, "commit_p99_beyond_buckets": True}
    assert "| ≥ 30,000 |" in bench.table([point])
