"""A few threads for all accounts' turns: no account's slow turn holds up another's.

The process has two of these pools: one takes every account's fetch steps
(`platform.fetch_threads`, role "fetch"), and with `kafka.shared_producer` one takes every
account's publish rounds (`kafka.publish_threads`, role "publish").

A task is one account's work cut into turns: `turn()` runs one step and returns the pause
before the next turn, or None once the account is done. The pool keeps the waiting tasks in a
heap by due time; a free worker takes the earliest due one, runs its turn under the thread name
`<role>-<account>` (the logs take the account from it), and puts it back due after the pause it
returned. While one account's get-rpt call drips for its whole `request_timeout`, the other
workers go on with the other accounts; only K turns at a time can be in progress.

    submit ──► heap (due, n, task) ──► worker: turn() ──► delay ──► heap at now + delay
                                                    └──► None, stopped, closed ──► retire: done()

`wake(task)` brings a waiting task's next turn forward to now (a turn in progress is followed
by another at once): what gives an account work (an append, a commit's outcome) need not wait
for the pause its last turn asked for. A task retires exactly once, and `done` is called then.
`stop(task)` retires a waiting task at once, whatever its pause; a turn in progress is never
interrupted, the task retires when it returns. The pool knows nothing of what a turn does:
what a failing step means is the turn's business (`Fetcher.turn`, `AccountPipeline.turn`).

Workers start lazily, one per task submitted, up to `threads`; idle they are `<role>pool-<n>`
(not an account's name: see `observe.logs`). Of the idle workers one (the timer) sleeps until
the earliest task is due; the others sleep untimed until a push, the timer's leaving or a
backlog of due tasks wakes one: a due task costs a wake-up or two, not one per idle worker.
A woken or stopped task leaves its old heap entry behind, skipped when it comes up.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from enum import Enum

log = logging.getLogger("connector.turn_pool")

Turn = Callable[[], float | None]


class _State(Enum):
    WAITING = "waiting"  # in the heap
    RUNNING = "running"  # a worker is in its turn
    RETIRED = "retired"  # done was called (or is being called): never again


class Task:
    """One account's work in a pool; `finished` is set once it has retired."""

    def __init__(self, pool: Runner, name: str, turn: Turn, done: Callable[[], None]) -> None:
        self.name, self.turn, self.done = name, turn, done
        self.finished = threading.Event()
        self._pool = pool
        self._state = _State.WAITING
        self._stopping = False
        self._woken = False  # woken during its turn: the next one follows at once
        self._entry: tuple[float, int, Task] | None = None
        self._signal = threading.Event()  # OwnThread: its wake-up

    def wake(self) -> None:
        """Its next turn now (see `TurnPool.wake`)."""
        self._pool.wake(self)


class Wakeup:
    """An account's "there is work" for its task: `set()` before the task exists is kept, and
    brings its first turn forward once `bind` hands the task in."""

    def __init__(self) -> None:
        self._task: Task | None = None
        self._early = False

    def bind(self, task: Task) -> None:
        self._task = task
        if self._early:
            task.wake()

    def set(self) -> None:
        # Said before the task is looked at: a bind() in between sees it (set() and bind() may
        # run on different threads, and either order must wake the task once it exists).
        self._early = True
        task = self._task
        if task is not None:
            task.wake()


class OwnThread:
    """Every task on a thread of its own, named `<role>-<account>`, sleeping the pause its turn
    returned unless woken: the `TurnPool` contract for turns that block (an account's own
    producer commits on its own thread, and its librdkafka threads are its own anyway)."""

    def __init__(self, role: str = "publish") -> None:
        self.role = role

    def submit(self, name: str, turn: Turn, done: Callable[[], None], delay: float = 0.0) -> Task:
        task = Task(self, name, turn, done)
        thread = threading.Thread(
            target=self._run, args=(task, delay), name=f"{self.role}-{name}", daemon=True
        )
        thread.start()
        return task

    def wake(self, task: Task) -> None:
        task._signal.set()

    def _run(self, task: Task, pause: float | None) -> None:
        try:
            while pause is not None:
                self.sleep(task, pause)
                pause = _take_turn(task, self.role)
        finally:
            _retire(task)

    def sleep(self, task: Task, pause: float) -> None:
        """Until `pause` has passed or the task is woken (tests record the pauses here)."""
        task._signal.wait(pause)
        task._signal.clear()


class TurnPool:
    """K worker threads taking turns of every task submitted, earliest due first."""

    def __init__(
        self,
        threads: int,
        *,
        role: str = "fetch",
        clock: Callable[[], float] = time.monotonic,
        thread_factory: Callable[..., threading.Thread] = threading.Thread,
    ) -> None:
        if threads < 1:
            raise ValueError(f"a {role} pool needs at least one thread")
        self.size, self.role = threads, role
        self._clock, self._new_thread = clock, thread_factory
        lock = threading.Lock()
        self._cond = threading.Condition(lock)  # idle workers but the timer wait here, untimed
        # The one idle worker that sleeps until the earliest task is due (None: none does).
        # One timed sleeper instead of every idle worker timing the same head: a due task
        # wakes one thread, not all of them (at 1,000 idle accounts, 200 polls/s, that was
        # 16 wake-ups each).
        self._timer: threading.Thread | None = None
        self._timer_cond = threading.Condition(lock)
        self._heap: list[tuple[float, int, Task]] = []
        self._tiebreak = itertools.count()
        self._workers: list[threading.Thread] = []
        self._submitted = 0
        self._closed = False

    @property
    def threads(self) -> int:
        """Workers started so far (never more than `size`, nor than tasks submitted)."""
        with self._cond:
            return len(self._workers)

    def submit(self, name: str, turn: Turn, done: Callable[[], None], delay: float = 0.0) -> Task:
        """Schedule `turn` for the account `name`, first after `delay` seconds."""
        task = Task(self, name, turn, done)
        with self._cond:
            if self._closed:
                raise RuntimeError(f"the {self.role} pool is closed")
            self._submitted += 1
            self._push(task, delay)
            if len(self._workers) < min(self.size, self._submitted):
                worker = self._new_thread(
                    target=self._work, name=f"{self.role}pool-{len(self._workers)}", daemon=True
                )
                self._workers.append(worker)
                worker.start()
        return task

    def stop(self, task: Task) -> None:
        """Retire `task`: now if it is waiting, after its turn if one is in progress."""
        with self._cond:
            task._stopping = True
            if task._state is not _State.WAITING:
                return
            task._entry, task._state = None, _State.RETIRED  # its heap entry is skipped
        _retire(task)

    def wake(self, task: Task) -> None:
        """Bring `task`'s next turn forward to now; during its turn, one more follows at once."""
        with self._cond:
            if task._state is _State.RUNNING:
                task._woken = True
            elif task._state is _State.WAITING and task._entry[0] > self._clock():
                self._push(task, 0.0)  # the old entry stays in the heap, skipped

    def retire(self, task: Task, timeout: float) -> bool:
        """Stop `task` and wait up to `timeout` for a turn in progress; True once retired."""
        self.stop(task)
        return task.finished.wait(timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Retire every waiting task, let turns in progress finish, and join the workers
        (within `timeout` in all); True when every worker has ended."""
        with self._cond:
            self._closed = True
            waiting = [task for entry in self._heap if (task := entry[2])._entry is entry]
            self._heap.clear()
            for task in waiting:
                task._state = _State.RETIRED
            self._cond.notify_all()
            self._timer_cond.notify_all()
            workers = list(self._workers)
        for task in waiting:
            _retire(task)
        until = None if timeout is None else time.monotonic() + timeout
        for worker in workers:
            if worker is not threading.current_thread():
                worker.join(None if until is None else max(0.0, until - time.monotonic()))
        return not any(w.is_alive() for w in workers if w is not threading.current_thread())

    # --- the workers ------------------------------------------------------------------------
    def _push(self, task: Task, delay: float) -> None:
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
            me.name = f"{self.role}-{task.name}"  # the account of every log line in this turn
            try:
                self._after(task, _take_turn(task, self.role))
            finally:
                me.name = idle

    def _next(self) -> Task | None:
        """The earliest due task, once it is due; None when the pool closes. Any idle worker
        takes a due task; one of them (the timer) sleeps until the head is due, the others
        wait untimed to be woken: by a push, by the timer leaving its role, or because more
        tasks are due than workers awake."""
        me = threading.current_thread()
        with self._cond:
            try:
                while not self._closed:
                    self._drop_stale()
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

    def _drop_stale(self) -> None:
        """Pop heap entries a wake-up or a stop left behind (no longer their task's entry)."""
        while self._heap and self._heap[0][2]._entry is not self._heap[0]:
            heapq.heappop(self._heap)

    def _take_head(self) -> Task:
        task = heapq.heappop(self._heap)[2]
        task._entry, task._state, task._woken = None, _State.RUNNING, False
        self._drop_stale()
        if self._heap and self._heap[0][0] <= self._clock():
            self._cond.notify()  # more are due: another idle worker takes the next one
        return task

    def _after(self, task: Task, delay: float | None) -> None:
        """Back into the heap after `delay` (at once if woken meanwhile), or retire (done,
        stopped, pool closed)."""
        with self._cond:
            if delay is not None and not task._stopping and not self._closed:
                self._push(task, 0.0 if task._woken else delay)
                return
            task._state = _State.RETIRED
        _retire(task)


Runner = TurnPool | OwnThread


def _take_turn(task: Task, role: str) -> float | None:
    try:
        return task.turn()
    except Exception:  # the turn handles its own failures; this only keeps the worker alive
        log.exception("%s turn of %s raised; the account's task ends", role, task.name)
        return None


def _retire(task: Task) -> None:
    try:
        task.done()
    finally:
        task.finished.set()
