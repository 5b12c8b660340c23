"""Which broker the suite uses: testcontainers only when asked or when its image is present."""

from __future__ import annotations

import pytest

from tests import conftest  # by package: in a whole-suite run "conftest" may name another one


@pytest.fixture
def images(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """The images the (fake) engine holds; the probe asks for exactly the configured name."""
    present: set[str] = set()
    monkeypatch.setattr(conftest, "_docker_image_present", lambda image: image in present)
    for name in ("RPT_TEST_KAFKA", "RPT_TEST_KAFKA_IMAGE"):
        monkeypatch.delenv(name, raising=False)
    return present


def test_an_engine_without_the_image_means_devkafka(images: set[str]) -> None:
    images.add("confluentinc/cp-kafka:7.6.0")  # an engine answers, but not with our image
    assert conftest.kafka_source() == "devkafka"


def test_the_local_image_present_means_testcontainers(images: set[str]) -> None:
    images.add("local/kafka:4.1.1")
    assert conftest.kafka_source() == "testcontainers"


def test_the_image_name_is_configurable(images: set[str], monkeypatch: pytest.MonkeyPatch) -> None:
    images.add("registry.example/kafka:9")
    assert conftest.kafka_source() == "devkafka"
    monkeypatch.setenv("RPT_TEST_KAFKA_IMAGE", "registry.example/kafka:9")
    assert conftest.kafka_source() == "testcontainers"


@pytest.mark.parametrize("chosen", ["devkafka", "testcontainers", "TestContainers"])
def test_an_explicit_choice_wins(
    chosen: str, images: set[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    images.add("local/kafka:4.1.1")
    monkeypatch.setenv("RPT_TEST_KAFKA", chosen)
    assert conftest.kafka_source() == chosen.lower()


def test_an_unknown_choice_is_a_usage_error(
    images: set[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RPT_TEST_KAFKA", "docker")
    with pytest.raises(pytest.UsageError, match="RPT_TEST_KAFKA='docker'"):
        conftest.kafka_source()
