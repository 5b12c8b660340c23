"""The fetcher's step in isolation: ownership and room before every destructive call, and the
hand-off of a body the spool cannot take."""

from __future__ import annotations

import json
import os
import random
import threading
import time

from connector.codec import native
from connector.errors import SpoolWriteError
from connector.fetcher import PAUSED_RECHECK, Fetcher, Handoff, Unspooled
from connector.observe.observer import PauseReason
from connector.retry import Backoff
from connector.spool.spool import Spool
from tests.fakes import RecordingObserver, ScriptedPlatform, report
from tests.unit.pipeline_kit import schedule


class RoomlessSpool:
    def __init__(self, reason: PauseReason | None) -> None:
        self.reason = reason
        self.appended: list[bytes] = []

    def room(self, needed: int) -> PauseReason | None:
        assert needed == 2**20
        return self.reason

    def memo_room(self) -> int:
        return 0


def fetcher(platform, spool, owns=lambda: True):
    observer = RecordingObserver()
    return observer, Fetcher(
        client=platform, spool=spool, schedule=schedule(), observer=observer, owns=owns,
        stop=threading.Event(), wake=threading.Event(), handoff=Handoff(),
        max_response_bytes=2**20, on_failure=lambda _r: None,
        retry_backoff=lambda: Backoff(0.001, 0.002, rng=random.Random(1)),
    )  # fmt: skip


def test_no_get_rpt_without_ownership() -> None:
    platform = ScriptedPlatform([[report(1)]])
    observer, f = fetcher(platform, RoomlessSpool(None), owns=lambda: False)
    f.step()
    f.step()
    assert platform.calls == 0
    assert [str(a[0]) for a, _ in observer.named("fetch_paused")] == ["not_owned"]


def test_no_get_rpt_without_room_on_the_disk() -> None:
    platform = ScriptedPlatform([[report(1)]])
    observer, f = fetcher(platform, RoomlessSpool(PauseReason.DISK_FULL))
    f.step()
    assert platform.calls == 0
    assert [str(a[0]) for a, _ in observer.named("fetch_paused")] == ["disk_full"]
    assert observer.states() == ["spool_full"]


def test_handoff_is_never_owned_by_both_sides() -> None:
    handoff = Handoff()
    item = Unspooled(b"{}", 0.0, 1, None, None)
    handoff.offer(item)
    assert handoff.pending
    assert handoff.take() is item
    assert not handoff.withdraw()  # the publish loop has it: the fetcher must not re-append
    handoff.finish(sent=False)  # the commit failed: back to the fetcher's side
    assert handoff.withdraw()
    assert handoff.take() is None
    handoff.offer(item)
    handoff.take()
    handoff.finish(sent=True)
    assert handoff.settled(0.0)


def test_an_unsent_offer_is_waited_for_before_the_disk_is_tried_again() -> None:
    handoff = Handoff()
    handoff.offer(Unspooled(b"{}", 0.0, 1, None, None))
    started = threading.Event()
    result: list[bool] = []

    def fetcher_side() -> None:
        started.set()
        result.append(handoff.settled(30.0))  # must wait, not return at once

    waiter = threading.Thread(target=fetcher_side)
    waiter.start()
    started.wait()
    assert handoff.take() is not None
    handoff.finish(sent=True)
    waiter.join(30)
    assert result == [True]


class BrokenSpool(RoomlessSpool):
    """Room is reported (statvfs looks fine) but every append fails, like a read-only volume."""

    def __init__(self) -> None:
        super().__init__(None)

    def append(self, body: bytes, **_meta: object) -> object:
        raise SpoolWriteError("cannot create a segment: [Errno 30] Read-only file system")


def test_after_a_body_bypassed_the_spool_the_fetcher_waits_before_the_next_call() -> None:
    platform = ScriptedPlatform([[report(1)], [report(2)]])
    observer, f = fetcher(platform, BrokenSpool())
    handoff = f._handoff

    def publish_side() -> None:  # takes the offered body and commits it, as the pipeline does
        while (item := handoff.take()) is None:
            time.sleep(0.001)
        assert item.body and item.reports == 1
        handoff.finish(sent=True)

    publisher = threading.Thread(target=publish_side)
    publisher.start()
    delay = f.step()
    publisher.join(10)
    assert platform.calls == 1
    assert delay >= PAUSED_RECHECK  # not "again at once", although the batch was a full one
    assert "spool_error" in observer.states()
    assert [str(a[0]) for a, _ in observer.named("fetch_paused")] == ["spool_error"]


class RecordingSpool(RoomlessSpool):
    """Room always; keeps what each append was given."""

    def __init__(self) -> None:
        super().__init__(None)
        self.kept: list[dict] = []

    def append(self, body: bytes, **meta: object) -> object:
        self.kept.append({"body": body, **meta})
        return Unspooled(body, 0.0, 0, None, None)

    def level(self) -> object:
        return None


def test_the_fetcher_spools_the_count_and_builds_no_report_objects() -> None:
    platform = ScriptedPlatform([[report(1), report(2), report(3)]])
    spool = RecordingSpool()
    observer, f = fetcher(platform, spool)
    f.step()
    (kept,) = spool.kept
    assert kept["reports"] == 3
    assert [kw["reports"] for _, kw in observer.named("polled")] == [3]
    memo = kept["memo"]
    if native.rpt_native is not None and os.environ.get("RPT_NATIVE", "1") != "0":
        assert not memo.decoded  # counted natively: the publisher decodes only if it must
    assert [r["msgid"] for r in memo.reports] == [1, 2, 3]


def test_records_are_read_ahead_only_while_the_spool_keeps_them_in_memory(tmp_path) -> None:
    """A body's records read ahead on the fetch thread are wasted if its spool entry keeps no
    memo: the fetcher asks for them only while the memo budget has room for the last body."""
    body = len(json.dumps({"result": 0, "desc": "ok", "rpts": [report(0)]}))
    spool = Spool.open(tmp_path / "spool", max_bytes=2**30, memo_bytes=body * 5 // 2)
    platform = ScriptedPlatform([[report(i)] for i in range(4)])
    _, f = fetcher(platform, spool)
    for _ in range(4):
        f.step()
    assert [len(e.body) for e in spool.entries_after(0, 2**20)] == [body] * 4
    assert platform.read_aheads == [True, True, False, False]  # 2 memos kept: room for 0.5
    spool.close()
