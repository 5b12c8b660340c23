#!/usr/bin/env python3
"""A real single-node Apache Kafka broker (KRaft, broker+controller) without Docker.

The broker jars are resolved from Maven Central with `mvn` into `.cache/kafka/lib`; each named
instance keeps its config, data, log, pid and port files under `.cache/kafka/<name>/`.

CLI:    python devkafka/devkafka.py fetch | up [--name N] [--port P] [--advertise HOST:PORT]
        | down [--name N] | status
Python: sys.path.insert(0, "<repo>/devkafka"); from devkafka import Broker

`advertise` makes the broker tell clients to reach it at another address (a TCP proxy in
front of it, for fault injection): the client listener then advertises HOST:PORT, while the
broker talks to itself (transaction markers, the group coordinator) over a separate internal
listener, so cutting the proxy cuts the clients off and nothing inside the broker.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_ROOT = REPO / ".cache" / "kafka"
POM = HERE / "pom.xml"
LOG4J2_CONFIG = HERE / "log4j2.xml"
DEFAULT_NAME = "default"
DEFAULT_PORT = 9092
HOST = "127.0.0.1"
NODE_ID = 1
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0
# A killed broker's listening socket can outlive its pid by a moment; restart() waits this
# long for the recorded port rather than moving clients to a new address.
PORT_RELEASE_WAIT_S = 10.0
# The heap stays small because the broker shares 2 cores and the RAM with the connector,
# simulator and tests. SerialGC avoids G1's extra threads; the JIT is left alone so
# benchmarks measure a normally optimised broker.
JVM_OPTS = (
    "-Xms256m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-Djava.awt.headless=true",
)
LOG_BANNER = "===== devkafka start"
LOG_ROTATE_BYTES = 50 * 1024 * 1024
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_RESERVED_NAMES = {"lib", "lib.tmp", "bootstrap"}


class DevKafkaError(RuntimeError):
    """Provisioning or lifecycle failure, with a message meant for humans."""


def _require_tool(tool: str, hint: str) -> str:
    if tool == "java" and os.environ.get("JAVA_HOME"):
        candidate = Path(os.environ["JAVA_HOME"]) / "bin" / "java"
        if candidate.is_file():
            return str(candidate)
    path = shutil.which(tool)
    if path is None:
        raise DevKafkaError(f"`{tool}` not found on PATH: {hint}")
    return path


def java_bin() -> str:
    return _require_tool(
        "java", "install a JDK 17+ (e.g. `apt-get install openjdk-17-jre-headless`)"
    )


def mvn_bin() -> str:
    return _require_tool("mvn", "install Maven 3.8+ (e.g. `apt-get install maven`)")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise fetch/start/stop across processes (parallel `make` targets, pytest workers)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- fetch


def _pom_digest() -> str:
    return hashlib.sha256(POM.read_bytes()).hexdigest()


def lib_dir(root: Path = DEFAULT_ROOT) -> Path:
    return root / "lib"


def is_fetched(root: Path = DEFAULT_ROOT) -> bool:
    marker = lib_dir(root) / ".complete"
    return marker.is_file() and marker.read_text().strip() == _pom_digest()


def fetch(root: Path = DEFAULT_ROOT) -> Path:
    """Copy kafka_2.13 and its runtime dependencies into `<root>/lib` (no-op when complete)."""
    lib = lib_dir(root)
    with _locked(root / ".fetch.lock"):
        if is_fetched(root):
            return lib
        mvn = mvn_bin()
        java_bin()  # fail now rather than after a download the broker can't use
        # Download into a scratch dir and swap it in, so an interrupted fetch never leaves a
        # half-populated lib dir that looks usable.
        tmp = root / "lib.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        cmd = [
            mvn,
            "-B",
            "-q",
            "-f",
            str(POM),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={tmp}",
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip()
            raise DevKafkaError(f"mvn failed (exit {result.returncode}):\n{_tail(output, 40)}")
        if not any(tmp.glob("kafka_2.13-*.jar")):
            raise DevKafkaError(f"mvn succeeded but no kafka_2.13 jar landed in {tmp}")
        (tmp / ".complete").write_text(_pom_digest() + "\n")
        shutil.rmtree(lib, ignore_errors=True)
        tmp.rename(lib)
        return lib


def kafka_version(root: Path = DEFAULT_ROOT) -> str | None:
    for jar in lib_dir(root).glob("kafka_2.13-*.jar"):
        return jar.name.removeprefix("kafka_2.13-").removesuffix(".jar")
    return None


# --------------------------------------------------------------------------- helpers


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _tail_file(path: Path, lines: int = 40) -> str:
    """The last lines of the most recent run in a broker log."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log file)"
    last_run = text.rsplit(LOG_BANNER, 1)[-1].partition("\n")[2]
    return _tail(last_run, lines)


def port_is_free(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Match the JVM, which binds with SO_REUSEADDR: a port in TIME_WAIT after a restart
        # is still usable and must not push the broker onto a new address.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _wait_port_free(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not port_is_free(port):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_answers(port: int, host: str = HOST, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A killed child of this process stays a zombie until reaped; it is not running.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs: trust kill(0)
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _pid_cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def new_cluster_id() -> str:
    # Kafka's Uuid.toString(): URL-safe base64 of 16 random bytes without padding. The CLI
    # rejects ids that start with "-" (they parse as flags), so draw again in that case.
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def parse_address(value: str) -> tuple[str, int]:
    """HOST:PORT, as given to `--advertise`; a clear error for anything else."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise DevKafkaError(f"advertised address {value!r} is not HOST:PORT")
    return host, int(port)


def _listener_properties(
    broker_port: int, controller_port: int, advertise: str | None, internal_port: int | None
) -> dict[str, str]:
    controller = f"CONTROLLER://{HOST}:{controller_port}"
    if advertise is None:
        return {
            "listeners": f"PLAINTEXT://{HOST}:{broker_port},{controller}",
            "advertised.listeners": f"PLAINTEXT://{HOST}:{broker_port}",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        }
    assert internal_port is not None
    internal = f"INTERNAL://{HOST}:{internal_port}"
    return {
        "listeners": f"PLAINTEXT://{HOST}:{broker_port},{internal},{controller}",
        "advertised.listeners": f"PLAINTEXT://{advertise},{internal}",
        "inter.broker.listener.name": "INTERNAL",
        "listener.security.protocol.map": (
            "PLAINTEXT:PLAINTEXT,INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT"
        ),
    }


def _server_properties(
    broker_port: int,
    controller_port: int,
    data_dir: Path,
    advertise: str | None = None,
    internal_port: int | None = None,
) -> str:
    props = {
        "process.roles": "broker,controller",
        "node.id": str(NODE_ID),
        # Static voters: `storage format` then needs no --standalone/--initial-controllers.
        "controller.quorum.voters": f"{NODE_ID}@{HOST}:{controller_port}",
        **_listener_properties(broker_port, controller_port, advertise, internal_port),
        "controller.listener.names": "CONTROLLER",
        "log.dirs": str(data_dir),
        # One broker: every internal topic must be satisfiable with a single replica, or
        # transactions and consumer groups hang waiting for replicas that never come.
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # Few internal partitions: creating 50 of each on first use costs seconds.
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.num.partitions": "4",
        "num.partitions": "1",
        "group.initial.rebalance.delay.ms": "0",
        # The connector creates its own topics; a typo must fail loudly, not create a topic.
        "auto.create.topics.enable": "false",
        # Abort transactions of crashed producers promptly (chaos tests wait on this).
        "transaction.abort.timed.out.transaction.cleanup.interval.ms": "5000",
        "transaction.remove.expired.transaction.cleanup.interval.ms": "60000",
        "transactional.id.expiration.ms": str(24 * 3600 * 1000),
        # After a SIGKILL the old registration blocks the restarted broker until its session
        # expires (default 9 s); shorter keeps kill/restart chaos tests quick, while still
        # tolerating multi-second stalls on a busy 2-core machine.
        "broker.heartbeat.interval.ms": "1000",
        "broker.session.timeout.ms": "4000",
        "num.network.threads": "2",
        "num.io.threads": "4",
        "num.recovery.threads.per.data.dir": "1",
        "log.retention.hours": "24",
        "log.segment.bytes": str(64 * 1024 * 1024),
    }
    return "".join(f"{key}={value}\n" for key, value in props.items())


# --------------------------------------------------------------------------- broker


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


# --------------------------------------------------------------------------- CLI


def _cmd_fetch(args: argparse.Namespace) -> None:
    started = time.monotonic()
    was_fetched = is_fetched(args.root)
    lib = fetch(args.root)
    state = "already present" if was_fetched else f"fetched in {time.monotonic() - started:.1f}s"
    print(f"kafka {kafka_version(args.root)} jars {state}: {lib}", file=sys.stderr)


def _cmd_up(args: argparse.Namespace) -> None:
    broker = Broker(args.name, port=args.port, root=args.root, advertise=args.advertise)
    started = time.monotonic()
    reused = broker.is_running()
    bootstrap = broker.start(timeout=args.timeout)
    how = "already running" if reused else f"started in {time.monotonic() - started:.1f}s"
    print(f"kafka {args.name!r} {how} (pid {broker.pid}, log {broker.log_file})", file=sys.stderr)
    print(bootstrap)


def _cmd_down(args: argparse.Namespace) -> None:
    broker = Broker(args.name, root=args.root)
    was_running = broker.pid is not None
    if args.wipe:
        broker.wipe()
    else:
        broker.stop()
    print(f"kafka {args.name!r} {'stopped' if was_running else 'was not running'}", file=sys.stderr)


def _cmd_status(args: argparse.Namespace) -> None:
    found = instances(args.root)
    if not found:
        print("no kafka instances")
    for broker in found:
        state = f"running pid {broker.pid}" if broker.is_running() else "stopped"
        via = f"\tadvertises {broker.advertised}" if broker.advertised != broker.bootstrap else ""
        print(f"{broker.name}\t{broker.bootstrap}\t{state}{via}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fetch", help="download the broker jars (idempotent)").set_defaults(
        func=_cmd_fetch
    )
    up = sub.add_parser("up", help="start a broker (reused if running); prints bootstrap")
    up.add_argument("--name", default=DEFAULT_NAME)
    up.add_argument("--port", type=int, default=None)
    up.add_argument("--timeout", type=float, default=START_TIMEOUT_S)
    up.add_argument(
        "--advertise",
        metavar="HOST:PORT",
        default=None,
        help="tell clients to connect here (e.g. a proxy forwarding to the broker's port)",
    )
    up.set_defaults(func=_cmd_up)
    down = sub.add_parser("down", help="stop a broker (no-op when not running)")
    down.add_argument("--name", default=DEFAULT_NAME)
    down.add_argument("--wipe", action="store_true", help="also delete the instance's data")
    down.set_defaults(func=_cmd_down)
    sub.add_parser("status", help="list instances").set_defaults(func=_cmd_status)
    args = parser.parse_args(argv)
    args.root = args.root.resolve()
    try:
        args.func(args)
    except DevKafkaError as exc:
        print(f"devkafka: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
