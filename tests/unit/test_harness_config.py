"""The process harness's config writer: what it writes is what the connector reads."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import TOKEN, Topics, connector_env, token_args, write_config

from connector.config.settings import load_settings


def write(tmp_path: Path, **kwargs: object) -> Path:
    return write_config(
        tmp_path / "c.toml",
        base_url="http://127.0.0.1:1",
        bootstrap="127.0.0.1:2",
        topics=Topics("t", "t.dlq", "t.progress"),
        spool=tmp_path / 'spool dir "quoted"',
        **kwargs,
    )


def test_the_defaults_are_the_tests_fast_settings(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path))
    assert settings.platform.base_url == "http://127.0.0.1:1"
    assert settings.platform.poll_interval == pytest.approx(0.1)
    assert settings.platform.read_timeout == pytest.approx(3.0)
    assert settings.kafka.topic == "t"
    assert (settings.kafka.dlq_topic, settings.kafka.progress_topic) == ("t.dlq", "t.progress")
    assert settings.kafka.delivery == "exactly_once"
    assert settings.kafka.commit_interval == pytest.approx(0.2)
    assert settings.kafka.producer == {"bootstrap.servers": "127.0.0.1:2"}
    assert Path(settings.spool.dir) == tmp_path / 'spool dir "quoted"'
    assert [a.name for a in settings.accounts] == ["main"]


def test_overrides_change_only_their_keys_and_extra_is_appended(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        delivery="at_least_once",
        accounts=("a1", "a2"),
        overrides={
            "platform": {"read_timeout": "10s"},
            "kafka": {"max_batch_records": 123, "topic_partitions": 6},
            "spool": {"fsync": False},
        },
        extra='\n[cluster]\ngroup_id = "g"\n',
    )
    settings = load_settings(path)
    assert settings.platform.read_timeout == pytest.approx(10.0)
    assert settings.platform.poll_interval == pytest.approx(0.1)
    assert (settings.kafka.max_batch_records, settings.kafka.topic_partitions) == (123, 6)
    assert settings.kafka.delivery == "at_least_once"
    assert settings.spool.fsync is False
    assert settings.cluster.group_id == "g"
    assert [a.name for a in settings.accounts] == ["a1", "a2"]


def test_each_account_reads_its_token_from_the_variable_connector_env_sets(
    tmp_path: Path,
) -> None:
    settings = load_settings(write(tmp_path, accounts=("main", "other")))
    env = connector_env({"main": TOKEN, "other": "tok-2"})
    assert [env[a.token_env] for a in settings.accounts] == [TOKEN, "tok-2"]
    assert token_args({"main": TOKEN}) == ["--token", f"main={TOKEN}"]


def test_a_value_toml_cannot_hold_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"\[1, 2\]"):
        write(tmp_path, overrides={"kafka": {"topic_partitions": [1, 2]}})


def test_fresh_topics_never_repeat() -> None:
    first, second = Topics.fresh("x"), Topics.fresh("x")
    assert first.data != second.data
    assert first.all() == [first.data, f"{first.data}.dlq", f"{first.data}.progress"]
