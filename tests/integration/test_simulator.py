"""The simulator's contract over real sockets: destructive reads, stats, record, data, CLI."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import httpx
import msgspec
import pytest
from fixtures import GET_RPT_PATH, LOGIN_PATH, REPO, start_simulator, stop_simulator

from connector.simulator.server import FIRST_MSGID, Simulator

pytestmark = pytest.mark.integration

OK_PREFIX = b'{"result":0,"desc":"%e6%88%90%e5%8a%9f","rpts":['
TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")


@pytest.fixture
def simulator() -> Iterator[Callable[..., Simulator]]:
    started: list[Simulator] = []

    def start(*argv: str) -> Simulator:
        started.append(Simulator.from_argv(["--seed", "11", *argv]))
        started[-1].start()
        return started[-1]

    yield start
    for each in started:
        each.stop()


def get_rpt(http: httpx.Client, token: str, retsize: object = "500") -> httpx.Response:
    response = http.post(
        GET_RPT_PATH, json={"retsize": retsize}, headers={"Finovy-Access-Token": token}
    )
    response.raise_for_status()
    return response


def reports_of(response: httpx.Response) -> list[dict]:
    return msgspec.json.decode(response.content)["rpts"]


def drain(base_url: str, token: str, retsize: object = "500") -> list[bytes]:
    """Every body until an empty batch, over one keep-alive connection."""
    bodies = []
    with httpx.Client(base_url=base_url) as http:
        while True:
            body = get_rpt(http, token, retsize).content
            bodies.append(body)
            if body == OK_PREFIX + b"]}":
                return bodies


def msgids(bodies: list[bytes]) -> list[int]:
    return [int(r["msgid"]) for b in bodies for r in msgspec.json.decode(b)["rpts"]]


def test_concurrent_clients_never_receive_the_same_report(
    simulator: Callable[..., Simulator],
) -> None:
    sim = simulator("--token", "t", "--reports", "6000")
    got: list[list[int]] = [[], []]
    threads = [
        threading.Thread(target=lambda i=i: got[i].extend(msgids(drain(sim.base_url, "t", 37))))
        for i in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert got[0] and got[1]
    assert not set(got[0]) & set(got[1])
    assert sorted(got[0] + got[1]) == list(range(FIRST_MSGID, FIRST_MSGID + 6000))
    assert sim.stats()["pending"] == 0


def test_stats_add_up_per_account_and_in_total(simulator: Callable[..., Simulator]) -> None:
    sim = simulator(
        "--token",
        "a=ta",
        "--token",
        "tb",
        "--account",
        "u1:s1",
        "--reports",
        "10",
        "--reports",
        "a=5",
    )
    with httpx.Client(base_url=sim.base_url) as http:
        assert len(reports_of(get_rpt(http, "ta", 3))) == 3
        stats = http.get("/stats").json()
    assert stats["accounts"] == {
        "a": {"generated": 9, "handed_out": 3, "pending": 6},
        "acct2": {"generated": 3, "handed_out": 0, "pending": 3},
        "u1": {"generated": 3, "handed_out": 0, "pending": 3},
    }
    assert (stats["generated"], stats["handed_out"], stats["pending"]) == (15, 3, 12)
    assert stats["faults"]["requests"] == 1


def test_the_record_holds_exactly_what_was_handed_out_including_duplicates(
    simulator: Callable[..., Simulator], tmp_path: Path
) -> None:
    record = tmp_path / "record.jsonl"
    sim = simulator(
        "--token", "t", "--reports", "1234", "--duplicate-rate", "0.1", "--record", str(record)
    )
    bodies = drain(sim.base_url, "t", 100)
    lines = record.read_bytes().splitlines()
    sent = [b[len(OK_PREFIX) : -2] for b in bodies]
    assert b",".join(filter(None, sent)) == b",".join(lines)  # the very bytes, in order
    stats = sim.stats()
    duplicates = stats["faults"]["duplicates"]
    assert duplicates > 0
    assert len(lines) == stats["handed_out"] == 1234 + duplicates
    assert stats["generated"] + duplicates == stats["handed_out"] + stats["pending"]
    counts = Counter(msgids(bodies))
    assert len(counts) == 1234
    assert sum(n - 1 for n in counts.values()) == duplicates


def test_reports_look_like_the_platform_s(simulator: Callable[..., Simulator]) -> None:
    sim = simulator("--token", "x", "--token", "y", "--reports", "8000")
    bodies = drain(sim.base_url, "x") + drain(sim.base_url, "y")
    reports = [r for b in bodies for r in msgspec.json.decode(b)["rpts"]]
    ids = [int(r["msgid"]) for r in reports]
    assert len(set(ids)) == 8000 and min(ids) == FIRST_MSGID
    assert {type(r["msgid"]) for r in reports} == {int, str}
    assert {type(r["status"]) for r in reports} == {int, str}
    assert {r["errcode"] for r in reports} >= {
        "DELIVRD",
        "UNDELIV",
        "EXPIRED",
        "REJECTD",
        "MK:0001",
    }
    assert all((str(r["status"]) == "0") == (r["errcode"] == "DELIVRD") for r in reports)
    assert any(r["errdesc"] == "用户不在服务区" for r in reports)
    assert any(r["custid"] == "" for r in reports)
    assert any(str(r["countrycode"]) == "-1" for r in reports)
    for r in reports:
        assert TIME.match(r["stime"]) and TIME.match(r["rtime"])
        lag = datetime.fromisoformat(r["rtime"]) - datetime.fromisoformat(r["stime"])
        assert timedelta(seconds=1) <= lag <= timedelta(seconds=10)
    _assert_long_messages_are_split_in_consecutive_parts(reports[:4000])  # account x
    _assert_long_messages_are_split_in_consecutive_parts(reports[4000:])  # account y


def _assert_long_messages_are_split_in_consecutive_parts(reports: list[dict]) -> None:
    starts = [i for i, r in enumerate(reports) if int(r["pknum"]) == 1 and int(r["pktotal"]) > 1]
    assert starts
    for i in starts:
        total = int(reports[i]["pktotal"])
        parts = reports[i : i + total]
        if len(parts) < total:
            continue  # the last message of an account may be cut short
        assert [int(p["pknum"]) for p in parts] == list(range(1, total + 1))
        assert len({p["custid"] for p in parts}) == 1


def test_malformed_reports_break_one_rule_each(simulator: Callable[..., Simulator]) -> None:
    sim = simulator("--token", "t", "--reports", "300", "--malformed-rate", "1")
    reports = [r for b in drain(sim.base_url, "t") for r in msgspec.json.decode(b)["rpts"]]
    broken = [
        "msgid" not in r or r["status"] == "ok?" or r["rtime"] == "2016-13-45 25:61:61"
        for r in reports
    ]
    assert len(reports) == 300 and all(broken)
    assert sim.stats()["faults"]["malformed"] == 300


def test_rate_mode_generates_over_time_up_to_the_total(simulator: Callable[..., Simulator]) -> None:
    sim = simulator("--token", "t", "--rate", "2000", "--rate-total", "300")
    deadline = time.monotonic() + 5
    while sim.stats()["generated"] < 300 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.1)
    reports = [r for b in drain(sim.base_url, "t") for r in msgspec.json.decode(b)["rpts"]]
    assert len(reports) == 300 == sim.stats()["generated"]
    now_utc8 = datetime.now(UTC).replace(tzinfo=None) + timedelta(hours=8)
    rtime = datetime.fromisoformat(reports[-1]["rtime"])
    assert abs(now_utc8 - rtime) < timedelta(seconds=15)


def test_rate_from_first_poll_starts_the_load_at_the_first_get_rpt(
    simulator: Callable[..., Simulator],
) -> None:
    sim = simulator("--token", "t", "--rate", "1000", "--rate-from-first-poll")
    time.sleep(1.0)  # 1,000 reports, had the clock started with the process
    assert sim.stats()["generated"] == 0
    with httpx.Client(base_url=sim.base_url) as http:
        assert reports_of(get_rpt(http, "t")) == []  # this call starts the clock
        time.sleep(0.1)
        handed = len(reports_of(get_rpt(http, "t")))
    assert 95 <= handed < 400  # ~100 due 0.1 s after the first call, none from before it


@pytest.mark.parametrize(
    ("retsize", "count"), [(3, 3), ("7", 7), ("0", 500), (-1, 500), ("9999", 500), (None, 500)]
)
def test_retsize_follows_the_spec(
    simulator: Callable[..., Simulator], retsize: object, count: int
) -> None:
    sim = simulator("--token", "t", "--reports", "2000")
    with httpx.Client(base_url=sim.base_url) as http:
        assert len(reports_of(get_rpt(http, "t", retsize))) == count
        response = http.get(
            GET_RPT_PATH, params={"retsize": 2}, headers={"Finovy-Access-Token": "t"}
        )
        assert len(reports_of(response)) == 2


def test_login_tokens_work_then_expire(simulator: Callable[..., Simulator]) -> None:
    sim = simulator("--account", "u1:s1", "--reports", "5", "--token-ttl", "0.3")
    with httpx.Client(base_url=sim.base_url) as http:
        refused = http.post(LOGIN_PATH, json={"uuid": "u1", "secret": "nope"}).json()
        assert refused["code"] != 0 and refused["success"] is False
        answer = http.post(LOGIN_PATH, json={"uuid": "u1", "secret": "s1"}).json()
        assert (answer["code"], answer["msg"], answer["success"]) == (0, "success", True)
        assert len(reports_of(get_rpt(http, answer["data"], 2))) == 2
        time.sleep(0.35)
        expired = get_rpt(http, answer["data"])
    assert expired.status_code == 200
    assert expired.json() == {"result": 401, "desc": quote("身份认证失败"), "rpts": []}
    assert sim.stats()["faults"]["auth_failures"] == 1


def test_faults_apply_to_get_rpt_only(simulator: Callable[..., Simulator]) -> None:
    sim = simulator("--token", "t", "--reports", "5", "--error-rate", "1", "--latency", "0.05")
    with httpx.Client(base_url=sim.base_url) as http:
        assert http.post(GET_RPT_PATH, headers={"Finovy-Access-Token": "t"}).status_code in (
            500,
            503,
        )
        started = time.monotonic()
        assert http.get("/stats").status_code == 200
        assert http.post("/control/resume").status_code == 200
        assert time.monotonic() - started < 0.05
        assert http.get("/nowhere").status_code == 404
        assert http.post("/control/pause?seconds=soon").status_code == 400
    assert sim.stats()["faults"]["errors"] == 1


def test_the_command_prints_its_address_first_and_stops_on_sigterm(tmp_path: Path) -> None:
    record = tmp_path / "rec.jsonl"
    process, base_url = start_simulator("--token", "t", "--reports", "3", "--record", str(record))
    try:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", base_url)
        with httpx.Client(base_url=base_url) as http:
            assert len(reports_of(get_rpt(http, "t"))) == 3
    finally:
        assert stop_simulator(process) == 0
    assert len(record.read_bytes().splitlines()) == 3


def test_the_command_refuses_to_start_without_an_account() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "connector", "simulate", "--reports", "3"],
        cwd=REPO, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--token or --account" in result.stderr
