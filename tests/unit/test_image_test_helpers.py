"""The image test's own judgements (tools/image_test_*.py), on listings and files made here."""

from __future__ import annotations

import json
import sys
from pathlib import Path

TOOLS = Path(__file__).resolve().parents[2] / "tools"
sys.path.insert(0, str(TOOLS))

import image_test_compose  # noqa: E402
import image_test_run  # noqa: E402


def test_a_private_spool_passes() -> None:
    listing = (
        "rpt d 700 /var/lib/rpt-connector\n"
        "rpt d 700 /var/lib/rpt-connector/main\n"
        "rpt f 600 /var/lib/rpt-connector/main/00000001.seg\n"
    )
    assert image_test_run._judge_modes(listing, "running") == []


def test_a_readable_file_or_a_foreign_owner_fails() -> None:
    listing = (
        "rpt d 755 /var/lib/rpt-connector\n"
        "root f 600 /var/lib/rpt-connector/main/x\n"
        "rpt f 644 /var/lib/rpt-connector/main/y\n"
    )
    problems = image_test_run._judge_modes(listing, "after stop")
    assert len(problems) == 3
    assert "is rpt 755, expected rpt 700" in problems[0]
    assert "is root 600" in problems[1]


def test_a_spool_without_files_fails() -> None:
    problems = image_test_run._judge_modes("rpt d 700 /var/lib/rpt-connector\n", "running")
    assert problems and "no files" in problems[0]


def test_the_override_resets_published_ports_and_keeps_the_rest(tmp_path: Path) -> None:
    ports = dict(kafka=1, controller=2, external=3, sim=4, metrics=5, prometheus=6)
    path = image_test_compose._write_override(tmp_path, ports, "k:1", "p:1")
    text = path.read_text()
    assert text.count("!reset []") == 4  # one per service run
    parsed = json.loads(text.replace("!reset []", "[]"))  # JSON is YAML but for the tag
    kafka = parsed["services"]["kafka"]
    assert kafka["network_mode"] == "host" and kafka["image"] == "k:1"
    assert kafka["environment"]["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@127.0.0.1:2"
    config = (tmp_path / "connector.toml").read_text()
    assert '"127.0.0.1:1"' in config and "http://127.0.0.1:4" in config
    assert "kafka:9092" not in config and "simulator:8080" not in config
    assert "127.0.0.1:5" in (tmp_path / "prometheus.yml").read_text()
