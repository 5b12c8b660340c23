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
import time

from connector import __version__
from connector.cluster import Membership
from connector.config import Settings, load_settings
from connector.errors import ConnectorError, PublishError
from connector.logs import setup_logging
from connector.metrics import Metrics
from connector.pipeline import AccountPipeline
from connector.publisher import ensure_topics
from connector.status import EndpointServer, StatusBoard

log = logging.getLogger("connector.service")

EXIT_OK, EXIT_FAILURE, EXIT_FORCED = 0, 1, 130
_HEARTBEAT = 1.0


def run_from_cli(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    setup_logging(args.log_level or settings.log.level, args.log_format or settings.log.format)
    return Service(settings).run()


class Service:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        names = [a.name for a in settings.accounts]
        retsizes = {a.retsize or settings.platform.retsize for a in settings.accounts}
        self.metrics = Metrics(accounts=names, batch_capacities=sorted(retsizes))
        self.board = StatusBoard(names)
        self.pipelines: dict[str, AccountPipeline] = {}
        self._stopping = threading.Event()
        self._server: EndpointServer | None = None
        self._membership: Membership | None = None

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
            log.error("cannot start: %s", exc)
            self._stop_server()
            return EXIT_FAILURE
        while not self._stopping.is_set():
            self._supervise()
            if self._membership is None and all(p.failed for p in self.pipelines.values()):
                log.error("every account has stopped with an error; exiting")
                break
        return self._shutdown()

    def _start(self) -> None:
        if self.settings.metrics.enabled:
            self._server = EndpointServer(self.settings.metrics.listen, self.metrics, self.board)
            host, port = self._server.start()
            log.info("metrics and health on http://%s:%d/metrics", host, port)
        self._ensure_topics()
        if self.settings.cluster.group_id is None:
            self._own([a.name for a in self.settings.accounts])
            return
        for account in self.settings.accounts:
            self.board.update(account.name, owned=False, state="not_owned")
        self._membership = Membership(self.settings, self._own, self._release)
        self._membership.start()

    def _ensure_topics(self) -> None:
        """Create missing topics, waiting for Kafka as long as it takes (or until a signal)."""
        kafka = self.settings.kafka
        topics = [kafka.topic, kafka.dlq_topic, kafka.progress_topic]
        topics += [a.topic for a in self.settings.accounts if a.topic]
        delay = 1.0
        while True:
            try:
                ensure_topics(kafka, topics)
                self.board.set_kafka_reachable(True)
                return
            except PublishError as exc:
                if "cannot reach Kafka" not in str(exc):
                    raise
                self.board.set_kafka_reachable(False, str(exc))
                log.warning("%s; retrying in %.0fs", exc, delay)
                if self._stopping.wait(delay):
                    raise
                delay = min(delay * 2, 30.0)

    def _supervise(self) -> None:
        """One beat of the main loop: group membership (cluster mode) and the health heartbeat."""
        if self._membership is not None:
            self._membership.poll(_HEARTBEAT)
        else:
            self._stopping.wait(_HEARTBEAT)
        self.board.heartbeat()

    def _own(self, names: list[str]) -> None:
        index = {a.name: i for i, a in enumerate(self.settings.accounts)}
        for name in names:
            self.board.update(name, owned=True, state="starting")
            try:
                pipeline = AccountPipeline(self.settings, index[name], self.metrics, self.board)
            except ConnectorError as exc:  # e.g. the registry refused the schema
                log.error("account %s cannot start: %s", name, exc)
                self.board.update(name, state="failed", last_error=str(exc))
                continue
            self.pipelines[name] = pipeline
            pipeline.start()

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
            self.board.update(name, owned=False, state="not_owned")

    def _stop_all(self, pipelines: list[AccountPipeline]) -> list[AccountPipeline]:
        """Stop pipelines together within one shutdown_timeout; return those still running."""
        for pipeline in pipelines:
            pipeline.stop()
        deadline = time.monotonic() + self.settings.shutdown_timeout
        return [p for p in pipelines if not p.join(deadline)]

    def _shutdown(self) -> int:
        log.info(
            "stopping: finishing open transactions (up to %.0fs)", self.settings.shutdown_timeout
        )
        pipelines = list(self.pipelines.values())
        failed = [p.name for p in pipelines if p.failed]
        clean = not self._stop_all(pipelines)
        if self._membership is not None:
            self.pipelines.clear()  # already stopped: leaving the group must not wait again
            self._membership.close()
        self._stop_server()
        if not clean:
            log.error("shutdown timed out; uncommitted reports stay in the spool for next start")
            return EXIT_FAILURE
        return EXIT_FAILURE if failed else EXIT_OK

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
