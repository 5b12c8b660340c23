"""A newcomer's configuration mistakes: one clear line naming the key or variable, exit 2."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from connector import cli
from connector.config.settings import settings_from_dict
from connector.errors import ConfigError

TOKEN_ENV = "RPT_TEST_NEWCOMER_TOKEN"


def minimal(**kafka: object) -> dict:
    producer = {"bootstrap.servers": "127.0.0.1:9"} | dict(kafka.pop("producer", {}))  # type: ignore[arg-type]
    return {
        "accounts": [{"name": "main", "token_env": TOKEN_ENV}],
        "kafka": {"producer": producer, **kafka},
    }


def error_for(data: dict) -> str:
    with pytest.raises(ConfigError) as caught:
        settings_from_dict(data)
    return str(caught.value)


def write_config(tmp_path: Path, producer: str, extra: str = "") -> Path:
    path = tmp_path / "connector.toml"
    path.write_text(
        f'[[accounts]]\nname = "main"\ntoken_env = "{TOKEN_ENV}"\n'
        f"[kafka]\nproducer = {{ {producer} }}\n{extra}"
        f'[spool]\ndir = "{tmp_path / "spool"}"\n',
        encoding="utf-8",
    )
    return path


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------- environment


def test_malformed_json_in_an_environment_variable_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RPT_KAFKA__PRODUCER", '{"bootstrap.servers": ')
    message = error_for(minimal())
    assert message.startswith("environment variable RPT_KAFKA__PRODUCER: not valid JSON")
    assert "\n" not in message


def test_malformed_environment_json_through_the_cli_is_one_line_and_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(TOKEN_ENV, "t")
    monkeypatch.setenv("RPT_KAFKA__PRODUCER", "{bad")
    config = write_config(tmp_path, '"bootstrap.servers" = "127.0.0.1:9"')
    for command in (["check", "--offline"], ["check"], ["run"]):
        code, out, err = run_cli([*command, "--config", str(config)], capsys)
        assert code == 2, command
        assert "Traceback" not in out + err
        assert err.strip().splitlines() == [
            "rpt-connector: environment variable RPT_KAFKA__PRODUCER: not valid JSON "
            "(Expecting property name enclosed in double quotes: line 1 column 2 (char 1))"
        ]


def test_an_unknown_key_from_the_environment_says_which_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RPT_KAFKA__TOPC", "sms.reports")
    message = error_for(minimal())
    assert "kafka.topc: unknown key; did you mean 'topic'?" in message
    assert "RPT_KAFKA__TOPC" in message


# ---------------------------------------------------------------- did you mean


@pytest.mark.parametrize(
    ("data", "line"),
    [
        (minimal(topc="x"), "kafka.topc: unknown key; did you mean 'topic'?"),
        (
            {**minimal(), "shutdown_timout": "5s"},
            "shutdown_timout: unknown key; did you mean 'shutdown_timeout'?",
        ),
        (
            {**minimal(), "accounts": [{"name": "main", "token_env": "X", "retsise": 5}]},
            "accounts[0].retsise: unknown key; did you mean 'retsize'?",
        ),
        ({**minimal(), "platform": {"bse_url": "http://x"}}, "did you mean 'base_url'?"),
    ],
)
def test_unknown_keys_get_a_did_you_mean(data: dict, line: str) -> None:
    assert line in error_for(data)


def test_an_unknown_key_like_nothing_known_points_to_the_reference() -> None:
    message = error_for(minimal(zzzzzz=1))
    assert "kafka.zzzzzz: unknown key (check the spelling" in message
    assert "did you mean" not in message


# ---------------------------------------------------------------- delivery mode


@pytest.mark.parametrize("acks", ["1", 0, "0", 1])
@pytest.mark.parametrize("delivery", ["exactly_once", "at_least_once"])
def test_acks_other_than_all_are_refused_in_both_modes(acks: object, delivery: str) -> None:
    message = error_for(minimal(delivery=delivery, producer={"acks": acks}))
    assert 'kafka.producer."acks"' in message


@pytest.mark.parametrize("acks", ["all", -1, "-1"])
def test_acks_all_is_accepted(acks: object) -> None:
    assert settings_from_dict(minimal(producer={"acks": acks})).kafka.producer["acks"] == acks


@pytest.mark.parametrize("value", [False, "false", "False", 0])
def test_idempotence_off_is_refused_under_exactly_once(value: object) -> None:
    message = error_for(minimal(producer={"enable.idempotence": value}))
    assert 'kafka.producer."enable.idempotence" = false' in message


def test_idempotence_off_is_allowed_under_at_least_once() -> None:
    data = minimal(delivery="at_least_once", producer={"enable.idempotence": False})
    assert settings_from_dict(data).kafka.delivery == "at_least_once"


def test_a_hand_set_transactional_id_is_refused() -> None:
    message = error_for(minimal(producer={"transactional.id": "mine"}))
    assert 'kafka.producer."transactional.id"' in message
    assert "kafka.transactional_id_prefix" in message


# ---------------------------------------------------------------- librdkafka properties


@pytest.mark.parametrize("offline", [True, False])
def test_check_refuses_a_property_librdkafka_does_not_know(
    offline: bool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(TOKEN_ENV, "t")
    config = write_config(tmp_path, '"bootstrap.servers" = "127.0.0.1:9", "lingerms" = 5')
    argv = ["check", "--config", str(config)] + (["--offline"] if offline else [])
    code, out, err = run_cli(argv, capsys)
    assert code == 2
    assert (
        err.strip() == 'rpt-connector: kafka.producer: No such configuration property: "lingerms"'
    )
    assert "Traceback" not in out + err


def test_run_refuses_a_bad_property_value_with_exit_2_before_starting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(TOKEN_ENV, "t")
    config = write_config(
        tmp_path, '"bootstrap.servers" = "127.0.0.1:9", "compression.type" = "zip"'
    )
    code, _out, err = run_cli(["run", "--config", str(config)], capsys)
    assert code == 2
    assert '"compression.type"' in err
    assert not (tmp_path / "spool").exists()  # nothing was started


def test_offline_check_names_a_missing_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # `run` leaves an unreadable secret to the account (exit 1 once none is left:
    # tests/integration/test_exit_codes.py); `check` names it before anything runs.
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    config = write_config(tmp_path, '"bootstrap.servers" = "127.0.0.1:9"')
    code, out, err = run_cli(["check", "--offline", "--config", str(config)], capsys)
    assert code != 0
    assert f"environment variable {TOKEN_ENV} is not set" in out + err


def test_offline_check_accepts_a_good_configuration_without_contacting_kafka(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(TOKEN_ENV, "t")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        config = write_config(
            tmp_path, f'"bootstrap.servers" = "127.0.0.1:{port}", "linger.ms" = 5'
        )
        code, out, _err = run_cli(["check", "--offline", "--config", str(config)], capsys)
        assert code == 0
        assert "producer properties accepted by librdkafka" in out
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody connected: the offline build has no broker to reach


# ---------------------------------------------------------------- help


def test_spool_without_a_subcommand_prints_the_spool_help(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _err = run_cli(["spool"], capsys)
    assert code == 2
    assert out.startswith("usage: rpt-connector spool")
    assert "inspect" in out


def test_log_options_have_help_texts(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    out = capsys.readouterr().out
    assert "overrides [log] level" in out
    assert "overrides [log] format" in out


def test_a_shared_producer_needs_exactly_once() -> None:
    message = error_for(minimal(shared_producer=True, delivery="at_least_once"))
    assert "kafka.shared_producer = true needs kafka.delivery" in message


def test_a_shared_producer_is_accepted_in_cluster_mode() -> None:
    data = minimal(shared_producer=True) | {"cluster": {"group_id": "g"}}
    settings = settings_from_dict(data)
    assert settings.kafka.shared_producer and settings.cluster.group_id == "g"


def test_a_shared_producer_is_accepted_standalone() -> None:
    assert settings_from_dict(minimal(shared_producer=True)).kafka.shared_producer is True
