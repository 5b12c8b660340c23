"""Configuration: every class of mistake gets a message that names the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector.config.secrets import account_secret, account_token
from connector.config.settings import load_settings, settings_from_dict
from connector.config.units import parse_duration, parse_size
from connector.errors import ConfigError

MINIMAL = {
    "accounts": [{"name": "main", "token_env": "FINOVY_TEST_TOKEN"}],
    "kafka": {"producer": {"bootstrap.servers": "127.0.0.1:9092"}},
}


def with_changes(**sections: dict) -> dict:
    data = {
        key: dict(value) if isinstance(value, dict) else value for key, value in MINIMAL.items()
    }
    for section, values in sections.items():
        data[section] = {**data.get(section, {}), **values} if isinstance(values, dict) else values
    return data


def error_for(data: dict) -> str:
    with pytest.raises(ConfigError) as caught:
        settings_from_dict(data)
    return str(caught.value)


def test_minimal_configuration_gets_documented_defaults() -> None:
    settings = settings_from_dict(MINIMAL)
    assert settings.platform.path == "/client-sms/v2/sms/get-rpt"
    assert settings.platform.method == "POST"
    assert settings.platform.retsize == 500
    assert settings.platform.poll_interval == 5.0
    assert settings.platform.fetch_threads == 16
    assert settings.platform.timezone == "Asia/Shanghai"
    assert settings.kafka.delivery == "exactly_once"
    assert settings.kafka.value_format == "avro-single-object"
    assert settings.spool.max_bytes == 2**30


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("200ms", 0.2), ("5s", 5.0), ("2m", 120.0), ("1h", 3600.0), (7, 7.0), ("1.5", 1.5)],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "size"), [("64MiB", 64 * 2**20), ("1GiB", 2**30), ("10MB", 10**7), (512, 512)]
)
def test_sizes(text: object, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (with_changes(platform={"retsize": 501}), "platform.retsize"),
        (with_changes(platform={"retsize": 0}), "platform.retsize"),
        (with_changes(platform={"fetch_threads": 0}), "platform.fetch_threads"),
        (with_changes(platform={"fetch_threads": "many"}), "platform.fetch_threads"),
        (with_changes(platform={"fetch_threads": 2.5}), "platform.fetch_threads"),
        (with_changes(platform={"poll_interval": "5 parsecs"}), "platform.poll_interval"),
        (with_changes(platform={"method": "PUT"}), "platform.method"),
        (with_changes(platform={"timezone": "Mars/Olympus"}), "platform.timezone"),
        (with_changes(platform={"base_url": "client.example.com"}), "platform.base_url"),
        (with_changes(platform={"path": "get-rpt"}), "platform.path"),
        (with_changes(kafka={"delivery": "exactly-once"}), "kafka.delivery"),
        (with_changes(kafka={"topci": "x"}), "kafka.topci: unknown key"),
        (
            with_changes(kafka={"producer": {}}),
            'kafka: Value error, kafka.producer needs "bootstrap',
        ),
        (with_changes(spool={"max_bytes": "lots"}), "spool.max_bytes"),
        (
            with_changes(spool={"max_bytes": "1MiB"}, platform={"max_response_bytes": "2MiB"}),
            "spool.max_bytes (1048576) must exceed platform.max_response_bytes (2097152)",
        ),
        (
            with_changes(
                kafka={"producer": {"bootstrap.servers": "x", "message.timeout.ms": 90_000}}
            ),
            "message.timeout.ms (90000) must be below transaction.timeout.ms (60000)",
        ),
        (with_changes(metrics={"listen": "9108"}), "metrics.listen"),
        (with_changes(accounts=[]), "accounts"),
        (with_changes(accounts=[{"name": "a"}]), "accounts[0]: set exactly one of"),
        (with_changes(accounts=[{"name": "bad name", "token_env": "T"}]), "accounts[0].name"),
        (
            with_changes(accounts=[{"name": "a", "secret_env": "S"}]),
            "accounts[0]: uuid is required",
        ),
        (
            with_changes(
                accounts=[{"name": "a", "token_env": "T"}, {"name": "a", "token_env": "U"}]
            ),
            "repeated: a",
        ),
        (with_changes(kafka={"value_format": "confluent"}), "[schema_registry]"),
        ({"kafka": MINIMAL["kafka"]}, "accounts: required key is missing"),
    ],
)
def test_each_mistake_names_its_key(data: dict, expected: str) -> None:
    message = error_for(data)
    assert expected.replace("Value error, ", "") in message


def test_environment_overrides_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RPT_KAFKA__TOPIC", "from-env")
    monkeypatch.setenv("RPT_PLATFORM__RETSIZE", "200")
    settings = settings_from_dict(MINIMAL)
    assert settings.kafka.topic == "from-env"
    assert settings.platform.retsize == 200
    assert settings.kafka.producer["bootstrap.servers"] == "127.0.0.1:9092"


def test_fetch_threads_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RPT_PLATFORM__FETCH_THREADS", "4")
    assert settings_from_dict(MINIMAL).platform.fetch_threads == 4
    monkeypatch.setenv("RPT_PLATFORM__FETCH_THREADS", "0")
    assert "platform.fetch_threads" in error_for(MINIMAL)


def test_bad_environment_override_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RPT_PLATFORM__RETSIZE", "9999")
    assert "platform.retsize" in error_for(MINIMAL)


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "absent.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[kafka\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(broken)


def test_secrets_come_from_env_or_file_and_stay_masked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FINOVY_TEST_TOKEN", "tok-123\n")
    settings = settings_from_dict(MINIMAL)
    token = account_token(settings.accounts[0], 0)
    assert token.get_secret_value() == "tok-123"
    assert "tok-123" not in repr(token) and "tok-123" not in str(token)

    secret_file = tmp_path / "secret"
    secret_file.write_text("s3cr3t\n")
    login = with_changes(accounts=[{"name": "l", "uuid": "u-1", "secret_file": str(secret_file)}])
    account = settings_from_dict(login).accounts[0]
    assert account.uses_login
    assert account_secret(account, 0).get_secret_value() == "s3cr3t"


def test_missing_secret_names_the_key_and_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FINOVY_TEST_TOKEN", raising=False)
    settings = settings_from_dict(MINIMAL)
    with pytest.raises(ConfigError, match=r"accounts\[0\]\.token_env: .*FINOVY_TEST_TOKEN"):
        account_token(settings.accounts[0], 0)
