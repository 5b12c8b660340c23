"""devkafka's groundwork: constants, the Maven fetch of the broker jars, port and pid helpers."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import socket
import subprocess
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
