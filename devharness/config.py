"""The connector's configuration file for a harness run, and the environment it reads tokens from.

One writer for every caller: the defaults are the tests' (short poll and commit intervals, quick
retries); bench and demo change what they need through `overrides`, section by section.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

TOKEN = "test-token-7d1f"  # noqa: S105 - the simulator's static token for harness accounts


@dataclass(frozen=True)
class Topics:
    data: str
    dlq: str
    progress: str

    @classmethod
    def fresh(cls, prefix: str = "rpt") -> Topics:
        """Topics no earlier run used: an old progress record must never meet a new spool."""
        tag = uuid.uuid4().hex[:10]
        return cls(f"{prefix}-{tag}", f"{prefix}-{tag}.dlq", f"{prefix}-{tag}.progress")

    def all(self) -> list[str]:
        return [self.data, self.dlq, self.progress]


def token_env_name(account: str) -> str:
    return f"RPT_TEST_TOKEN_{account.upper()}"


def connector_env(accounts: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment plus each account's token where `write_config` points it."""
    env = dict(os.environ)
    for name, token in (accounts or {"main": TOKEN}).items():
        env[token_env_name(name)] = token
    return env


def token_args(accounts: dict[str, str]) -> list[str]:
    """The simulator's `--token NAME=TOKEN` arguments for these accounts."""
    return [arg for name, token in accounts.items() for arg in ("--token", f"{name}={token}")]


def cluster_section(topics: Topics, session_timeout_s: float) -> str:
    """A `[cluster]` section for `write_config(extra=...)`: one group per test's topics."""
    return f"""
[cluster]
group_id = "g-{topics.data}"
control_topic = "{topics.data}.control"
session_timeout = "{session_timeout_s}s"
"""


def write_config(
    path: Path,
    *,
    base_url: str,
    bootstrap: str,
    topics: Topics,
    spool: Path,
    delivery: str = "exactly_once",
    extra: str = "",
    accounts: tuple[str, ...] = ("main",),
    overrides: dict[str, dict[str, object]] | None = None,
) -> Path:
    """Write a connector config to `path`; `overrides` adds or replaces keys per section
    (e.g. `{"kafka": {"max_batch_records": 20000}}`); `extra` is raw TOML appended at the end."""
    sections: dict[str, dict[str, object]] = {
        "platform": {
            "base_url": base_url,
            "poll_interval": "100ms",
            "min_request_interval": 0,
            "read_timeout": "3s",
            "backoff_initial": "100ms",
            "backoff_max": "1s",
        },
        "kafka": {
            "topic": topics.data,
            "dlq_topic": topics.dlq,
            "progress_topic": topics.progress,
            "delivery": delivery,
            "commit_interval": "200ms",
            "transactional_id_prefix": f"{topics.data}-",
            "topic_partitions": 3,
        },
        "kafka.producer": {"bootstrap.servers": bootstrap},
        "spool": {"dir": str(spool)},
        "metrics": {"listen": "127.0.0.1:0"},
    }
    for section, values in (overrides or {}).items():
        sections.setdefault(section, {}).update(values)
    account_tables = "".join(
        f"[[accounts]]\n{_pairs({'name': name, 'token_env': token_env_name(name)})}\n"
        for name in accounts
    )
    tables = "".join(f"[{name}]\n{_pairs(values)}\n" for name, values in sections.items())
    path.write_text(account_tables + tables + extra, encoding="utf-8")
    return path


def _pairs(values: dict[str, object]) -> str:
    return "".join(f"{json.dumps(key)} = {_toml_value(value)}\n" for key, value in values.items())


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value))  # a JSON string is a valid TOML basic string
    raise TypeError(f"no TOML form for {value!r} in the harness config writer")
