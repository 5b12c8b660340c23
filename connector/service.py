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

from connector import __version__
from connector.config import Settings, load_settings
from connector.errors import ConnectorError
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
        self.pipelines: list[AccountPipeline] = []
        self._stopping = threading.Event()
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
            log.error("cannot start: %s", exc)
            self._stop_server()
            return EXIT_FAILURE
        while not self._stopping.wait(_HEARTBEAT):
            self.board.heartbeat()
            if all(p.failed for p in self.pipelines):
                log.error("every account has stopped with an error; exiting")
                break
        return self._shutdown()

    def _start(self) -> None:
        if self.settings.metrics.enabled:
            self._server = EndpointServer(self.settings.metrics.listen, self.metrics, self.board)
            host, port = self._server.start()
            log.info("metrics and health on http://%s:%d/metrics", host, port)
        kafka = self.settings.kafka
        topics = [kafka.topic, kafka.dlq_topic, kafka.progress_topic]
        topics += [a.topic for a in self.settings.accounts if a.topic]
        ensure_topics(kafka, topics)
        self.board.set_kafka_reachable(True)
        for index in range(len(self.settings.accounts)):
            pipeline = AccountPipeline(self.settings, index, self.metrics, self.board)
            self.pipelines.append(pipeline)
            pipeline.start()

    def _shutdown(self) -> int:
        log.info(
            "stopping: finishing open transactions (up to %.0fs)", self.settings.shutdown_timeout
        )
        for pipeline in self.pipelines:
            pipeline.stop()
        clean = all(p.join(self.settings.shutdown_timeout) for p in self.pipelines)
        self._stop_server()
        if not clean:
            log.error("shutdown timed out; uncommitted reports stay in the spool for next start")
            return EXIT_FAILURE
        failed = [p.name for p in self.pipelines if p.failed]
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
