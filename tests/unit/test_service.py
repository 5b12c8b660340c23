"""`Service.run` exit codes, in-process: the topic check is faked, nothing talks to Kafka."""

from __future__ import annotations

import os
import signal
import threading
import time

from connector.config.settings import settings_from_dict
from connector.errors import ConfigError, KafkaUnreachableError
from connector.kafka.shared_publisher import SharedPublisher
from connector.pipeline import AccountPipeline
from connector.service import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, Service


def settings(tmp_path, **account):
    return settings_from_dict(
        {
            "accounts": [{"name": "a1", **account}],
            "kafka": {"producer": {"bootstrap.servers": "127.0.0.1:1"}},
            "spool": {"dir": str(tmp_path / "spool")},
            "metrics": {"enabled": False},
            "platform": {"request_timeout": "2s"},
            "shutdown_timeout": "5s",
        }
    )


def test_an_account_that_cannot_start_makes_exit_code_1(tmp_path) -> None:
    config = settings(tmp_path, token_file=str(tmp_path / "missing-token"))
    service = Service(config, {}, topics=lambda *a, **k: None)
    assert service.run() == EXIT_FAILURE
    assert "a1" in service.failed and "missing-token" in service.failed["a1"]


def test_a_configuration_error_at_start_is_exit_code_2(tmp_path) -> None:
    def refuse(*_args, **_kwargs):
        raise ConfigError("cluster.control_topic has 3 partitions but 6 accounts")

    config = settings(tmp_path, token_env="RPT_TEST_TOKEN")
    assert Service(config, {}, topics=refuse).run() == EXIT_CONFIG


def test_a_signal_while_waiting_for_kafka_is_a_clean_stop(tmp_path) -> None:
    calls: list[float] = []

    def unreachable(*_args, **_kwargs):
        calls.append(time.monotonic())
        raise KafkaUnreachableError("cannot reach Kafka at 127.0.0.1:1")

    config = settings(tmp_path, token_env="RPT_TEST_TOKEN")
    service = Service(config, {}, topics=unreachable)
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        assert service.run() == EXIT_OK
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    assert calls  # it was waiting for Kafka when the signal came


def test_a_bad_spool_fail_point_is_a_configuration_error(tmp_path) -> None:
    config = settings(tmp_path, token_env="RPT_TEST_TOKEN")
    try:
        Service(config, {"RPT_FAILPOINT_SPOOL": "no-such-point"})
    except ConfigError as exc:
        assert "RPT_FAILPOINT_SPOOL" in str(exc)
    else:
        raise AssertionError("accepted an unknown fail point")


def test_one_fetch_pool_of_platform_fetch_threads_serves_every_account(
    tmp_path, monkeypatch
) -> None:
    data = {
        "accounts": [{"name": f"a{n}", "token_env": "RPT_TEST_TOKEN"} for n in range(3)],
        "kafka": {"producer": {"bootstrap.servers": "127.0.0.1:1"}},
        "spool": {"dir": str(tmp_path / "spool")},
        "metrics": {"enabled": False},
        "platform": {"fetch_threads": 2},
    }
    monkeypatch.setenv("RPT_TEST_TOKEN", "t")
    monkeypatch.setattr(AccountPipeline, "start", lambda self: None)  # nothing talks to Kafka
    service = Service(settings_from_dict(data), {}, topics=lambda *a, **k: None)
    service._own(["a0", "a1", "a2"])
    pools = {id(p.parts.fetch_pool) for p in service.pipelines.values()}
    assert pools == {id(service.shared.fetch_pool)} and service.shared.fetch_pool.size == 2
    assert service._shutdown() == EXIT_OK
    try:
        service.shared.fetch_pool.submit("late", lambda: None, lambda: None)
    except RuntimeError:
        pass  # closed at shutdown
    else:
        raise AssertionError("the fetch pool was not closed at shutdown")


def test_accounts_share_one_watchdog_and_with_a_shared_producer_one_committer(
    tmp_path, monkeypatch
) -> None:
    data = {
        "accounts": [{"name": f"a{n}", "token_env": "RPT_TEST_TOKEN"} for n in range(3)],
        "kafka": {"producer": {"bootstrap.servers": "127.0.0.1:1"}, "shared_producer": True},
        "spool": {"dir": str(tmp_path / "spool")},
        "metrics": {"enabled": False},
    }
    monkeypatch.setenv("RPT_TEST_TOKEN", "t")
    monkeypatch.setattr(AccountPipeline, "start", lambda self: None)  # nothing talks to Kafka
    service = Service(settings_from_dict(data), {}, topics=lambda *a, **k: None)
    service._own(["a0", "a1", "a2"])
    pipelines = service.pipelines.values()
    assert {id(p.parts.client._watch.alarm) for p in pipelines} == {id(service.shared.alarm)}
    publishers = [p.parts.new_publisher(threading.Event()) for p in pipelines]
    assert all(isinstance(pub, SharedPublisher) for pub in publishers)
    assert {id(pub._committer) for pub in publishers} == {id(service.shared.committer)}
    assert service.shared.committer.transactional_id.startswith("rpt-connector-instance-")
    assert service._shutdown() == EXIT_OK
