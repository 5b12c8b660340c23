"""Secrets, read once at start from the environment variable or file an account names.

Every error is a `ConfigError` naming the configuration key; no message holds the secret.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import SecretStr

from connector.config.settings import AccountSettings, SchemaRegistrySettings
from connector.errors import ConfigError


def read_secret(env_name: str | None, file: Path | None, key: str) -> SecretStr:
    """Read a secret from the named environment variable or file; ConfigError names `key`."""
    if env_name is not None:
        value = os.environ.get(env_name)
        if not value:
            raise ConfigError(f"{key}: environment variable {env_name} is not set or empty")
        return SecretStr(value.strip())
    if file is not None:
        try:
            value = file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{key}: cannot read {file}: {exc.strerror}") from None
        if not value:
            raise ConfigError(f"{key}: {file} is empty")
        return SecretStr(value)
    raise ConfigError(f"{key}: no secret configured")


def account_token(account: AccountSettings, index: int) -> SecretStr:
    """The static token of an account (accounts without login)."""
    key = f"accounts[{index}].{'token_env' if account.token_env else 'token_file'}"
    return read_secret(account.token_env, account.token_file, key)


def account_secret(account: AccountSettings, index: int) -> SecretStr:
    """The login secret of an account that logs in with uuid + secret."""
    key = f"accounts[{index}].{'secret_env' if account.secret_env else 'secret_file'}"
    return read_secret(account.secret_env, account.secret_file, key)


def registry_password(registry: SchemaRegistrySettings) -> SecretStr | None:
    if registry.password_env is None and registry.password_file is None:
        return None
    key = "schema_registry." + ("password_env" if registry.password_env else "password_file")
    return read_secret(registry.password_env, registry.password_file, key)
