"""One process harness for the tests, `bench/` and `tools/demo.py`: the real simulator and the
real connector as subprocesses, their configuration, a real Kafka broker, and the
exactly-once verdict against the simulator's record of what it handed out.

A top-level folder, like devkafka/ and devregistry/, and not part of the installed package (it
never ships in the image). Entry points put the repository root on `sys.path` (pytest through
tests/conftest.py, `bench/run.py` and `tools/demo.py` themselves), so nothing extra is installed.
Importing it also makes `import devkafka` work: the broker launcher lives in devkafka/.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO / "devkafka") not in sys.path:
    sys.path.insert(0, str(REPO / "devkafka"))

from devharness.config import (  # noqa: E402
    TOKEN,
    Topics,
    cluster_section,
    connector_env,
    token_args,
    write_config,
)
from devharness.endpoints import Endpoints  # noqa: E402
from devharness.kafka import ConsumedRecord, consume_all, delete_topics  # noqa: E402
from devharness.processes import (  # noqa: E402
    ConnectorProcess,
    SimulatorProcess,
    stop_everything,
    stop_process,
    wait_until,
)
from devharness.verdict import (  # noqa: E402
    Verdict,
    assert_exactly_once,
    drain_exactly_once,
    ground_truth,
    verify,
)
from devkafka import Broker, free_port  # noqa: E402

__all__ = [
    "REPO",
    "TOKEN",
    "Broker",
    "ConnectorProcess",
    "ConsumedRecord",
    "Endpoints",
    "SimulatorProcess",
    "Topics",
    "Verdict",
    "assert_exactly_once",
    "cluster_section",
    "connector_env",
    "consume_all",
    "delete_topics",
    "drain_exactly_once",
    "free_port",
    "ground_truth",
    "stop_everything",
    "stop_process",
    "token_args",
    "verify",
    "wait_until",
    "write_config",
]
