"""The spool's disk fills up or turns read-only under a running connector: nothing lost.

Real processes: the simulator (`--record` is the ground truth), `rpt-connector run`, a real
broker. The spool lives on its own small tmpfs, mounted by the test (it runs as root, as in the
CI container). Faults:
- full: a ballast file takes every free byte (and keeps taking what the spool frees), then goes;
- read-only: a read-only bind mount is stacked over the volume (atomically, with the new mount
  API), then removed. (`mount -o
  remount,ro` of the tmpfs itself is refused with EBUSY while the spool holds a segment open
  for writing, on any Linux filesystem; the stacked mount makes every path-based write fail
  with EROFS: new segments, the `released` file, unlinks. Segments are small, so every append
  needs a new one.)
- SIGTERM while full or read-only: the connector must exit 0 only once every fetched body is
  safe (in Kafka; the spool cannot take it).
Afterwards every handed-out report must be in the topic exactly once (read_committed).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import ConnectorProcess, SimulatorProcess, Topics, connector_env, stop_everything
from spool_runs import assert_exactly_once, config_for, start_simulator

from connector.spool.spool import inspect

pytestmark = pytest.mark.integration

TOTAL = 20000
FAULT_SECONDS = 5.0
# Small answers, small segments, a small volume: the faults bite within seconds.
SMALL = {
    "RPT_PLATFORM__RETSIZE": "100",
    "RPT_PLATFORM__MAX_RESPONSE_BYTES": str(256 * 1024),
    "RPT_SPOOL__SEGMENT_BYTES": str(64 * 1024),
}


def run(*command: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(command)}: {done.stderr.strip()}")


def mounted(path: Path) -> int:
    with open("/proc/self/mounts") as mounts:
        return sum(1 for line in mounts if line.split()[1] == str(path))


@pytest.fixture
def volume(tmp_path: Path) -> Iterator[Path]:
    """A 8 MiB tmpfs of the test's own (the test needs root: no fallback would be as real)."""
    path = tmp_path / "volume"
    path.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"these tests mount a tmpfs and need root: {done.stderr.strip()}")
    try:
        yield path
    finally:
        while mounted(path):
            run("umount", "-l", str(path))


class Ballast:
    """A file that takes every free byte of the volume, and keeps taking what gets freed."""

    def __init__(self, volume: Path) -> None:
        self.path = volume / "ballast"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._keep_full, daemon=True)

    def __enter__(self) -> Ballast:
        self._fill()
        self._thread.start()
        return self

    def _fill(self) -> None:
        with open(self.path, "ab", buffering=0) as file, contextlib.suppress(OSError):
            while True:
                file.write(b"\0" * 4096)

    def _keep_full(self) -> None:
        while not self._stop.wait(0.02):
            self._fill()

    def free_bytes(self) -> int:
        stats = os.statvfs(self.path.parent)
        return stats.f_bavail * stats.f_frsize

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self.path.unlink()


# The new mount API (Linux 5.12+), x86_64 numbers: a read-only copy of a mount made while it
# is detached, then attached over the original in one step.
_SYS_OPEN_TREE, _SYS_MOVE_MOUNT, _SYS_MOUNT_SETATTR = 428, 429, 442
_OPEN_TREE_CLONE, _AT_FDCWD, _AT_EMPTY_PATH, _MOVE_MOUNT_F_EMPTY_PATH = 1, -100, 0x1000, 0x4
_MOUNT_ATTR_RDONLY = 0x1


class _MountAttr(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in ("set", "clr", "propagation", "userns")]


def _syscall(number: int, *args: object) -> int:
    result = _LIBC.syscall(number, *args)
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"syscall {number}: {os.strerror(code)}")
    return result


_LIBC = ctypes.CDLL(None, use_errno=True)


def stack_read_only(volume: Path) -> None:
    """Put a read-only bind mount over `volume` atomically. (`mount --bind` then `mount -o
    remount,bind,ro` is two steps: a segment the spool opens in between, through the new
    mount, makes the remount fail with EBUSY.)"""
    target = os.fsencode(volume)
    clone = _syscall(_SYS_OPEN_TREE, _AT_FDCWD, target, _OPEN_TREE_CLONE | os.O_CLOEXEC)
    try:
        attr = _MountAttr(_MOUNT_ATTR_RDONLY, 0, 0, 0)
        size = ctypes.sizeof(attr)
        _syscall(_SYS_MOUNT_SETATTR, clone, b"", _AT_EMPTY_PATH, ctypes.byref(attr), size)
        _syscall(_SYS_MOVE_MOUNT, clone, b"", _AT_FDCWD, target, _MOVE_MOUNT_F_EMPTY_PATH)
    finally:
        os.close(clone)


@contextlib.contextmanager
def read_only(volume: Path) -> Iterator[None]:
    layers = mounted(volume)
    stack_read_only(volume)
    try:
        assert mounted(volume) == layers + 1
        probe = volume / "probe"
        with pytest.raises(OSError) as refused:
            probe.write_bytes(b"x")
        assert refused.value.errno == errno.EROFS
        yield
    finally:
        # Lazily: the connector may be reading a segment through the read-only layer right now.
        run("umount", "-l", str(volume))  # the stacked read-only mount only
        assert mounted(volume) == layers


def start(tmp_path: Path, volume: Path, kafka_bootstrap: str, topics: Topics):
    simulator = start_simulator(tmp_path, "--rate", "2000", "--rate-total", str(TOTAL))
    config = config_for(simulator, kafka_bootstrap, topics, tmp_path, spool=volume / "spool")
    return simulator, config


def handed_out_during(simulator: SimulatorProcess, seconds: float) -> int:
    before = simulator.stats()["handed_out"]
    time.sleep(seconds)
    return simulator.stats()["handed_out"] - before


def finish(connector: ConnectorProcess, simulator: SimulatorProcess) -> None:
    simulator.wait_drained(TOTAL, timeout=180)
    time.sleep(1.5)  # a commit interval or two for the last transaction
    assert connector.terminate(60) == 0, connector.output()[-3000:]


def test_a_full_spool_disk_then_freed_loses_and_duplicates_nothing(
    kafka_bootstrap: str, tmp_path: Path, volume: Path, producers: str
) -> None:
    topics = Topics.fresh()
    simulator, config = start(tmp_path, volume, kafka_bootstrap, topics)
    connector = ConnectorProcess(config, tmp_path / "connector.log", env=connector_env() | SMALL)
    try:
        connector.start()
        simulator.wait_for_more_handed_out(3000)
        with Ballast(volume) as ballast:
            assert ballast.free_bytes() < 64 * 1024
            during = handed_out_during(simulator, FAULT_SECONDS)
            assert connector.alive(), connector.output()
        print(f"figures: full disk ({producers}): {during} reports handed out while full")
        finish(connector, simulator)
    finally:
        stop_everything(connector, simulator)
    assert inspect(volume / "spool" / "main")["entries"] == 0
    assert_exactly_once(kafka_bootstrap, topics, tmp_path)


def test_a_spool_volume_turned_read_only_then_writable_loses_nothing(
    kafka_bootstrap: str, tmp_path: Path, volume: Path, producers: str
) -> None:
    topics = Topics.fresh()
    simulator, config = start(tmp_path, volume, kafka_bootstrap, topics)
    connector = ConnectorProcess(config, tmp_path / "connector.log", env=connector_env() | SMALL)
    try:
        connector.start()
        simulator.wait_for_more_handed_out(3000)
        with read_only(volume):
            during = handed_out_during(simulator, FAULT_SECONDS)
            assert connector.alive(), connector.output()  # not an exit into a crash loop
        print(f"figures: read-only ({producers}): {during} reports handed out while read-only")
        finish(connector, simulator)
    finally:
        stop_everything(connector, simulator)
    assert inspect(volume / "spool" / "main")["entries"] == 0
    assert_exactly_once(kafka_bootstrap, topics, tmp_path)


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_sigterm_during_a_disk_fault_exits_only_once_everything_is_safe(
    kafka_bootstrap: str, tmp_path: Path, volume: Path, fault: str
) -> None:
    """Full: fetching pauses (or a body caught by the filling goes to Kafka). Read-only: the
    room check passes, the append fails, so a fetched body is in hand when SIGTERM comes."""
    topics = Topics.fresh()
    simulator, config = start(tmp_path, volume, kafka_bootstrap, topics)
    log = tmp_path / "connector.log"
    connector = ConnectorProcess(config, log, env=connector_env() | SMALL)
    try:
        connector.start()
        simulator.wait_for_more_handed_out(3000)
        with Ballast(volume) if fault == "full" else read_only(volume):
            time.sleep(1.0)
            assert connector.terminate(60) == 0, connector.output()[-3000:]
        connector = ConnectorProcess(config, log, env=connector_env() | SMALL).start()
        finish(connector, simulator)
    finally:
        stop_everything(connector, simulator)
    assert inspect(volume / "spool" / "main")["entries"] == 0
    print(f"figures: SIGTERM while {fault}")
    assert_exactly_once(kafka_bootstrap, topics, tmp_path)
