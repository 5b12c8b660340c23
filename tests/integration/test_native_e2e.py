"""End to end with the native hot path on and off: the same ground truth, exactly once.

The simulator hands out 20,000 reports, 1 % of them malformed (rejected by the Python
normalizer in the native path's place); the connector process says which paths it took:
the native encoder and native produce, the encoder alone (RPT_NATIVE_PRODUCE=0), neither.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import ConnectorProcess, Topics, connector_env, stop_everything
from test_pipeline_e2e import assert_exactly_once, config_for, drain_and_stop, start_simulator

from connector.codec import native

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(native.rpt_native is None, reason="rpt_native is not built"),
]


@pytest.mark.parametrize(
    ("switches", "said"),
    [
        ({"RPT_NATIVE": "1"}, ["native hot path on", "native produce on"]),
        ({"RPT_NATIVE_PRODUCE": "0"},
         ["native hot path on", "native produce off (RPT_NATIVE_PRODUCE=0)"]),
        ({"RPT_NATIVE": "0"},
         ["native hot path off (RPT_NATIVE=0)", "native produce off (RPT_NATIVE=0)"]),
    ],
    ids=["native", "native-encoder-only", "python"],
)  # fmt: skip
def test_every_report_exactly_once_on_either_path(
    kafka_bootstrap: str, tmp_path: Path, switches: dict, said: list[str]
) -> None:
    topics = Topics.fresh()
    simulator = start_simulator(tmp_path, "--reports", "20000", "--malformed-rate", "0.01")
    config = config_for(simulator, kafka_bootstrap, topics, tmp_path)
    env = {**connector_env(), **switches}
    connector = ConnectorProcess(config, tmp_path / "connector.log", env).start()
    try:
        drain_and_stop(connector, simulator)
    finally:
        stop_everything(connector, simulator)
    for line in said:
        assert line in connector.output(), line
    assert_exactly_once(kafka_bootstrap, topics, tmp_path)
