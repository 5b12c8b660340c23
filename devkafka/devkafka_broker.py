"""One named dev broker instance: start, stop, kill, restart and wipe, with its state on disk."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from devkafka_base import (
    _NAME_RE,
    _RESERVED_NAMES,
    DEFAULT_NAME,
    DEFAULT_PORT,
    DEFAULT_ROOT,
    HOST,
    JVM_OPTS,
    LOG4J2_CONFIG,
    LOG_BANNER,
    LOG_ROTATE_BYTES,
    PORT_RELEASE_WAIT_S,
    START_TIMEOUT_S,
    STOP_TIMEOUT_S,
    DevKafkaError,
    _locked,
    _pid_alive,
    _pid_cmdline,
    _read_int,
    _tail,
    _tail_file,
    _wait_port_free,
    fetch,
    free_port,
    java_bin,
    lib_dir,
    new_cluster_id,
    port_answers,
    port_is_free,
)
from devkafka_config import _server_properties, parse_address


class Broker:
    """One named dev broker instance. State lives on disk, so any process can manage it."""

    def __init__(
        self,
        name: str = DEFAULT_NAME,
        port: int | None = None,
        root: Path | None = None,
        advertise: str | None = None,
    ) -> None:
        if not _NAME_RE.match(name) or name in _RESERVED_NAMES:
            raise DevKafkaError(f"invalid instance name {name!r}")
        if advertise is not None:
            parse_address(advertise)
        self.name = name
        self.requested_port = port
        # The address clients are told to use (None: the listener itself). Kept across
        # restart(); a proxy at this address must forward to `bootstrap`.
        self.advertise = advertise
        self.root = Path(root).resolve() if root is not None else DEFAULT_ROOT
        self.dir = self.root / name
        self.data_dir = self.dir / "data"
        self.config_file = self.dir / "server.properties"
        self.log_file = self.dir / "broker.log"
        self.pid_file = self.dir / "kafka.pid"
        self.port_file = self.dir / "port"
        self.controller_port_file = self.dir / "controller.port"
        self.advertise_file = self.dir / "advertise"
        self.internal_port_file = self.dir / "internal.port"
        self._proc: subprocess.Popen[bytes] | None = None

    # ---- state

    @property
    def bootstrap_file(self) -> Path:
        return self.root / "bootstrap" if self.name == DEFAULT_NAME else self.dir / "bootstrap"

    @property
    def port(self) -> int | None:
        return _read_int(self.port_file)

    @property
    def bootstrap(self) -> str | None:
        port = self.port
        return f"{HOST}:{port}" if port is not None else None

    def advertised_on_disk(self) -> str | None:
        """The advertised address the instance was last launched with (None: its listener)."""
        if not self.advertise_file.is_file():
            return None
        return self.advertise_file.read_text().strip() or None

    @property
    def advertised(self) -> str | None:
        """Where clients are sent after metadata: `advertise` if set, else `bootstrap`."""
        return self.advertise or self.advertised_on_disk() or self.bootstrap

    @property
    def internal_bootstrap(self) -> str:
        """An address that always reaches the broker directly, proxy or not.

        With `advertise`, clients bootstrapped here are told the internal listener's own
        address, so they never pass through the proxy (tests check results this way).
        """
        port = _read_int(self.internal_port_file) if self.advertised_on_disk() else None
        bootstrap = f"{HOST}:{port}" if port is not None else self.bootstrap
        if bootstrap is None:
            raise DevKafkaError(f"Kafka instance {self.name!r} has never been started")
        return bootstrap

    @property
    def pid(self) -> int | None:
        """The recorded pid if that process is our broker and still alive."""
        pid = _read_int(self.pid_file)
        if pid is None:
            return None
        if self._proc is not None and self._proc.pid == pid:
            # Our own child: waitpid is exact, whereas /proc shows the JVM's main thread as a
            # zombie while its other threads (and its listening sockets) are still going away.
            if self._proc.poll() is not None:
                return None
        elif not _pid_alive(pid):
            return None
        cmdline = _pid_cmdline(pid)
        # Guard against pid reuse: the live process must be a broker on *this* config.
        if cmdline and str(self.config_file) not in cmdline:
            return None
        return pid

    def is_running(self) -> bool:
        port = self.port
        return self.pid is not None and port is not None and port_answers(port)

    # ---- lifecycle

    def start(self, timeout: float = START_TIMEOUT_S) -> str:
        """Start (or reuse) the broker and return its bootstrap address once it serves metadata."""
        fetch(self.root)
        with _locked(self.dir / ".lock"):
            pid = self.pid
            if pid is None:
                self._launch()
            elif self.advertise is not None and self.advertise != self.advertised_on_disk():
                raise DevKafkaError(
                    f"Kafka instance {self.name!r} is running with another advertised address"
                    f" ({self.advertised_on_disk() or self.bootstrap}); stop it first"
                )
            # A live pid whose port does not answer yet is a broker still starting (perhaps
            # launched by another process): wait for it instead of starting a second one.
            try:
                self._wait_ready(timeout)
            except DevKafkaError:
                if pid is None:
                    self._signal_and_wait(signal.SIGKILL, STOP_TIMEOUT_S)
                raise
            bootstrap = self.bootstrap
            assert bootstrap is not None
            self.bootstrap_file.write_text(bootstrap + "\n")
            return bootstrap

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM the recorded pid, SIGKILL after `timeout`; no-op when not running."""
        with _locked(self.dir / ".lock"):
            if not self._signal_and_wait(signal.SIGTERM, timeout):
                self._signal_and_wait(signal.SIGKILL, timeout)
            self._forget()

    def kill(self) -> None:
        """SIGKILL, as a crash would (data keeps its unclean-shutdown state)."""
        with _locked(self.dir / ".lock"):
            self._signal_and_wait(signal.SIGKILL, STOP_TIMEOUT_S)
            self._forget()

    def restart(self, timeout: float = START_TIMEOUT_S) -> str:
        """Stop and start again on the same port with the same data."""
        self.stop()
        return self.start(timeout)

    def wipe(self) -> None:
        """Stop and delete the instance's data (next start formats a fresh cluster)."""
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    # ---- internals

    def _choose_ports(self) -> tuple[int, int]:
        recorded = self.port
        if self.requested_port is not None:
            broker_port = self.requested_port
            if not port_is_free(broker_port):
                raise DevKafkaError(f"port {broker_port} is already in use")
        elif recorded is not None and _wait_port_free(recorded, PORT_RELEASE_WAIT_S):
            broker_port = recorded  # keep the address stable across down/up and restart()
        elif self.name == DEFAULT_NAME and port_is_free(DEFAULT_PORT):
            broker_port = DEFAULT_PORT
        else:
            broker_port = free_port()
        controller_port = _read_int(self.controller_port_file)
        # Clients never see the controller port, so it need not survive a restart.
        if (
            controller_port is None
            or controller_port == broker_port
            or not _wait_port_free(controller_port, PORT_RELEASE_WAIT_S)
        ):
            controller_port = free_port()
        while controller_port == broker_port:
            controller_port = free_port()
        return broker_port, controller_port

    def _format_storage(self, java: str) -> None:
        if (self.data_dir / "meta.properties").is_file():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            java,
            *JVM_OPTS,
            f"-Dlog4j2.configurationFile={LOG4J2_CONFIG}",
            "-cp",
            str(lib_dir(self.root) / "*"),
            "kafka.tools.StorageTool",
            "format",
            "--ignore-formatted",
            "-t",
            new_cluster_id(),
            "-c",
            str(self.config_file),
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip()
            raise DevKafkaError(f"kafka storage format failed:\n{_tail(output, 30)}")

    def _launch(self) -> None:
        java = java_bin()
        broker_port, controller_port = self._choose_ports()
        self.dir.mkdir(parents=True, exist_ok=True)
        # Like the controller port, the internal one is never seen by clients.
        internal_port = free_port() if self.advertise is not None else None
        while internal_port in (broker_port, controller_port):
            internal_port = free_port()
        self.config_file.write_text(
            _server_properties(
                broker_port, controller_port, self.data_dir, self.advertise, internal_port
            )
        )
        if self.advertise is not None:
            self.advertise_file.write_text(f"{self.advertise}\n")
            self.internal_port_file.write_text(f"{internal_port}\n")
        else:
            self.advertise_file.unlink(missing_ok=True)
            self.internal_port_file.unlink(missing_ok=True)
        self.port_file.write_text(f"{broker_port}\n")
        self.controller_port_file.write_text(f"{controller_port}\n")
        self._format_storage(java)
        cmd = [
            java,
            *JVM_OPTS,
            f"-Dlog4j2.configurationFile={LOG4J2_CONFIG}",
            f"-Dkafka.logs.dir={self.dir}",
            "-cp",
            str(lib_dir(self.root) / "*"),
            "kafka.Kafka",
            str(self.config_file),
        ]
        if self.log_file.is_file() and self.log_file.stat().st_size > LOG_ROTATE_BYTES:
            self.log_file.replace(self.log_file.with_suffix(".log.1"))
        with self.log_file.open("ab") as log:
            log.write(f"\n{LOG_BANNER} {time.strftime('%F %T')} =====\n".encode())
            log.flush()
            # A new session keeps the broker alive after `up` returns and out of the way of
            # Ctrl-C aimed at the caller (pytest, make).
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self.dir,
            )
        self.pid_file.write_text(f"{self._proc.pid}\n")

    def _wait_ready(self, timeout: float) -> None:
        port = self.port
        assert port is not None
        deadline = time.monotonic() + timeout
        # A plain TCP probe first: librdkafka logs every refused connection to stderr.
        while not port_answers(port):
            self._check_alive()
            if time.monotonic() > deadline:
                self._fail(f"port {port} did not open within {timeout:.0f}s")
            time.sleep(0.2)
        while True:
            self._check_alive()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._fail(f"no metadata response within {timeout:.0f}s")
            if _metadata_ok(f"{HOST}:{port}", min(5.0, remaining)):
                return
            time.sleep(0.2)

    def _check_alive(self) -> None:
        if self.pid is None:
            self._fail("the broker process exited during startup")

    def _fail(self, reason: str) -> None:
        raise DevKafkaError(
            f"Kafka instance {self.name!r} did not come up: {reason}.\n"
            f"--- tail of {self.log_file} ---\n{_tail_file(self.log_file)}"
        )

    def _signal_and_wait(self, sig: signal.Signals, timeout: float) -> bool:
        """Send `sig` to the recorded pid; True once it is gone (or was never running)."""
        pid = self.pid
        if pid is None:
            return True
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pid is None:
                return True
            time.sleep(0.1)
        return False

    def _forget(self) -> None:
        self.pid_file.unlink(missing_ok=True)
        self.bootstrap_file.unlink(missing_ok=True)
        self._proc = None


def _metadata_ok(bootstrap: str, timeout: float) -> bool:
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException:
        return False
    return len(metadata.brokers) > 0


def instances(root: Path = DEFAULT_ROOT) -> list[Broker]:
    if not root.is_dir():
        return []
    return [
        Broker(path.name, root=root)
        for path in sorted(root.iterdir())
        if path.is_dir() and path.name not in _RESERVED_NAMES and (path / "port").is_file()
    ]
