"""The turn pools: K threads take the turns of every account, earliest due first; a turn that
hangs holds one thread, never the other accounts (unless K = 1); a wake-up brings a task's
next turn forward; a stop retires a waiting task at once; every retirement calls `done`
exactly once. And `OwnThread`, the same contract with a thread per task.

No sleep decides an outcome here: a test waits on events with generous timeouts, and the only
short waits are for something that must *not* happen (they can pass wrongly, never fail)."""

from __future__ import annotations

import logging
import random
import threading
import time

from connector.fetcher import Fetcher, Handoff
from connector.observe.logs import _AccountFilter
from connector.retry import Backoff, Deadline
from connector.turn_pool import OwnThread, TurnPool, Wakeup
from tests.fakes import FakeClock, RecordingObserver, ScriptedPlatform, report
from tests.unit.pipeline_kit import make_rig, schedule

WAIT = 30.0  # for something that must happen (a noisy CI box may be slow)
NOT_HAPPENING = 0.3  # for something that must not


class Threads:
    """A thread factory that keeps what it made."""

    def __init__(self) -> None:
        self.made: list[threading.Thread] = []

    def __call__(self, **kwargs: object) -> threading.Thread:
        self.made.append(threading.Thread(**kwargs))
        return self.made[-1]


class Done:
    """A `done` callback that counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1


def once(log: list[str], name: str):
    def turn() -> None:
        log.append(name)

    return turn


def blocking(entered: threading.Event, release: threading.Event):
    def turn() -> None:
        entered.set()
        assert release.wait(WAIT)

    return turn


def counting(turns: list[int], enough: threading.Event, n: int):
    """Turns again at once (delay 0) until it has had `n` turns."""

    def turn() -> float | None:
        turns.append(1)
        if len(turns) < n:
            return 0.0
        enough.set()
        return None

    return turn


def test_turns_go_earliest_due_first_and_come_back_after_the_delay_they_return() -> None:
    clock = FakeClock(0.0, frozen=True)
    pool = TurnPool(1, clock=clock)
    order: list[str] = []
    first_turn = threading.Event()

    def t_turn() -> float | None:
        order.append("T")
        first_turn.set()
        return 5.0 if len(order) == 1 else None  # due again at 5

    t = pool.submit("t", t_turn, Done())
    assert first_turn.wait(WAIT)
    u = pool.submit("u", once(order, "U"), Done(), delay=3.0)  # due at 3
    clock.advance(10.0)
    z = pool.submit("z", once(order, "Z"), Done())  # due at 10
    for task in (t, u, z):
        assert task.finished.wait(WAIT)
    assert order == ["T", "U", "T", "Z"]
    assert pool.close(WAIT)


def test_a_turn_that_hangs_does_not_hold_up_another_account() -> None:
    pool = TurnPool(2)
    entered, release = threading.Event(), threading.Event()
    turns, enough = [], threading.Event()
    hanging = pool.submit("slow", blocking(entered, release), Done())
    assert entered.wait(WAIT)
    steady = pool.submit("steady", counting(turns, enough, 50), Done())
    assert enough.wait(WAIT), f"only {len(turns)} turns while another account's call hung"
    assert steady.finished.wait(WAIT)
    assert not hanging.finished.is_set()  # still in its call the whole time
    release.set()
    assert hanging.finished.wait(WAIT)
    assert pool.close(WAIT)


def test_with_one_thread_a_turn_that_hangs_holds_up_the_rest() -> None:
    """The bound is real: K = 1 means one call at a time, like one thread per process."""
    threads = Threads()
    pool = TurnPool(1, thread_factory=threads)
    entered, release = threading.Event(), threading.Event()
    turns, enough = [], threading.Event()
    pool.submit("slow", blocking(entered, release), Done())
    assert entered.wait(WAIT)
    steady = pool.submit("steady", counting(turns, enough, 3), Done())
    assert not enough.wait(NOT_HAPPENING)
    assert turns == [] and len(threads.made) == 1
    release.set()
    assert steady.finished.wait(WAIT) and len(turns) == 3
    assert pool.close(WAIT)


def test_threads_start_lazily_never_more_than_k_nor_than_the_tasks() -> None:
    threads = Threads()
    pool = TurnPool(3, thread_factory=threads)
    assert threads.made == []  # none before the first task
    started = []
    for n in range(1, 6):
        pool.submit(f"a{n}", once([], f"a{n}"), Done(), delay=60.0)
        started.append(len(threads.made))
    assert started == [1, 2, 3, 3, 3]
    assert [t.name for t in threads.made] == ["fetchpool-0", "fetchpool-1", "fetchpool-2"]
    assert all(t.daemon for t in threads.made)
    assert pool.close(WAIT)


def test_never_more_than_k_turns_at_once() -> None:
    pool = TurnPool(2)
    cond = threading.Condition()
    running, most = [0], [0]
    release = threading.Event()

    def turn() -> None:
        with cond:
            running[0] += 1
            most[0] = max(most[0], running[0])
            cond.notify_all()
        assert release.wait(WAIT)
        with cond:
            running[0] -= 1

    tasks = [pool.submit(f"a{n}", turn, Done()) for n in range(5)]
    with cond:
        assert cond.wait_for(lambda: running[0] == 2, WAIT)
        assert not cond.wait_for(lambda: running[0] > 2, NOT_HAPPENING)
    release.set()
    assert all(task.finished.wait(WAIT) for task in tasks)
    assert most[0] == 2
    assert pool.close(WAIT)


def test_a_stop_retires_a_waiting_task_at_once_and_done_is_called_once() -> None:
    clock = FakeClock(0.0, frozen=True)
    pool = TurnPool(1, clock=clock)
    turns: list[str] = []
    done = Done()
    task = pool.submit("paused", once(turns, "x"), done, delay=600.0)  # e.g. auth_failure_pause
    pool.stop(task)
    assert task.finished.is_set() and done.calls == 1  # no wait for the pause to pass
    pool.stop(task)
    assert pool.close(WAIT)
    assert done.calls == 1 and turns == []


def test_a_stop_during_a_turn_lets_it_finish_then_retires_the_task() -> None:
    pool = TurnPool(1)
    entered, release = threading.Event(), threading.Event()
    turns, done = [], Done()

    def turn() -> float:
        turns.append(1)
        entered.set()
        assert release.wait(WAIT)
        return 0.0  # would come again at once

    task = pool.submit("busy", turn, done)
    assert entered.wait(WAIT)
    pool.stop(task)
    assert not task.finished.is_set() and done.calls == 0  # the call in flight is not cut
    release.set()
    assert task.finished.wait(WAIT)
    assert pool.close(WAIT)
    assert done.calls == 1 and turns == [1]


def test_retire_waits_for_the_turn_in_flight_only_as_long_as_it_is_told() -> None:
    pool = TurnPool(1)
    entered, release = threading.Event(), threading.Event()
    done = Done()
    task = pool.submit("busy", blocking(entered, release), done)
    assert entered.wait(WAIT)
    assert pool.retire(task, NOT_HAPPENING) is False  # still in its call: not cut
    assert done.calls == 0
    release.set()
    assert pool.retire(task, WAIT) is True
    assert done.calls == 1
    assert pool.close(WAIT)


class RaisingClient:
    def __init__(self) -> None:
        self.calls = 0

    def fetch(self, read_ahead: bool = True) -> None:
        self.calls += 1
        raise RuntimeError("a bug in the client")


class RoomySpool:
    def room(self, needed: int) -> None:
        return None

    def memo_room(self) -> int:
        return 0


def fetcher(client: object, failures: list[str], wake: threading.Event) -> Fetcher:
    return Fetcher(
        client=client, spool=RoomySpool(), schedule=schedule(), observer=RecordingObserver(),
        owns=lambda: True, stop=threading.Event(), wake=wake, handoff=Handoff(),
        max_response_bytes=2**20, on_failure=failures.append,
        retry_backoff=lambda: Backoff(0.001, 0.002, rng=random.Random(1)),
    )  # fmt: skip


def test_a_step_that_raises_fails_the_account_and_retires_it(caplog) -> None:
    threads = Threads()
    pool = TurnPool(1, thread_factory=threads)
    client, failures, wake = RaisingClient(), [], threading.Event()
    f = fetcher(client, failures, wake)
    with caplog.at_level(logging.ERROR, logger="connector.fetcher"):
        task = pool.submit("broken", f.turn, f.finish)
        assert task.finished.wait(WAIT)
    assert failures == ["fetch failed unexpectedly: RuntimeError: a bug in the client"]
    assert client.calls == 1  # not stepped again
    assert wake.is_set()  # finish(): the publish loop drains and ends
    (record,) = [r for r in caplog.records if r.getMessage() == "fetch failed unexpectedly"]
    assert record.exc_info is not None and record.threadName == "fetch-broken"
    again = pool.submit("next", once([], "next"), Done())  # the worker lives on
    assert again.finished.wait(WAIT) and len(threads.made) == 1
    assert pool.close(WAIT)


def test_a_turn_that_raises_itself_is_retired_and_the_worker_lives_on(caplog) -> None:
    pool = TurnPool(1)
    done = Done()

    def turn() -> float:
        raise ValueError("not a fetcher's turn")

    with caplog.at_level(logging.ERROR, logger="connector.fetch_pool"):
        task = pool.submit("odd", turn, done)
        assert task.finished.wait(WAIT)
    assert done.calls == 1
    assert any(r.exc_info and "odd" in r.getMessage() for r in caplog.records)
    assert pool.submit("next", once([], "next"), Done()).finished.wait(WAIT)
    assert pool.close(WAIT)


def test_close_retires_waiting_tasks_and_joins_the_workers() -> None:
    threads = Threads()
    pool = TurnPool(2, thread_factory=threads)
    done = [Done(), Done()]
    tasks = [pool.submit(f"a{n}", lambda: 0.5, done[n]) for n in range(2)]
    assert pool.close(WAIT)
    assert all(task.finished.is_set() for task in tasks)
    assert [d.calls for d in done] == [1, 1]
    assert len(threads.made) == 2 and not any(t.is_alive() for t in threads.made)
    try:
        pool.submit("late", lambda: None, Done())
    except RuntimeError as exc:
        assert "closed" in str(exc)
    else:
        raise AssertionError("a closed pool took a task")


def test_close_lets_a_turn_in_flight_finish() -> None:
    pool = TurnPool(1)
    entered, release = threading.Event(), threading.Event()
    done = Done()
    task = pool.submit("busy", blocking(entered, release), done)
    assert entered.wait(WAIT)
    assert not pool.close(0.0)  # bounded: returns while the call is in flight
    release.set()
    assert task.finished.wait(WAIT) and done.calls == 1
    assert pool.close(WAIT)


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.addFilter(_AccountFilter())  # what setup_logging puts on its handler
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_turn_runs_under_its_accounts_thread_name_and_its_log_lines_name_the_account() -> None:
    threads = Threads()
    pool = TurnPool(1, thread_factory=threads)
    logger = logging.getLogger("connector.fetcher")
    capture = Capture()
    logger.addHandler(capture)
    seen: list[str] = []

    def turn() -> None:
        seen.append(threading.current_thread().name)
        logger.warning("inside a turn")

    try:
        assert pool.submit("acme-eu.1", turn, Done()).finished.wait(WAIT)
        assert pool.close(WAIT)
    finally:
        logger.removeHandler(capture)
    assert seen == ["fetch-acme-eu.1"]
    (record,) = capture.records
    assert record.account == "acme-eu.1"
    (worker,) = threads.made
    assert worker.name == "fetchpool-0"  # idle again after the turn
    idle = logging.LogRecord("x", logging.INFO, __file__, 1, "idle", None, None)
    idle.threadName = worker.name
    _AccountFilter().filter(idle)
    assert idle.account == "-"  # an idle worker's name is no account's


class HangingPlatform(ScriptedPlatform):
    """The first get-rpt call hangs until released, then hands out report 100."""

    def __init__(self, release: threading.Event) -> None:
        super().__init__([[report(100)]])
        self.release, self.returned = release, threading.Event()

    def fetch(self, read_ahead: bool = True):
        if self.calls == 0:
            self.in_flight.set()
            assert self.release.wait(2 * WAIT)
            self.returned.set()
        return super().fetch(read_ahead)


def test_two_pipelines_share_a_pool_and_a_hanging_call_holds_up_only_its_own(tmp_path) -> None:
    """In-process, over the Kafka model: one account's get-rpt hangs, the other's reports all
    reach Kafka exactly once meanwhile; then both stop, the hung one keeping what it brought."""
    pool = TurnPool(2)
    release = threading.Event()
    hung = HangingPlatform(release)
    steady = ScriptedPlatform([[report(n) for n in range(k, k + 5)] for k in range(0, 20, 5)])
    slow_rig = make_rig(tmp_path / "slow", hung, fetch_pool=pool)
    rig = make_rig(tmp_path / "steady", steady, fetch_pool=pool)
    slow_rig.pipeline.start()
    slow_rig.wait_for(hung.in_flight.is_set, WAIT)
    rig.pipeline.start()
    rig.wait_for(lambda: len(rig.msgids()) == 20, WAIT)
    assert not hung.returned.is_set()  # still in its first call
    rig.stop()
    assert sorted(rig.msgids()) == list(range(20))
    deadline = Deadline.after(WAIT)
    slow_rig.pipeline.stop(deadline)  # mid-call: the call finishes and keeps what it brought
    release.set()
    assert slow_rig.pipeline.join(deadline)
    assert slow_rig.msgids() == [100] and hung.calls == 1  # no call after the stop
    assert pool.threads == 2
    assert pool.close(WAIT)


def test_a_due_task_wakes_one_idle_worker_not_all_of_them() -> None:
    """Idle accounts polling through the pool: each due task used to wake every idle worker
    (they all slept until the same head). One worker times the head; the rest wait untimed."""
    pool = TurnPool(8)
    wakeups, turns = [0], [0]
    for cond in (pool._cond, pool._timer_cond):
        wait = cond.wait

        def counted(timeout=None, _wait=wait):
            wakeups[0] += 1
            return _wait(timeout)

        cond.wait = counted

    def turn() -> float:
        turns[0] += 1
        return 0.02

    for n in range(40):
        pool.submit(f"a{n}", turn, lambda: None, delay=n * 0.0005)
    time.sleep(1.0)
    pool.close(timeout=5)
    assert turns[0] > 200
    assert wakeups[0] < 4 * turns[0], (wakeups[0], turns[0])


def test_a_wake_up_brings_a_waiting_tasks_next_turn_forward_to_now() -> None:
    clock = FakeClock(0.0, frozen=True)
    pool = TurnPool(1, clock=clock)
    turns: list[float] = []
    second = threading.Event()

    def turn() -> float:
        turns.append(clock())
        if len(turns) == 2:
            second.set()
        return 3600.0  # an hour, on a clock that never moves: only a wake-up brings it back

    task = pool.submit("a", turn, Done())
    deadline = time.monotonic() + WAIT
    while not turns:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert not second.wait(NOT_HAPPENING)
    task.wake()
    assert second.wait(WAIT)
    assert len(pool._heap) >= 1  # the hour-long entry is left behind, skipped when it comes up
    assert pool.close(timeout=WAIT)


def test_a_wake_up_during_a_turn_is_followed_by_another_turn_at_once() -> None:
    clock = FakeClock(0.0, frozen=True)
    pool = TurnPool(1, clock=clock)
    entered, release, again = threading.Event(), threading.Event(), threading.Event()
    turns: list[int] = []

    def turn() -> float:
        turns.append(1)
        if len(turns) == 1:
            entered.set()
            assert release.wait(WAIT)
        else:
            again.set()
        return 3600.0

    task = pool.submit("a", turn, Done())
    assert entered.wait(WAIT)
    task.wake()  # while its turn runs: what it sees now may be after it looked
    release.set()
    assert again.wait(WAIT)
    assert pool.close(timeout=WAIT)


def test_a_stale_heap_entry_neither_runs_a_turn_nor_survives_close() -> None:
    clock = FakeClock(0.0, frozen=True)
    pool = TurnPool(1, clock=clock)
    done, turns = Done(), []
    task = pool.submit("a", lambda: turns.append(1) or 3600.0, done, delay=3600.0)
    task.wake()
    deadline = time.monotonic() + WAIT
    while not turns:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    clock.advance(3600.0)  # the stale entry is due now: it must not run a second turn
    assert not task.finished.wait(NOT_HAPPENING)
    assert turns == [1]
    assert pool.close(timeout=WAIT)
    assert done.calls == 1 and task.finished.is_set()


def test_a_wake_up_before_the_task_exists_is_kept_for_its_first_turn() -> None:
    wakeup, woken = Wakeup(), []

    class Fake:
        def wake(self) -> None:
            woken.append(1)

    wakeup.set()
    wakeup.bind(Fake())
    wakeup.set()
    assert woken == [1, 1]


def test_own_thread_sleeps_the_pause_unless_woken_and_retires_once() -> None:
    runner, turns, done = OwnThread("publish"), [], Done()
    second, names = threading.Event(), []

    def turn() -> float | None:
        names.append(threading.current_thread().name)
        turns.append(1)
        if len(turns) == 2:
            second.set()
            return None
        return 3600.0

    task = runner.submit("acme", turn, done)
    assert not second.wait(NOT_HAPPENING)
    task.wake()
    assert second.wait(WAIT) and task.finished.wait(WAIT)
    assert done.calls == 1 and names == ["publish-acme", "publish-acme"]


def test_own_thread_retires_a_task_whose_turn_raises(caplog) -> None:
    done = Done()

    def turn() -> None:
        raise RuntimeError("a bug")

    task = OwnThread("publish").submit("acme", turn, done)
    assert task.finished.wait(WAIT) and done.calls == 1
    assert "publish turn of acme raised" in caplog.text
