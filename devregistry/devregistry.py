#!/usr/bin/env python3
"""A real schema registry for tests: Apicurio Registry 3 (in-memory storage) without Docker.

The app tarball `io.apicurio:apicurio-registry-app:<version>:tar.gz:all` is fetched from Maven
Central with `mvn` and unpacked into `.cache/registry/app-<version>/`; a running instance keeps
its log under `.cache/registry/<port>/` while it runs. Apicurio serves the Confluent-compatible API
under /apis/ccompat/v7, which is what confluent-kafka's SchemaRegistryClient talks to.

CLI:    python devregistry/devregistry.py fetch | run [--port P]   (run: until Ctrl-C)
Python: sys.path.insert(0, "<repo>/devregistry"); from devregistry import Registry
        with Registry() as registry: registry.ccompat_url
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import shutil
import signal
import socket
import subprocess
import tarfile
import time
from pathlib import Path

import httpx

VERSION = "3.0.9"
ARTIFACT = f"io.apicurio:apicurio-registry-app:{VERSION}:tar.gz:all"
REPO = Path(__file__).resolve().parent.parent
ROOT = REPO / ".cache" / "registry"
HOST = "127.0.0.1"
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 20.0
# Small heap and SerialGC: the registry shares 2 cores and the RAM with Kafka and the tests.
JVM_OPTS = ("-Xms64m", "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1")


class DevRegistryError(RuntimeError):
    """Provisioning or lifecycle failure, with a message meant for humans."""


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise DevRegistryError(f"`{name}` not found on PATH (needs a JDK 17+ and Maven 3.8+)")
    return path


def app_dir(root: Path = ROOT) -> Path:
    return root / f"app-{VERSION}"


def fetch(root: Path = ROOT) -> Path:
    """Download and unpack the app once; returns the directory holding the runner jar."""
    target = app_dir(root)
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".fetch.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / ".complete").is_file():
            return target
        scratch = root / "download.tmp"
        shutil.rmtree(scratch, ignore_errors=True)
        cmd = [_tool("mvn"), "-B", "-q", "dependency:copy", f"-Dartifact={ARTIFACT}"]
        cmd.append(f"-DoutputDirectory={scratch}")
        result = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=root)
        tarballs = list(scratch.glob("*.tar.gz"))
        if result.returncode != 0 or not tarballs:
            output = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
            raise DevRegistryError(f"mvn could not fetch {ARTIFACT}:\n{output}")
        unpacked = root / "app.tmp"
        shutil.rmtree(unpacked, ignore_errors=True)
        with tarfile.open(tarballs[0]) as archive:
            archive.extractall(unpacked, filter="data")
        (unpacked / ".complete").write_text(ARTIFACT + "\n")
        shutil.rmtree(target, ignore_errors=True)
        unpacked.rename(target)
        shutil.rmtree(scratch, ignore_errors=True)
        return target


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class Registry:
    """One registry process on a free port; a context manager that always stops what it started."""

    def __init__(self, port: int | None = None, root: Path = ROOT) -> None:
        self.port = port or free_port()
        self.root = root
        self.dir = root / str(self.port)
        self.log_file = self.dir / "registry.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def ccompat_url(self) -> str:
        """Base URL of the Confluent-compatible API, for SchemaRegistryClient({"url": ...})."""
        return f"{self.url}/apis/ccompat/v7"

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        jar = next(fetch(self.root).glob("*-runner.jar"), None)
        if jar is None:
            raise DevRegistryError(f"no *-runner.jar in {app_dir(self.root)}")
        self.dir.mkdir(parents=True, exist_ok=True)
        cmd = [_tool("java"), *JVM_OPTS, f"-Dquarkus.http.port={self.port}"]
        cmd += [f"-Dquarkus.http.host={HOST}", "-jar", str(jar)]
        with self.log_file.open("ab") as log:
            self._proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir
            )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """SIGTERM the process this object started (SIGKILL if it lingers); drop its files."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_TIMEOUT_S)
        shutil.rmtree(self.dir, ignore_errors=True)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                code = self._proc.returncode
                raise DevRegistryError(f"registry exited ({code}):\n{self._tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health/ready", timeout=2).status_code == 200:
                    return
            time.sleep(0.5)
        raise DevRegistryError(f"registry not ready after {timeout:.0f} s:\n{self._tail()}")

    def _tail(self, lines: int = 30) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> Registry:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="Apicurio Registry for development")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("fetch", help="download and unpack the registry app")
    run = commands.add_parser("run", help="run a registry until Ctrl-C")
    run.add_argument("--port", type=int)
    args = parser.parse_args()
    if args.command == "fetch":
        print(fetch())
        return
    with Registry(args.port) as registry:
        print(f"ready: {registry.ccompat_url} (Ctrl-C stops it)")
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":
    main()
