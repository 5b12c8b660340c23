"""`make image-test`: build the project's image and prove it in a container against real peers.

Steps: a Docker engine (the one that answers, else one started here and stopped after); the base
image (pulled, else made with debootstrap, cached); `docker build` of the Dockerfile; then the
image runs (host network: the started engine has no bridge) against the simulator and a devkafka
broker on this host, and must be healthy (its HEALTHCHECK), publish every report exactly once
(counted against the simulator's --record), log only JSON lines, keep its spool owned by the
image's user with modes 0700/0600, and exit 0 within shutdown_timeout after SIGTERM. Then the
compose stack (tools/image_test_compose.py) and the suite's testcontainers path on the local
Kafka image, unless --no-compose. Prints build and run times and
the image size. Exit 0 when every check held, 1 when one failed, 2 when the engine cannot start.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

TOOLS = Path(__file__).resolve().parent
REPO = TOOLS.parent
for _path in (TOOLS, REPO, REPO / "devkafka"):  # REPO: the devharness package
    sys.path.insert(0, str(_path))

import image_test_images as images  # noqa: E402
from image_test_compose import Stack, compose_check, compose_command  # noqa: E402
from image_test_engine import EngineError, docker, engine  # noqa: E402
from image_test_run import ContainerRun  # noqa: E402

IMAGE = "rpt-connector:image-test"
BUILD_STAGES = ("native", "build")  # the Dockerfile's stages before the runtime one
DEFAULT_CACHE = Path.home() / ".cache" / "rpt-connector" / "image-test"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    cache = Path(args.cache)
    started = time.monotonic()
    try:
        with engine(cache / "docker-data") as env, ThreadPoolExecutor(2) as pool:
            figures: dict[str, str] = {}
            failures = _checks(cache, env, args, pool, figures)
            figures["engine after prune"] = images.prune(env)
    except EngineError as exc:
        print(f"image-test: FAIL {exc}", file=sys.stderr)
        return 2
    figures["cache"] = _size(cache)
    figures["total"] = f"{time.monotonic() - started:.0f}s"
    print("image-test figures: " + ", ".join(f"{k} {v}" for k, v in figures.items()))
    for failure in failures:
        print(f"image-test: FAIL {failure}", file=sys.stderr)
    print("image-test: " + ("FAILED" if failures else "all checks passed"))
    return 1 if failures else 0


def _checks(
    cache: Path, env: dict[str, str], args: argparse.Namespace, pool: Executor, figures: dict
) -> list[str]:
    """The steps, overlapped where one waits on the network or the disk while another computes.

    Cold, compose v2's Go build (downloads, then compiling) starts at once, next to the base
    image's debootstrap; the Kafka and Prometheus images (apt downloads, layer writes) build
    while the connector's image does (pip downloads, compiling Rust).
    """
    compose = None if args.no_compose else pool.submit(_timed, compose_command, cache, env)
    base = _timed(images.python_base, cache, env)
    figures["base image"] = f"{base.value} ({base.seconds:.0f}s)"
    side = None if args.no_compose else pool.submit(_timed, _side_images, base.value, env)
    failures = _build(env, base.value, figures)
    failures += ContainerRun(IMAGE, env, reports=args.reports).check(figures)
    if compose is None or side is None:
        return failures
    built, made = compose.result(), side.result()
    figures["compose v2"] = f"{built.seconds:.0f}s"
    figures["kafka+prometheus images"] = f"{made.seconds:.0f}s"
    stack = Stack(built.value, *made.value)
    failures += compose_check(cache, env, IMAGE, figures, stack)
    return failures + _testcontainers(env, figures)


class Timed(NamedTuple):
    value: Any
    seconds: float


def _timed(step: Callable[..., Any], *args: Any) -> Timed:
    started = time.monotonic()
    return Timed(step(*args), time.monotonic() - started)


def _side_images(base: str, env: dict[str, str]) -> tuple[str, str]:
    return images.kafka_image(base, env), images.prometheus_image(base, env)


def _build(env: dict[str, str], base: str, figures: dict[str, str]) -> list[str]:
    args = {"PYTHON_IMAGE": base, "APT_MIRROR": images.apt_mirror(base)}
    seconds = 0.0
    # The build stages tagged too: untagged, prune() would take them (they inherit the base's
    # label) and with them the layer cache that spares a warm run the Rust build.
    for stage in BUILD_STAGES:
        seconds += images.build(f"{IMAGE}-{stage}", REPO, env, target=stage, **args)
    seconds += images.build(IMAGE, REPO, env, **args)
    figures["docker build"] = f"{seconds:.0f}s"
    figures["image size"] = f"{images.size_mb(IMAGE, env):.0f} MB"
    user = docker("image", "inspect", "--format", "{{.Config.User}}", IMAGE, env=env).strip()
    figures["image user"] = user
    print(f"image-test: built {IMAGE} in {seconds:.0f}s, {figures['image size']}", flush=True)
    return _no_toolchain(env)


def _no_toolchain(env: dict[str, str]) -> list[str]:
    """The Rust toolchain and the C compiler stay in the build stage."""
    found = docker(
        "run", "--rm", "--network", "none", "--entrypoint", "sh", IMAGE, "-c",
        "for t in cargo rustc cc gcc maturin; do command -v $t; done; true", env=env,
    ).split()  # fmt: skip
    return [f"the image holds build tools: {found}"] if found else []


def _size(path: Path) -> str:
    result = subprocess.run(["du", "-sh", str(path)], capture_output=True, text=True)
    return result.stdout.split()[0] if result.returncode == 0 else "?"


def _testcontainers(env: dict[str, str], figures: dict[str, str]) -> list[str]:
    """The suite's testcontainers path for real: broker tests on the local Kafka image."""
    started = time.monotonic()
    tests = "tests/integration/test_broker.py"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", tests, "-q", "-p", "no:cacheprovider",
         "-k", "read_committed or round_trip"],
        cwd=REPO, env={**env, "RPT_TEST_KAFKA": "testcontainers",
                       "RPT_TEST_KAFKA_IMAGE": images.KAFKA_IMAGE},
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    summary = (result.stdout.strip().splitlines() or ["no output"])[-1]
    figures["testcontainers"] = f"{summary} ({time.monotonic() - started:.0f}s)"
    if result.returncode != 0:
        return [f"testcontainers ({tests}): {(result.stdout + result.stderr)[-2000:]}"]
    return []


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="image_test.py", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cache",
        default=os.environ.get("RPT_IMAGE_TEST_CACHE", str(DEFAULT_CACHE)),
        help="engine data root and bootstrapped base images (default %(default)s; "
        "env RPT_IMAGE_TEST_CACHE)",
    )
    parser.add_argument("--reports", type=int, default=3000, help="reports the simulator holds")
    parser.add_argument("--no-compose", action="store_true", help="skip the compose stack")
    return parser


if __name__ == "__main__":
    sys.exit(main())
