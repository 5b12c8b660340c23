"""A few fetch threads for all accounts: no account's slow call holds up another's turn.

A task is one account's fetching, cut into turns: `turn()` runs one step and returns the pause
before the next turn, or None once the account is done fetching. The pool keeps the waiting
tasks in a heap by due time; a free worker takes the earliest due one, runs its turn under the
thread name `fetch-<account>` (the logs take the account from it), and puts it back due after
the pause it returned. While one account's call drips for its whole `request_timeout`, the
other workers go on with the other accounts; only K calls at a time can be in flight.

    submit ──► heap (due, n, task) ──► worker: turn() ──► delay ──► heap at now + delay
                                                    └──► None, stopped, closed ──► retire: done()

A task retires exactly once, and `done` is called then (the pipeline's publish loop waits for
it). `stop(task)` retires a waiting task at once, whatever its pause; a turn in progress is
never interrupted, the task retires when it returns. The pool knows nothing of the fetcher:
what a failing step means is the turn's business (`Fetcher.turn`).

Workers start lazily, one per task submitted, up to `threads`; idle they are `fetchpool-<n>`
(not an account's name: see `observe.logs`). Of the idle workers one (the timer) sleeps until
the earliest task is due; the others sleep untimed until a push, the timer's leaving or a
backlog of due tasks wakes one: a due task costs a wake-up or two, not one per idle worker.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from enum import Enum

log = logging.getLogger("connector.fetch_pool")

Turn = Callable[[], float | None]


class _State(Enum):
    WAITING = "waiting"  # in the heap
    RUNNING = "running"  # a worker is in its turn
    RETIRED = "retired"  # done was called (or is being called): never again


class FetchTask:
    """One account's fetching in the pool; `finished` is set once it has retired."""

    def __init__(self, name: str, turn: Turn, done: Callable[[], None]) -> None:
        self.name, self.turn, self.done = name, turn, done
        self.finished = threading.Event()
        self._state = _State.WAITING
        self._stopping = False
        self._entry: tuple[float, int, FetchTask] | None = None


class FetchPool:
    """K worker threads taking turns of every task submitted, earliest due first."""

    def __init__(
        self,
        threads: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        thread_factory: Callable[..., threading.Thread] = threading.Thread,
    ) -> None:
        if threads < 1:
            raise ValueError("a fetch pool needs at least one thread")
        self.size = threads
        self._clock, self._new_thread = clock, thread_factory
        lock = threading.Lock()
        self._cond = threading.Condition(lock)  # idle workers but the timer wait here, untimed
        # The one idle worker that sleeps until the earliest task is due (None: none does).
        # One timed sleeper instead of every idle worker timing the same head: a due task
        # wakes one thread, not all of them (at 1,000 idle accounts, 200 polls/s, that was
        # 16 wake-ups each).
        self._timer: threading.Thread | None = None
        self._timer_cond = threading.Condition(lock)
        self._heap: list[tuple[float, int, FetchTask]] = []
        self._tiebreak = itertools.count()
        self._workers: list[threading.Thread] = []
        self._submitted = 0
        self._closed = False

    @property
    def threads(self) -> int:
        """Workers started so far (never more than `size`, nor than tasks submitted)."""
        with self._cond:
            return len(self._workers)

    def submit(
        self, name: str, turn: Turn, done: Callable[[], None], delay: float = 0.0
    ) -> FetchTask:
        """Schedule `turn` for the account `name`, first after `delay` seconds."""
        task = FetchTask(name, turn, done)
        with self._cond:
            if self._closed:
                raise RuntimeError("the fetch pool is closed")
            self._submitted += 1
            self._push(task, delay)
            if len(self._workers) < min(self.size, self._submitted):
                worker = self._new_thread(
                    target=self._work, name=f"fetchpool-{len(self._workers)}", daemon=True
                )
                self._workers.append(worker)
                worker.start()
        return task

    def stop(self, task: FetchTask) -> None:
        """Retire `task`: now if it is waiting, after its turn if one is in progress."""
        with self._cond:
            task._stopping = True
            if task._state is not _State.WAITING:
                return
            self._heap.remove(task._entry)
            heapq.heapify(self._heap)
            task._state = _State.RETIRED
        self._retire(task)

    def retire(self, task: FetchTask, timeout: float) -> bool:
        """Stop `task` and wait up to `timeout` for a turn in progress; True once retired."""
        self.stop(task)
        return task.finished.wait(timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Retire every waiting task, let turns in progress finish, and join the workers
        (within `timeout` in all); True when every worker has ended."""
        with self._cond:
            self._closed = True
            waiting = [task for _due, _n, task in self._heap]
            self._heap.clear()
            for task in waiting:
                task._state = _State.RETIRED
            self._cond.notify_all()
            self._timer_cond.notify_all()
            workers = list(self._workers)
        for task in waiting:
            self._retire(task)
        until = None if timeout is None else time.monotonic() + timeout
        for worker in workers:
            if worker is not threading.current_thread():
                worker.join(None if until is None else max(0.0, until - time.monotonic()))
        return not any(w.is_alive() for w in workers if w is not threading.current_thread())

    # --- the workers ------------------------------------------------------------------------
    def _push(self, task: FetchTask, delay: float) -> None:
        task._entry = (self._clock() + delay, next(self._tiebreak), task)
        task._state = _State.WAITING
        heapq.heappush(self._heap, task._entry)
        if self._timer is None:
            self._cond.notify()  # an idle worker becomes the timer
        elif self._heap[0] is task._entry:
            self._timer_cond.notify()  # due before what the timer sleeps until

    def _work(self) -> None:
        me = threading.current_thread()
        idle = me.name
        while (task := self._next()) is not None:
            me.name = f"fetch-{task.name}"  # the account of every log line in this turn
            try:
                self._after(task, self._turn(task))
            finally:
                me.name = idle

    def _next(self) -> FetchTask | None:
        """The earliest due task, once it is due; None when the pool closes. Any idle worker
        takes a due task; one of them (the timer) sleeps until the head is due, the others
        wait untimed to be woken: by a push, by the timer leaving its role, or because more
        tasks are due than workers awake."""
        me = threading.current_thread()
        with self._cond:
            try:
                while not self._closed:
                    wait = self._heap[0][0] - self._clock() if self._heap else None
                    if wait is not None and wait <= 0:
                        return self._take_head()
                    if self._timer not in (None, me):
                        self._cond.wait()
                        continue
                    self._timer = me
                    self._timer_cond.wait(wait)
                return None
            finally:
                if self._timer is me:
                    self._timer = None
                    self._cond.notify()  # the next idle worker takes over the timing

    def _take_head(self) -> FetchTask:
        task = heapq.heappop(self._heap)[2]
        task._state = _State.RUNNING
        if self._heap and self._heap[0][0] <= self._clock():
            self._cond.notify()  # more are due: another idle worker takes the next one
        return task

    @staticmethod
    def _turn(task: FetchTask) -> float | None:
        try:
            return task.turn()
        except Exception:  # the turn handles its own failures; this only keeps the worker alive
            log.exception("fetch turn of %s raised; the account fetches no more", task.name)
            return None

    def _after(self, task: FetchTask, delay: float | None) -> None:
        """Back into the heap after `delay`, or retire (done, stopped, pool closed)."""
        with self._cond:
            if delay is not None and not task._stopping and not self._closed:
                self._push(task, delay)
                return
            task._state = _State.RETIRED
        self._retire(task)

    @staticmethod
    def _retire(task: FetchTask) -> None:
        try:
            task.done()
        finally:
            task.finished.set()
