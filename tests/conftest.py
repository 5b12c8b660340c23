"""Suite-wide fixtures: one real Kafka broker per session, never a mock.

Broker source, first that applies:
1. `KAFKA_BOOTSTRAP_SERVERS` from the environment (an externally managed cluster);
2. `RPT_TEST_KAFKA=testcontainers` or `=devkafka`: that one, whatever else is there;
3. testcontainers' Kafka module when a Docker engine answers AND the image
   `RPT_TEST_KAFKA_IMAGE` (default local/kafka:4.1.1, built by `make image-test`) is present:
   an engine alone never selects it, since no registry may serve an image to pull;
4. the Maven-provisioned broker from devkafka/devkafka.py (instance "default"), started if
   needed and stopped at the end only if this session started it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# --- hypothesis profiles ------------------------------------------------------------------------
# `ci`: the same examples every run (derandomized, no example database), so a red `make test`
# is red again on the next run and on every machine. `make test` always loads it; so does a
# plain pytest when CI is set. `dev` (a plain pytest): random draws, a local example database
# that replays past failures first. `fuzz` (`make fuzz`): random, many more examples.
# No profile has a deadline and `too_slow` is off: both are timings, and the machine is noisy.
_UNTIMED = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}
settings.register_profile("ci", derandomize=True, database=None, print_blob=True, **_UNTIMED)
settings.register_profile("dev", print_blob=True, **_UNTIMED)
FUZZ_EXAMPLES = int(os.environ.get("HYPOTHESIS_FUZZ_EXAMPLES", "5000"))
settings.register_profile("fuzz", max_examples=FUZZ_EXAMPLES, print_blob=True, **_UNTIMED)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE")
    or ("ci" if os.environ.get("CI", "") not in ("", "0", "false") else "dev")
)


def pytest_itemcollected(item: pytest.Item) -> None:
    """Under `fuzz`, a test's own `@settings(max_examples=N)` (which outranks any profile) is
    raised to the profile's count; its other settings stay."""
    if settings.get_current_profile_name() != "fuzz":
        return
    test = getattr(item, "obj", None)
    own = getattr(test, "_hypothesis_internal_use_settings", None)
    if own is not None and own.max_examples < FUZZ_EXAMPLES:
        test._hypothesis_internal_use_settings = settings(own, max_examples=FUZZ_EXAMPLES)


# --- brokers and markers ------------------------------------------------------------------------
TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
# Make `import devharness`, `kafka_helpers`, `devkafka` work whatever the rootdir/import mode.
for _path in (TESTS, REPO, REPO / "devkafka"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import devkafka  # noqa: E402

DOCKER_PROBE_TIMEOUT_S = 5.0


def pytest_configure(config: pytest.Config) -> None:
    # Re-registering a marker already in pyproject.toml is harmless; --strict-markers needs both.
    config.addinivalue_line(
        "markers", "integration: needs the real Kafka broker and/or the simulator over sockets"
    )
    config.addinivalue_line("markers", "chaos: stops/kills brokers or processes mid-flight")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Integration tests must never pass as "skipped": a skip there becomes a failure."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    if (
        report.skipped
        and not hasattr(report, "wasxfail")
        and item.get_closest_marker("integration") is not None
    ):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        report.outcome = "failed"
        report.longrepr = f"integration test was skipped ({reason}); integration tests must run"


KAFKA_SOURCES = ("devkafka", "testcontainers")
TEST_KAFKA_IMAGE = "local/kafka:4.1.1"  # built by `make image-test` (tools/image_test_kafka/)


def _test_kafka_image() -> str:
    return os.environ.get("RPT_TEST_KAFKA_IMAGE", "").strip() or TEST_KAFKA_IMAGE


def _docker_image_present(image: str) -> bool:
    """True when an engine answers and holds `image` (`docker image inspect`): nothing pulled."""
    if shutil.which("docker") is None:
        return False
    try:
        result = subprocess.run(
            ["docker", "image", "inspect", "--format", "{{.Id}}", image],
            capture_output=True,
            timeout=DOCKER_PROBE_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def kafka_source() -> str:
    """ "devkafka" or "testcontainers" (see the module docstring)."""
    chosen = os.environ.get("RPT_TEST_KAFKA", "").strip().lower()
    if chosen:
        if chosen not in KAFKA_SOURCES:
            raise pytest.UsageError(f"RPT_TEST_KAFKA={chosen!r}: use one of {KAFKA_SOURCES}")
        return chosen
    return "testcontainers" if _docker_image_present(_test_kafka_image()) else "devkafka"


@pytest.fixture(scope="session")
def dev_broker() -> Iterator[devkafka.Broker]:
    """The shared devkafka "default" broker; stopped at the end only if this session started it."""
    broker = devkafka.Broker(devkafka.DEFAULT_NAME)
    started_here = not broker.is_running()
    broker.start()  # raises DevKafkaError (a test error, never a skip) if it can't come up
    yield broker
    if started_here:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(request: pytest.FixtureRequest) -> Iterator[str]:
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if external:
        yield external
    elif kafka_source() == "testcontainers":
        from tc_kafka import HostNetworkKafka

        container = HostNetworkKafka(_test_kafka_image()).start()
        try:
            yield container.get_bootstrap_server()
        finally:
            container.stop()
    else:
        broker: devkafka.Broker = request.getfixturevalue("dev_broker")
        assert broker.bootstrap is not None
        yield broker.bootstrap


@pytest.fixture(params=["own-producers", "shared-producer"])
def producers(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fault test that asks for it runs twice: a transactional producer per account, and the
    instance's one shared producer (kafka.shared_producer: the accounts' batches in one
    transaction). The connector's environment (devharness.connector_env) passes it on."""
    if request.param == "shared-producer":
        monkeypatch.setenv("RPT_KAFKA__SHARED_PRODUCER", "true")
    return request.param


@pytest.fixture
def isolated_broker() -> Iterator[Callable[..., devkafka.Broker]]:
    """Factory for private, started brokers that a test may stop, kill and restart freely.

    Each gets a unique instance name; all are stopped and their data deleted afterwards.
    """
    made: list[devkafka.Broker] = []

    def make(name: str | None = None, port: int | None = None) -> devkafka.Broker:
        broker = devkafka.Broker(name or f"pytest-{uuid.uuid4().hex[:8]}", port=port)
        made.append(broker)
        broker.start()
        return broker

    yield make
    for broker in made:
        broker.wipe()
        shutil.rmtree(broker.dir, ignore_errors=True)
