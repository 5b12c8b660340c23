"""tools/render_dashboard.py's summary.json: NaN points (Prometheus' 0/0) are gaps, not values."""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
from render_dashboard import Panel, Series, summarize

PANEL = Panel(1, "Batch fill", "timeseries", "percentunit", {}, [])


def test_a_nan_point_is_left_out_of_last_max_and_min() -> None:
    series = [Series("a", [1.0, 2.0, 3.0, 4.0], [math.nan, 0.75, 0.5, math.nan])]
    assert summarize(PANEL, series)["series"] == {"a": {"last": 0.5, "max": 0.75, "min": 0.5}}


def test_a_series_of_nothing_but_nan_is_no_data() -> None:
    assert summarize(PANEL, [Series("a", [1.0], [math.nan])])["series"] == {}
