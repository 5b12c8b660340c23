"""The progress record: what it says, what is refused, and what it carries between spools."""

from __future__ import annotations

import json

import pytest

from connector.errors import PublishError
from connector.kafka.progress import MAX_OTHER_SPOOLS, Progress, parse_progress
from connector.kafka.records import progress_value


def test_a_record_round_trips_with_the_spools_it_carries() -> None:
    value = progress_value("acme", 9, "volume-b", 1.5, {"volume-a": 3})
    progress = parse_progress(value, "p[0]")
    assert progress == Progress(9, "volume-b", (("volume-a", 3),))
    assert progress.committed_by("volume-a") == 3
    assert progress.committed_by("volume-b") == 9
    assert progress.committed_by("volume-c") == 0


def test_a_record_that_carries_nothing_has_no_other_spools_field() -> None:
    record = json.loads(progress_value("acme", 1, "volume-a", 1.5, {}))
    assert "other_spools" not in record and parse_progress(b'{"spool_seq": 1}', "p").spool_id == ""


def test_what_the_next_record_carries_keeps_every_other_spool_but_the_writer() -> None:
    read = Progress(9, "volume-b", (("volume-a", 3), ("volume-c", 7)))
    assert read.carried_for("volume-a") == {"volume-c": 7, "volume-b": 9}
    assert read.carried_for("volume-b") == {"volume-a": 3, "volume-c": 7}
    assert Progress(0, "").carried_for("volume-a") == {}


def test_the_carried_spools_are_bounded_and_the_newest_kept() -> None:
    many = tuple((f"volume-{i}", i) for i in range(MAX_OTHER_SPOOLS + 5))
    carried = Progress(99, "newest", many).carried_for("mine")
    assert len(carried) == MAX_OTHER_SPOOLS and list(carried)[-1] == "newest"


@pytest.mark.parametrize(
    ("value", "names"),
    [
        (b"not json", "not a progress record"),
        (b'{"spool_id": "a"}', "not a progress record"),
        (b'{"spool_seq": -1}', "bad spool_seq -1"),
        (b'{"spool_seq": true}', "bad spool_seq True"),
        (b'{"spool_seq": 1, "other_spools": [1]}', "bad other_spools [1]"),
        (b'{"spool_seq": 1, "other_spools": {"a": "3"}}', "bad other_spools {'a': '3'}"),
    ],
)
def test_a_record_that_is_not_a_progress_record_is_named(value: bytes, names: str) -> None:
    with pytest.raises(PublishError, match="progress topic p\\[2\\]") as caught:
        parse_progress(value, "p[2]")
    assert names in str(caught.value)
