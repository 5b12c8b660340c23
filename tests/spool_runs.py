"""Steps shared by the spool's real-process tests (disk faults, renumbering crashes).

Each test runs the real connector against the real simulator (its `--record` file is the
ground truth) and a real broker, then counts every report in the topic (read_committed).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness import TOKEN, SimulatorProcess, Topics, ground_truth, verify, write_config


@dataclass(frozen=True)
class Count:
    handed_out: int
    lost: int
    duplicated: int
    dead_letters: int

    def __str__(self) -> str:
        return (
            f"{self.handed_out} reports handed out, {self.lost} lost, "
            f"{self.duplicated} duplicated, {self.dead_letters} dead letters"
        )


def start_simulator(tmp_path: Path, *extra: str) -> SimulatorProcess:
    record = tmp_path / "handed-out.jsonl"
    return SimulatorProcess(
        ["--token", f"main={TOKEN}", "--record", str(record), "--seed", "11", *extra]
    ).start()


def config_for(
    simulator: SimulatorProcess, bootstrap: str, topics: Topics, tmp_path: Path, spool: Path
) -> Path:
    return write_config(
        tmp_path / "c.toml",
        base_url=simulator.base_url,
        bootstrap=bootstrap,
        topics=topics,
        spool=spool,
    )


def count_against_ground_truth(bootstrap: str, topics: Topics, tmp_path: Path) -> Count:
    """Every report the simulator handed out, in the topic or the dead-letter topic, once."""
    good, bad = ground_truth(tmp_path / "handed-out.jsonl")
    verdict = verify(bootstrap, topics, good)
    assert set(verdict.delivered) <= set(good), "records that were never handed out"
    return Count(
        len(good) + len(bad),
        len(verdict.lost) + max(0, len(bad) - len(verdict.dead_letters)),
        len(verdict.duplicated) + max(0, len(verdict.dead_letters) - len(bad)),
        len(verdict.dead_letters),
    )


def assert_exactly_once(bootstrap: str, topics: Topics, tmp_path: Path) -> Count:
    count = count_against_ground_truth(bootstrap, topics, tmp_path)
    print(f"figures: {count}")  # shown with -s / in the report
    assert (count.lost, count.duplicated) == (0, 0), str(count)
    assert count.handed_out > 0
    return count
