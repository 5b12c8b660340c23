"""A Docker engine for the image test: the one that answers, or one started here and stopped after.

No container registry is reachable from these machines and iptables cannot be used, so a
started engine runs without a bridge (`--bridge=none`: containers use the host network) with its
own data root (kept in the cache, so built images survive for the next run), exec root and
socket (both in a short temporary folder: a unix socket path must stay under 108 bytes). Its
storage driver is overlay2 where the kernel mounts overlayfs (a layer costs what it changes),
else vfs (every layer a full copy of the one below: builds take minutes longer and the data root
grows by gigabytes). Debian's `docker.io` and `debootstrap` are installed with apt when missing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

START_TIMEOUT_S = 60.0
STORAGE_DRIVERS = ("overlay2", "vfs")  # the first that starts
STOP_TIMEOUT_S = 30.0
APT_PACKAGES = ("docker.io", "debootstrap")


class EngineError(RuntimeError):
    """The engine cannot be had; the message says why."""


def docker(*args: str, env: dict[str, str], timeout: float = 600.0, **kw: object) -> str:
    """Run the docker client; raise EngineError with its output when it fails."""
    try:
        result = subprocess.run(
            ["docker", *args], env=env, capture_output=True, text=True, timeout=timeout, **kw
        )
    except subprocess.TimeoutExpired as exc:
        raise EngineError(f"docker {' '.join(args[:2])} took more than {timeout:.0f}s") from exc
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()[-3000:]
        raise EngineError(f"docker {' '.join(args[:3])} failed ({result.returncode}):\n{output}")
    return result.stdout


def answers(env: dict[str, str]) -> bool:
    try:
        docker("info", "--format", "{{.ServerVersion}}", env=env, timeout=10)
    except (EngineError, OSError):
        return False
    return True


def ensure_packages() -> None:
    """Install Debian's docker.io (dockerd, containerd, runc) and debootstrap when missing."""
    tools = ("dockerd", "debootstrap")
    missing = [p for p, tool in zip(APT_PACKAGES, tools, strict=True) if not _has(tool)]
    if not missing:
        return
    if os.geteuid() != 0:
        raise EngineError(
            f"{', '.join(missing)} missing and not root: apt-get install {' '.join(missing)}"
        )
    print(f"image-test: installing {' '.join(missing)} with apt-get", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # policy-rc.d exit 101: the package's postinst must not start a dockerd of its own.
    policy = Path("/usr/sbin/policy-rc.d")
    created = not policy.exists()
    if created:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        for cmd in (
            ["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
        ):
            result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                tail = (result.stdout + result.stderr).strip()[-2000:]
                raise EngineError(f"{' '.join(cmd[:2])} failed ({result.returncode}):\n{tail}")
    finally:
        if created:
            policy.unlink()


def _has(tool: str) -> bool:
    return shutil.which(tool) is not None or Path("/usr/sbin", tool).exists()


@contextlib.contextmanager
def engine(data_root: Path) -> Iterator[dict[str, str]]:
    """An environment whose DOCKER_HOST answers; an engine started here is stopped on exit."""
    env = dict(os.environ)
    if answers(env):
        print("image-test: using the Docker engine that answers", flush=True)
        yield env
        return
    ensure_packages()
    with tempfile.TemporaryDirectory(prefix="rpt-it-", dir="/tmp") as scratch:
        process, env = _start_any(Path(scratch), data_root)
        try:
            yield env
        finally:
            _stop(process, Path(scratch))


def _start_any(scratch: Path, data_root: Path) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    """dockerd on the first storage driver that starts; the last one's failure is the error."""
    for driver in STORAGE_DRIVERS:
        try:
            started = _start(scratch, data_root, driver)
        except EngineError as exc:
            if driver == STORAGE_DRIVERS[-1]:
                raise
            print(f"image-test: dockerd on {driver} did not start, trying the next driver:"
                  f" {str(exc).splitlines()[-1][:200]}", flush=True)  # fmt: skip
            continue
        _drop_other_drivers(data_root, driver)
        return started
    raise AssertionError("unreachable: STORAGE_DRIVERS is not empty")


def _drop_other_drivers(data_root: Path, driver: str) -> None:
    """An engine once started here on another driver left its layers: they are never used again."""
    for other in STORAGE_DRIVERS:
        if other != driver:
            for leftover in (data_root / other, data_root / "image" / other):
                if leftover.is_dir():
                    print(f"image-test: removing {leftover} (storage driver {other})", flush=True)
                    shutil.rmtree(leftover, ignore_errors=True)


def _start(
    scratch: Path, data_root: Path, driver: str
) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    data_root.mkdir(parents=True, exist_ok=True)
    socket = scratch / "docker.sock"
    log_path = scratch / "dockerd.log"
    cmd = [
        shutil.which("dockerd") or "/usr/sbin/dockerd",
        "--iptables=false",
        "--ip6tables=false",
        "--bridge=none",
        f"--storage-driver={driver}",
        f"--data-root={data_root}",
        f"--exec-root={scratch / 'exec'}",
        f"--pidfile={scratch / 'dockerd.pid'}",
        "-H",
        f"unix://{socket}",
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    env = {**os.environ, "DOCKER_HOST": f"unix://{socket}"}
    deadline = time.monotonic() + START_TIMEOUT_S
    while not answers(env):
        if process.poll() is not None or time.monotonic() > deadline:
            why = "exited" if process.poll() is not None else f"no answer in {START_TIMEOUT_S:.0f}s"
            tail = log_path.read_text(errors="replace").strip().splitlines()[-15:]
            _stop(process, scratch)
            raise EngineError(
                f"the Docker engine did not start on {driver} ({why}); last lines of dockerd's"
                " log:\n  " + "\n  ".join(tail)
            )
        time.sleep(0.5)
    print(
        f"image-test: started dockerd (pid {process.pid}, {driver}), data root {data_root}",
        flush=True,
    )
    return process, env


def _stop(process: subprocess.Popen[bytes], scratch: Path) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    # dockerd leaves its network namespace mounted; the exec root cannot go until it is gone.
    netns = scratch / "exec" / "netns" / "default"
    if os.path.ismount(netns):
        subprocess.run(["umount", str(netns)], check=False, capture_output=True)
    print(f"image-test: stopped dockerd (pid {process.pid})", flush=True)
