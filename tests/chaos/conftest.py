"""The long chaos runs belong to `make chaos` (`-m chaos`); a plain `pytest` deselects them."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "chaos" in (config.option.markexpr or ""):
        return
    long_runs = [item for item in items if item.get_closest_marker("chaos") is not None]
    if long_runs:
        items[:] = [item for item in items if item not in long_runs]
        config.hook.pytest_deselected(items=long_runs)
