"""`rpt-connector run`: build every account's pipeline from the settings and run until a signal.

The main thread only supervises: it serves nothing itself, beats the health heartbeat, and on
SIGTERM/SIGINT asks every pipeline to stop (finish or abort the open transaction) within
`shutdown_timeout`. A second signal exits at once; the spool keeps everything not yet committed.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from collections.abc import Callable

from connector import __version__
from connector.assembly import Shared, build_pipeline
from connector.config.settings import Settings, load_settings
from connector.config.views import account_views
from connector.errors import ConfigError, ConnectorError, Disposition
from connector.fetcher import Hooks
from connector.kafka.membership import Membership
from connector.kafka.topics import ensure_topics
from connector.observe.account import make_observer
from connector.observe.logs import setup_logging
from connector.observe.metrics import Metrics
from connector.observe.observer import AccountState
from connector.observe.status import EndpointServer, StatusBoard
from connector.pipeline import AccountPipeline
from connector.retry import Backoff, Deadline
from connector.spool.spool import failpoints_from_env

log = logging.getLogger("connector.service")

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG, EXIT_FORCED = 0, 1, 2, 130
_HEARTBEAT = 1.0
# Fail point for the recovery tests: once this file exists, die like `kill -9` right after the
# next spool append, i.e. with reports durable in the spool but not yet committed to Kafka.
CRASH_AFTER_SPOOL_ENV = "RPT_FAILPOINT_CRASH_AFTER_SPOOL_IF"


def run_from_cli(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    setup_logging(args.log_level or settings.log.level, args.log_format or settings.log.format)
    return Service(settings).run()


def failpoint_hooks(environ: dict[str, str]) -> Hooks:
    """The fail points the environment asks for (read when the service starts)."""
    crash_when_exists = environ.get(CRASH_AFTER_SPOOL_ENV)
    if not crash_when_exists:
        return Hooks()

    def after_spool(_seq: int) -> None:
        if os.path.exists(crash_when_exists):
            os._exit(137)

    return Hooks(after_spool=after_spool)


class Service:
    def __init__(
        self,
        settings: Settings,
        environ: dict[str, str] | None = None,
        *,
        topics: Callable[..., None] = ensure_topics,  # creates missing topics; tests fake it
    ) -> None:
        self.settings = settings
        self.views = {view.name: view for view in account_views(settings)}
        self._ensure = topics
        names = [a.name for a in settings.accounts]
        stats_ms = float(settings.kafka.producer.get("statistics.interval.ms", 15_000))
        self.metrics = Metrics(
            accounts=names,
            batch_capacities={name: view.retsize for name, view in self.views.items()},
            stats_interval=stats_ms / 1000,  # librdkafka values older than 2 intervals are dropped
        )
        self.board = StatusBoard(names)
        # One observer per account: its metrics and /status move together (also not_owned).
        self.observers = {n: make_observer(self.metrics, self.board, n) for n in names}
        self.pipelines: dict[str, AccountPipeline] = {}
        self.failed: dict[str, str] = {}  # accounts that stopped with an error, and why
        environ = dict(os.environ if environ is None else environ)
        self._hooks = failpoint_hooks(environ)
        try:
            self._spool_hooks = failpoints_from_env(environ)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self._stopping = threading.Event()
        self._membership: Membership | None = None
        if settings.cluster.group_id is not None:
            self._membership = Membership(settings, self._own, self._release)
        self.shared = Shared.for_settings(settings, group=self._membership)
        self._server: EndpointServer | None = None

    def run(self) -> int:
        log.info(
            "rpt-connector %s starting: %d account(s), delivery %s",
            __version__,
            len(self.settings.accounts),
            self.settings.kafka.delivery,
        )
        self._install_signal_handlers()
        try:
            self._start()
        except ConnectorError as exc:
            stopped = self._stopping.is_set()
            log.log(logging.INFO if stopped else logging.ERROR, "cannot start: %s", exc)
            self._stop_server()
            self.shared.close(timeout=_HEARTBEAT)
            if stopped:
                return EXIT_OK  # a signal while waiting for Kafka: a clean stop
            return EXIT_CONFIG if exc.disposition == Disposition.STOP_PROCESS else EXIT_FAILURE
        while not self._stopping.is_set():
            self._supervise()
            if self._membership is None and self._nothing_runs():
                log.error("every account has stopped with an error; exiting")
                break
        return self._shutdown()

    def _nothing_runs(self) -> bool:
        return all(p.failed for p in self.pipelines.values())

    def _start(self) -> None:
        if self.settings.metrics.enabled:
            self._server = EndpointServer(self.settings.metrics.listen, self.metrics, self.board)
            host, port = self._server.start()
            log.info("metrics and health on http://%s:%d/metrics", host, port)
        self._ensure_topics()
        self.shared.start(self.settings, self._stopping)
        if self._membership is None:
            self._own([a.name for a in self.settings.accounts])
            return
        for account in self.settings.accounts:
            self.board.update(account.name, owned=False)
            self.observers[account.name].state(AccountState.NOT_OWNED)
        self._membership.start()

    def _ensure_topics(self) -> None:
        """Create missing topics, waiting for Kafka as long as it takes (or until a signal)."""
        backoff = Backoff(1.0, 30.0, stop=self._stopping)
        while True:
            try:
                self._ensure(self.settings.kafka, self.settings.topics, timeout=_HEARTBEAT)
                self.board.set_kafka_reachable(True)
                return
            except ConnectorError as exc:
                if exc.disposition != Disposition.RETRY:
                    raise
                self.board.set_kafka_reachable(False, str(exc))
                log.warning("%s; retrying", exc)
                if backoff.wait():
                    raise

    def _supervise(self) -> None:
        """One beat of the main loop: group membership (cluster mode) and the health heartbeat."""
        if self._membership is not None:
            self._membership.poll(_HEARTBEAT)
        else:
            self._stopping.wait(_HEARTBEAT)
        self.board.heartbeat()

    def _own(self, names: list[str]) -> None:
        self.shared.take_over(names, self.settings)
        for name in names:
            self.board.update(name, owned=True)
            observer = self.observers[name]
            observer.state(AccountState.STARTING)
            owns = self._owner_check(name)
            try:
                pipeline = build_pipeline(
                    self.settings,
                    self.views[name],
                    observer,
                    owns=owns,
                    hooks=self._hooks,
                    spool_hooks=self._spool_hooks,
                    shared=self.shared,
                )
            except ConnectorError as exc:  # e.g. an unreadable token file, a refused schema
                log.error("account %s cannot start: %s", name, exc)
                observer.state(AccountState.FAILED, error=str(exc))
                self.failed[name] = str(exc)
                continue
            self.failed.pop(name, None)
            self.pipelines[name] = pipeline
            pipeline.start()

    def _owner_check(self, name: str) -> Callable[[], bool]:
        if self.settings.cluster.group_id is None:
            return lambda: True
        return lambda: self._membership is not None and self._membership.owns(name)

    def _release(self, names: list[str]) -> None:
        """Stop the accounts (finishing or aborting their transactions) before they move on."""
        stopping = [self.pipelines.pop(name) for name in names if name in self.pipelines]
        for pipeline in self._stop_all(stopping):
            log.error(
                "account %s did not stop in time; its successor fences its producer and waits "
                "for its spool",
                pipeline.name,
            )
        for name in names:
            self.board.update(name, owned=False)
            self.observers[name].state(AccountState.NOT_OWNED)

    def _stop_all(self, pipelines: list[AccountPipeline]) -> list[AccountPipeline]:
        """Stop pipelines together within one shutdown_timeout; return those still running."""
        deadline = Deadline.after(self.settings.shutdown_timeout)
        for pipeline in pipelines:
            pipeline.stop(deadline)
        return [p for p in pipelines if not p.join(deadline)]

    def _shutdown(self) -> int:
        log.info(
            "stopping: finishing open transactions (up to %.0fs)", self.settings.shutdown_timeout
        )
        pipelines = list(self.pipelines.values())
        clean = not self._stop_all(pipelines)
        self.failed |= {p.name: p.failed for p in pipelines if p.failed}
        if self._membership is not None:
            self.pipelines.clear()  # already stopped: leaving the group must not wait again
            self._membership.close()
        self.shared.close(timeout=_HEARTBEAT)
        self._stop_server()
        if not clean:
            log.error("shutdown timed out; uncommitted reports stay in the spool for next start")
            return EXIT_FAILURE
        if self.failed:
            log.error("accounts stopped with an error: %s", ", ".join(sorted(self.failed)))
            return EXIT_FAILURE
        return EXIT_OK

    def _stop_server(self) -> None:
        if self._server is not None:
            self._server.stop()

    def _install_signal_handlers(self) -> None:
        def handle(signum: int, _frame: object) -> None:
            if self._stopping.is_set():
                log.warning("second signal: exiting now; the spool keeps what was not committed")
                os._exit(EXIT_FORCED)
            log.info("received %s", signal.Signals(signum).name)
            self._stopping.set()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)
