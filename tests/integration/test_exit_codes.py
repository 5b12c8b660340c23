"""What `rpt-connector run` exits with: the README's exit-code table is the contract.

0 a clean stop; 1 accounts failed or none could start; 2 configuration; 130 a second signal.
Each start failure is a real process against the real broker and simulator, and must end by
itself, say what was wrong, and never exit 0 (a supervisor would take that for success).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from harness import (
    TOKEN,
    ConnectorProcess,
    Endpoints,
    SimulatorProcess,
    Topics,
    connector_env,
    free_port,
    stop_everything,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.integration

EXIT_TIMEOUT_S = 120  # generous: a failure at start must end the process, not hang it


@contextlib.contextmanager
def unwritable_directory(path: Path) -> Iterator[Path]:
    """A directory this process cannot write to, even as root (a read-only tmpfs mount)."""
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o500)
        yield path
        path.chmod(0o700)
        return
    mount = ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)]
    subprocess.run(mount, check=True, capture_output=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False, capture_output=True)


def swap(config: str, key: str, old: str, new: str) -> str:
    """`config` with the line `"key" = old` (as write_config writes it) replaced by `new`;
    a key that is not there fails the test instead of leaving the config unchanged."""
    line = f'"{key}" = {old}'
    assert line in config, f"{line} not in the test's config"
    return config.replace(line, new, 1)


def closed_port() -> int:
    return free_port()  # nothing listens there once free_port's probe socket is closed


def token_file_missing(tmp_path: Path, config: str) -> tuple[str, str]:
    path = tmp_path / "no-such-token"
    return swap(config, "token_env", '"RPT_TEST_TOKEN_MAIN"', f'token_file = "{path}"'), str(path)


def token_file_is_a_directory(tmp_path: Path, config: str) -> tuple[str, str]:
    path = tmp_path / "token-dir"
    path.mkdir()
    return swap(config, "token_env", '"RPT_TEST_TOKEN_MAIN"', f'token_file = "{path}"'), str(path)


def spool_is_a_file(tmp_path: Path, config: str) -> tuple[str, str]:
    path = tmp_path / "spool-file"
    path.write_text("not a directory\n")
    return swap(config, "dir", f'"{tmp_path / "spool"}"', f'dir = "{path}"'), str(path)


def registry_unreachable(_tmp_path: Path, config: str) -> tuple[str, str]:
    url = f"http://127.0.0.1:{closed_port()}"
    config = swap(
        config,
        "delivery",
        '"exactly_once"',
        'delivery = "exactly_once"\nvalue_format = "confluent"',
    )
    return f'{config}\n[schema_registry]\nurl = "{url}"\n', "127.0.0.1"


START_FAILURES: dict[str, Callable[[Path, str], tuple[str, str]]] = {
    "token_file_missing": token_file_missing,
    "token_file_is_a_directory": token_file_is_a_directory,
    "spool_is_a_file": spool_is_a_file,
    "registry_unreachable": registry_unreachable,
}


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[SimulatorProcess]:
    running = SimulatorProcess(["--token", f"main={TOKEN}", "--rate", "50"]).start()
    yield running
    running.stop()


def base_config(tmp_path: Path, simulator: SimulatorProcess, bootstrap: str) -> Path:
    return write_config(
        tmp_path / "c.toml",
        base_url=simulator.base_url,
        bootstrap=bootstrap,
        topics=Topics.fresh(),
        spool=tmp_path / "spool",
    )


def run_to_exit(config: Path, tmp_path: Path) -> tuple[int, str]:
    env = connector_env() | {"RPT_METRICS__LISTEN": f"127.0.0.1:{free_port()}"}
    connector = ConnectorProcess(config, tmp_path / "connector.log", env=env).start()
    try:
        code = connector.process.wait(EXIT_TIMEOUT_S)
    finally:
        if connector.alive():
            connector.kill()
    return code, connector.output()


@pytest.mark.parametrize("failure", sorted(START_FAILURES))
def test_a_start_failure_exits_1_and_says_what_was_wrong(
    failure: str, simulator: SimulatorProcess, kafka_bootstrap: str, tmp_path: Path
) -> None:
    config = base_config(tmp_path, simulator, kafka_bootstrap)
    text, named = START_FAILURES[failure](tmp_path, config.read_text())
    config.write_text(text)
    code, output = run_to_exit(config, tmp_path)
    assert code == 1, f"exit {code}\n{output[-3000:]}"
    assert named in output, output[-3000:]


def test_an_unwritable_spool_directory_exits_1(
    simulator: SimulatorProcess, kafka_bootstrap: str, tmp_path: Path
) -> None:
    with unwritable_directory(tmp_path / "read-only") as spool:
        config = write_config(
            tmp_path / "c.toml",
            base_url=simulator.base_url,
            bootstrap=kafka_bootstrap,
            topics=Topics.fresh(),
            spool=spool,
        )
        code, output = run_to_exit(config, tmp_path)
    assert code == 1, f"exit {code}\n{output[-3000:]}"
    assert str(spool) in output, output[-3000:]


def test_a_configuration_error_exits_2_naming_the_key(
    simulator: SimulatorProcess, kafka_bootstrap: str, tmp_path: Path
) -> None:
    config = base_config(tmp_path, simulator, kafka_bootstrap)
    config.write_text(
        swap(config.read_text(), "commit_interval", '"200ms"', 'comit_interval = "200ms"')
    )
    code, output = run_to_exit(config, tmp_path)
    assert code == 2, f"exit {code}\n{output[-3000:]}"
    assert "comit_interval" in output, output


def test_sigterm_is_a_clean_stop_with_exit_0(
    simulator: SimulatorProcess, kafka_bootstrap: str, tmp_path: Path
) -> None:
    config = base_config(tmp_path, simulator, kafka_bootstrap)
    port = free_port()
    env = connector_env() | {"RPT_METRICS__LISTEN": f"127.0.0.1:{port}"}
    connector = ConnectorProcess(config, tmp_path / "connector.log", env=env).start()
    endpoints = Endpoints(f"http://127.0.0.1:{port}")
    try:
        wait_until(endpoints.answers, 60, "the status endpoint")
        wait_until(
            lambda: (endpoints.status()["accounts"]["main"]["committed_sequence"] or 0) > 2,
            90,
            "a few commits",
        )
        connector.process.send_signal(signal.SIGTERM)
        assert connector.process.wait(60) == 0, connector.output()[-3000:]
    finally:
        stop_everything(connector, simulator)


def test_a_second_signal_during_shutdown_exits_130_at_once(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    # Every get-rpt answer takes 3 s, so the first SIGTERM's stop waits for the call in flight
    # and the second signal surely arrives while the connector is still stopping.
    slow = SimulatorProcess(["--token", f"main={TOKEN}", "--rate", "50", "--latency", "3"]).start()
    config = base_config(tmp_path, slow, kafka_bootstrap)
    port = free_port()
    env = connector_env() | {"RPT_METRICS__LISTEN": f"127.0.0.1:{port}"}
    connector = ConnectorProcess(config, tmp_path / "connector.log", env=env).start()
    endpoints = Endpoints(f"http://127.0.0.1:{port}")
    try:
        wait_until(endpoints.answers, 60, "the status endpoint")
        wait_until(lambda: slow.stats()["faults"]["requests"] > 1, 60, "get-rpt calls")
        connector.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        connector.process.send_signal(signal.SIGTERM)
        assert connector.process.wait(30) == 130, connector.output()[-3000:]
    finally:
        stop_everything(connector, slow)
