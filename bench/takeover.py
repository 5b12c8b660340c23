"""`make bench`'s cluster takeover (issue 27): N accounts on two instances, one killed.

    .venv/bin/python bench/takeover.py [--accounts 500] [--session-timeout 10] [--rate 500]
                                       [--cap 240]

One simulator serving N accounts (`--token aNNNN=TOKEN` each) and generating `--rate` reports/s
spread over them, so that transactions are open when the kill comes. Two `rpt-connector run`
processes with one configuration: cluster mode (`[cluster] group_id`, `session_timeout`), the
shared producer (`kafka.shared_producer`, so a transactional.id per instance and the group's
generation fence), poll_interval 1 s, the bench's production-like Kafka settings. Once each
instance owns N/2 accounts and every account is fetching (/status), the one that owns account
a0000 is killed (SIGKILL). The clock runs from the kill to:

* owned: the survivor's /status says it owns all N accounts;
* fetching: ... and none of them is starting or recovering (its spool opened, its progress
  read after the group offsets settled);
* committed: every account the dead instance had has committed since the kill (a
  read_committed consumer on the progress topic: a record whose `committed_at`, the
  connector's wall clock, is after the kill).

The target: "fetching" within `session_timeout` + 2 s. Then the survivor is stopped (SIGTERM)
and the data topic is read back: every msgid the simulator handed out (`--record`) must be
there once, but for the answers in flight to the dead instance's accounts as it died (a
destructive read in flight at SIGKILL is lost by definition; told apart by
`--record-responses`, 0.5 s either side of the kill). Writes
bench/results/takeover-<stamp>.json and takeover-latest.json; prints the figures and the
target line; asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(1, str(REPO / "bench"))
import accounts as acc  # noqa: E402  bench/accounts.py: names, progress tail, helpers
import run  # noqa: E402

import devharness as dh  # noqa: E402
from connector.codec.avro import decode_single_object  # noqa: E402
from connector.kafka.publisher import ensure_topics  # noqa: E402

RESULTS = REPO / "bench" / "results"
SLACK_S = 2.0  # the target: takeover within session_timeout + 2 s


def instance_status(endpoints: dh.Endpoints) -> dict[str, dict]:
    try:
        return httpx.get(f"{endpoints.base_url}/status", timeout=acc.HTTP_TIMEOUT).json()[
            "accounts"
        ]
    except (httpx.HTTPError, ValueError, KeyError):
        return {}


def owned(status: dict[str, dict]) -> set[str]:
    return {name for name, account in status.items() if account["owned"]}


def fetching(status: dict[str, dict]) -> set[str]:
    return {
        name for name, account in status.items()
        if account["owned"] and account["state"] not in acc.READY_STATES
    }  # fmt: skip


def in_flight(responses: Path, accounts: set[str], around: float) -> set[str]:
    """msgids of get-rpt answers to `accounts` within 0.5 s of `around` (wall clock)."""
    out: set[str] = set()
    for line in responses.read_text().splitlines():
        answer = json.loads(line)
        if answer["account"] in accounts and abs(answer["t"] - around) <= 0.5:
            out.update(answer["msgids"])
    return out


def measure(broker: dh.Broker, n: int, session_timeout: float, rate: int, cap: float) -> dict:
    names = acc.account_names(n)
    topics = dh.Topics.fresh("bench-takeover")
    ensure_topics(run.kafka_settings(broker.bootstrap, topics), topics.all())
    tail = acc.ProgressTail(broker.bootstrap, topics.progress)
    with tempfile.TemporaryDirectory(prefix="rpt-bench-takeover-") as tmp:
        work = Path(tmp)
        simulator = dh.SimulatorProcess([
            "--seed", "1", *dh.token_args(names), "--rate", str(rate),
            "--record", str(work / "handed-out.jsonl"),
            "--record-responses", str(work / "responses.jsonl"),
        ]).start()  # fmt: skip
        config = dh.write_config(
            work / "connector.toml", base_url=simulator.base_url, bootstrap=broker.bootstrap,
            topics=topics, spool=work / "spool", accounts=tuple(names),
            extra=dh.cluster_section(topics, session_timeout),
            overrides={
                "platform": {"read_timeout": "10s", "poll_interval": "1s"},
                "kafka": {"commit_interval": "200ms", "max_batch_records": run.BATCH,
                          "topic_partitions": run.PARTITIONS, "archive_topic": "",
                          "shared_producer": True},
            },
        )  # fmt: skip
        env = dh.connector_env(names) | {"RPT_METRICS__LISTEN": "127.0.0.1:0"}
        instances = [
            dh.ConnectorProcess(config, work / f"instance-{i}.log", env=env).start() for i in (1, 2)
        ]
        try:
            return _run(instances, simulator, tail, topics, broker, names, session_timeout, cap,
                        work)  # fmt: skip
        finally:
            for instance in instances:
                with contextlib.suppress(Exception):
                    instance.stop(60)
            simulator.stop(60)
            tail.close()
            dh.delete_topics(broker.bootstrap, topics.all())


def _run(instances, simulator, tail, topics, broker, names, session_timeout, cap, work) -> dict:
    n, budget = len(names), acc.Budget(cap)
    endpoints = [dh.Endpoints(i.metrics_base_url(max(budget.left(), 1.0))) for i in instances]
    balanced = budget.wait(
        lambda: all(len(fetching(instance_status(e))) == n // 2 for e in endpoints), 0.5
    )
    if not balanced:
        return {"note": f"the two instances did not settle at {n // 2} accounts each",
                "owned": [len(owned(instance_status(e))) for e in endpoints]}  # fmt: skip
    doomed = 0 if "a0000" in owned(instance_status(endpoints[0])) else 1
    survivor = endpoints[1 - doomed]
    theirs = owned(instance_status(endpoints[doomed]))
    time.sleep(2.0)  # transactions in flight
    killed = time.time()
    instances[doomed].kill()
    marks: dict[str, float | None] = {"owned_s": None, "fetching_s": None, "committed_s": None}
    while budget.left() > 0 and None in marks.values():
        status = instance_status(survivor)
        now = time.time() - killed
        if marks["owned_s"] is None and len(owned(status)) == n:
            marks["owned_s"] = now
        if marks["fetching_s"] is None and len(fetching(status)) == n:
            marks["fetching_s"] = now
        if marks["committed_s"] is None and theirs <= tail.committed_since(killed):
            marks["committed_s"] = now
        time.sleep(0.1)
    simulator.control("pause")
    stopped = instances[1 - doomed].stop(120)
    truth = acc.truth_msgids((work / "handed-out.jsonl").read_bytes().splitlines())
    delivered: Counter = Counter()
    for item in dh.consume_all(broker.bootstrap, topics.data, timeout=600):
        delivered[decode_single_object(item.value)["msgid"]] += 1
    excused = in_flight(work / "responses.jsonl", theirs, killed)
    lost = [m for m in truth if delivered[m] == 0 and m not in excused]
    return marks | {
        "accounts": n, "taken_over": len(theirs), "session_timeout_s": session_timeout,
        "target_s": session_timeout + SLACK_S, "survivor_exit": stopped,
        "fenced_writers": instances[1 - doomed].output().count("cluster: fencing "),
        "reports": sum(truth.values()), "lost": len(lost),
        "lost_in_flight": sum(1 for m in truth if delivered[m] == 0 and m in excused),
        "duplicated": sum(1 for m, k in delivered.items() if k > 1),
    }  # fmt: skip


def verdict(result: dict) -> str:
    fetching_s = result.get("fetching_s")
    if fetching_s is None:
        return f"takeover: did not finish ({result.get('note', 'cap reached')})"
    met = "met" if fetching_s <= result["target_s"] else "NOT MET"
    return (
        f"takeover of {result['taken_over']} accounts: all fetching {fetching_s:.1f} s after "
        f"the kill (target ≤ session_timeout + {SLACK_S:g} s = {result['target_s']:g} s: {met}); "
        f"owned {result['owned_s']:.1f} s, every one committed again "
        f"{_s(result['committed_s'])}; {result['reports']:,} reports, {result['lost']} lost, "
        f"{result['duplicated']} duplicated ({result['lost_in_flight']} in flight at the kill); "
        f"departed writers fenced: {result['fenced_writers']}"
    )


def _s(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f} s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=500)
    parser.add_argument("--session-timeout", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=500, help="reports/s over all accounts")
    parser.add_argument("--cap", type=float, default=240.0)
    args = parser.parse_args(argv)
    broker = dh.Broker("bench-takeover")
    broker.start()
    try:
        result = measure(broker, args.accounts, args.session_timeout, args.rate, args.cap)
    finally:
        broker.stop()
    command = " ".join(["bench/takeover.py", *(sys.argv[1:] if argv is None else argv)])
    result |= {"machine": run.machine(), "command": command, "label": acc.git_head()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for name in (f"takeover-{stamp}.json", "takeover-latest.json"):
        (RESULTS / name).write_text(json.dumps(result, indent=2) + "\n")
    print(verdict(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
