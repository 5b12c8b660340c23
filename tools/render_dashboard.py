#!/usr/bin/env python3
"""Draw the Grafana dashboard without Grafana: every panel's PromQL against a real Prometheus.

    python tools/render_dashboard.py --prometheus http://127.0.0.1:9090 \
        --start 1764620000 --end 1764620300 --out docs/dashboard

Reads config/grafana/rpt-connector.json, runs each target over [start, end] through the HTTP API
(`/api/v1/query_range`; stat panels: `/api/v1/query` at `end`) with the dashboard's variables
filled in as Grafana would for every job and account over that window (`$__range` = end -
start, `$topk` = the dashboard's default unless --topk), and writes one PNG per panel
(OUT/panels/NN-title.png), a contact sheet laid out like the dashboard's grid
(OUT/contact-sheet.png) and OUT/summary.json (per panel: series, last and max values), so what a
picture shows can also be read and asserted. A panel without data says "no data": an empty
picture is never drawn as a flat line.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.ticker import FuncFormatter

REPO = Path(__file__).resolve().parent.parent
DASHBOARD = REPO / "config" / "grafana" / "rpt-connector.json"
MAX_LEGEND = 8
GRID_UNIT_IN = 0.42  # inches per Grafana grid row (h = 1)


@dataclass
class Panel:
    number: int
    title: str
    kind: str  # timeseries, stat, state-timeline
    unit: str
    grid: dict
    targets: list[dict]
    y_min: float | None = None
    y_max: float | None = None


@dataclass
class Series:
    label: str
    times: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)


@dataclass
class Shade:
    start: float
    end: float
    label: str


def load_panels(path: Path) -> tuple[list[Panel], list[tuple[str, dict]]]:
    """The drawable panels and the row headers (title, gridPos) of a dashboard file."""
    document = json.loads(path.read_text())
    panels, rows = [], []
    for raw in document["panels"]:
        if raw["type"] == "row":
            rows.append((raw["title"], raw["gridPos"]))
            continue
        defaults = raw.get("fieldConfig", {}).get("defaults", {})
        panels.append(
            Panel(
                number=len(panels) + 1,
                title=raw["title"],
                kind=raw["type"],
                unit=defaults.get("unit", "none"),
                grid=raw["gridPos"],
                targets=raw.get("targets", []),
                y_min=defaults.get("min"),
                y_max=defaults.get("max"),
            )
        )
    return panels, rows


def variables(
    document: dict, rate_interval: str, range_s: float, *, topk: str | None = None
) -> dict[str, str]:
    """Grafana's variables as this renderer fills them: every job, every account, the whole
    window as `$__range`, and the dashboard's own default `$topk` (unless `topk` is given)."""
    defaults = {
        v["name"]: str(v["current"]["value"])
        for v in document.get("templating", {}).get("list", [])
        if v.get("type") == "custom" and v.get("current", {}).get("value") is not None
    }
    return {
        **defaults,
        "__rate_interval": rate_interval,
        "__range": f"{max(1, round(range_s))}s",
        "job": ".*",
        "account": ".*",
        **({"topk": topk} if topk is not None else {}),
    }


def expand(expr: str, values: dict[str, str]) -> str:
    """`expr` with each `$name` / `${name}` in `values` filled in; any other left as it is."""
    return re.sub(
        r"\$(?:\{(\w+)\}|(\w+))",
        lambda m: values.get(m.group(1) or m.group(2), m.group(0)),
        expr,
    )


def legend(template: str, labels: dict[str, str]) -> str:
    text = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template)
    return text.strip() or "{" + ",".join(f"{k}={v}" for k, v in sorted(labels.items())) + "}"


class PromClient:
    def __init__(self, base_url: str) -> None:
        self._http = httpx.Client(base_url=base_url, timeout=30.0)

    def _get(self, path: str, params: dict) -> list[dict]:
        response = self._http.get(path, params=params)
        body = response.json()
        if body.get("status") != "success":
            raise RuntimeError(f"{params['query']!r}: {body.get('error', response.text)}")
        return body["data"]["result"]

    def range(self, expr: str, start: float, end: float, step: float) -> list[dict]:
        params = {"query": expr, "start": start, "end": end, "step": step}
        return self._get("/api/v1/query_range", params)

    def instant(self, expr: str, when: float) -> list[dict]:
        return self._get("/api/v1/query", {"query": expr, "time": when})


def fetch(
    client: PromClient, panel: Panel, start: float, end: float, step: float, values: dict[str, str]
) -> list[Series]:
    out = []
    for target in panel.targets:
        expr = expand(target["expr"], values)
        if panel.kind == "stat":
            for result in client.instant(expr, end):
                when, value = result["value"]
                label = legend(target.get("legendFormat", ""), result["metric"])
                out.append(Series(label, [float(when)], [float(value)]))
            continue
        for result in client.range(expr, start, end, step):
            series = Series(legend(target.get("legendFormat", ""), result["metric"]))
            for when, value in result["values"]:
                series.times.append(float(when))
                series.values.append(float(value))
            out.append(series)
    return out


def formatter(unit: str):
    def fmt(value: float, _pos: object = None) -> str:
        if unit == "percentunit":
            return f"{value * 100:.0f}%"
        if unit == "bytes":
            for suffix, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
                if abs(value) >= size:
                    return f"{value / size:.1f} {suffix}"
            return f"{value:.0f} B"
        if unit == "s":
            if abs(value) >= 120:
                return f"{value / 60:.0f} min"
            return f"{value:.3g} s"
        suffix = "/s" if unit == "ops" else ""
        if abs(value) >= 1000:
            return f"{value / 1000:.3g}k{suffix}"
        return f"{value:.3g}{suffix}"

    return fmt


def _dates(times: list[float]) -> list[datetime]:
    return [datetime.fromtimestamp(t, UTC) for t in times]


def draw(
    ax: Axes, panel: Panel, series: list[Series], window: tuple, shades: list[Shade], step: float
) -> None:
    ax.set_title(panel.title, fontsize=9, loc="left", fontweight="bold")
    if not series:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", color="grey", transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
        return
    if panel.kind == "stat":
        _draw_stat(ax, panel, series)
        return
    for shade in shades:
        ax.axvspan(*_dates([shade.start, shade.end]), color="tab:red", alpha=0.08, lw=0)
    if panel.kind == "state-timeline":
        _draw_timeline(ax, series, step)
    else:
        _draw_lines(ax, panel, series, step)
    ax.set_xlim(*_dates(list(window)))
    short = window[1] - window[0] < 1800
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S" if short else "%H:%M", tz=UTC))
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.25)


def _draw_lines(ax: Axes, panel: Panel, series: list[Series], step: float) -> None:
    shown = sorted(series, key=lambda s: s.label)
    if len(shown) > 4:  # a legend of flat zeros hides what moved: say how many were left out
        shown = [s for s in shown if any(v != 0 for v in s.values)] or shown[:1]
    for s in shown[:MAX_LEGEND]:
        times, values = _with_gaps(s, step)
        ax.plot(_dates(times), values, lw=1.2, label=s.label)
    hidden = len(series) - min(len(shown), MAX_LEGEND)
    if hidden:
        ax.text(0.99, 0.98, f"{hidden} series all zero or not shown", ha="right", va="top",
                fontsize=6, color="dimgrey", transform=ax.transAxes)  # fmt: skip
    ax.yaxis.set_major_formatter(FuncFormatter(formatter(panel.unit)))
    low, high = ax.get_ylim()
    ax.set_ylim(
        panel.y_min if panel.y_min is not None else low,
        (panel.y_max * 1.05) if panel.y_max is not None else max(high, 1e-9),
    )
    ax.legend(fontsize=6, loc="upper left", framealpha=0.6)


def _with_gaps(series: Series, step: float) -> tuple[list[float], list[float]]:
    """A NaN wherever Prometheus returned no sample, so a gap is drawn as a gap, not a line."""
    times, values = [], []
    for index, (when, value) in enumerate(zip(series.times, series.values, strict=True)):
        if index and when - series.times[index - 1] > 1.5 * step:
            times.append(when - step)
            values.append(float("nan"))
        times.append(when)
        values.append(value)
    return times, values


def _draw_timeline(ax: Axes, series: list[Series], step: float) -> None:
    """One row per series, filled where its value is present (the query keeps == 1)."""
    ordered = sorted(series, key=lambda s: s.label)
    width = step / 86400  # matplotlib dates are days
    for row, s in enumerate(ordered):
        starts = mdates.date2num(_dates([t for t, v in zip(s.times, s.values, strict=True) if v]))
        ax.broken_barh([(x, width) for x in starts], (row - 0.4, 0.8), color=_state_color(s.label))
        ax.text(0.005, row, s.label, transform=ax.get_yaxis_transform(), va="center", fontsize=7,
                bbox={"facecolor": "white", "alpha": 0.7, "lw": 0, "pad": 1})  # fmt: skip
    ax.set_yticks([])
    ax.set_ylim(-0.6, len(ordered) - 0.4)


def _state_color(label: str) -> str:
    good = ("polling", "not_owned")
    if any(word in label for word in good):
        return "tab:green"
    if any(word in label for word in ("backoff", "starting", "recovering")):
        return "tab:orange"
    return "tab:red"


def _draw_stat(ax: Axes, panel: Panel, series: list[Series]) -> None:
    ax.axis("off")
    fmt = formatter(panel.unit)
    lines = [f"{s.label}: {fmt(s.values[-1])}" for s in series[:MAX_LEGEND]]
    ax.text(0.03, 0.45, "\n".join(lines), fontsize=11, va="center", transform=ax.transAxes)


def summarize(panel: Panel, series: list[Series]) -> dict:
    """Last, max and min of each series over its numbers: a NaN point (Prometheus' 0/0, e.g. a
    rate ratio over a window with no increase) is a gap, as Grafana draws it, not a value."""
    numbers = {s.label: [v for v in s.values if not math.isnan(v)] for s in series}
    return {
        "title": panel.title,
        "type": panel.kind,
        "series": {
            label: {"last": values[-1], "max": max(values), "min": min(values)}
            for label, values in numbers.items()
            if values
        },
    }


def render(
    prometheus: str, start: float, end: float, out: Path, *, step: float = 5.0,
    rate_interval: str = "30s", dashboard: Path = DASHBOARD, shades: list[Shade] | None = None,
    title: str = "rpt-connector", topk: str | None = None,
) -> dict:  # fmt: skip
    """Render every panel; returns the summary also written to OUT/summary.json."""
    panels, rows = load_panels(dashboard)
    values = variables(json.loads(dashboard.read_text()), rate_interval, end - start, topk=topk)
    client = PromClient(prometheus)
    data = {p.number: fetch(client, p, start, end, step, values) for p in panels}
    window = (start, end)
    panel_dir = out / "panels"
    panel_dir.mkdir(parents=True, exist_ok=True)
    for panel in panels:
        fig, ax = plt.subplots(figsize=(7, 3.2), dpi=80)
        draw(ax, panel, data[panel.number], window, shades or [], step)
        fig.tight_layout()
        slug = re.sub(r"[^a-z0-9]+", "-", panel.title.lower()).strip("-")
        fig.savefig(panel_dir / f"{panel.number:02d}-{slug}.png")
        plt.close(fig)
    sheet = out / "contact-sheet.png"
    contact_sheet(panels, rows, data, (start, end, step), shades or [], sheet, title)
    summary = {
        "prometheus": prometheus,
        "start": start,
        "end": end,
        "topk": int(values["topk"]) if "topk" in values else None,
        "shades": [vars(s) for s in shades or []],
        "panels": [summarize(p, data[p.number]) for p in panels],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def contact_sheet(
    panels: list[Panel], rows: list[tuple[str, dict]], data: dict, span: tuple,
    shades: list[Shade], path: Path, title: str,
) -> None:  # fmt: skip
    """All panels on one page, placed on the dashboard's own 24-column grid.

    Each panel's first grid row holds its title (and the tick labels of the panel above), so
    nothing overlaps; the axes take the rest of its height.
    """
    start, end, step = span
    height = max(p.grid["y"] + p.grid["h"] for p in panels)
    inches = height * GRID_UNIT_IN + 0.8  # + the page title
    fig = plt.figure(figsize=(16, inches), dpi=72)
    grid = fig.add_gridspec(height + 1, 24, hspace=0, wspace=1.4, left=0.04, right=0.99,
                            top=1 - 0.7 / inches, bottom=0.005)  # fmt: skip
    labels = " · ".join(f"shaded: {s.label}" for s in shades)
    when = " – ".join(datetime.fromtimestamp(t, UTC).strftime("%H:%M:%S") for t in (start, end))
    fig.suptitle(f"{title}   {when} UTC   {labels}", fontsize=13, x=0.01, y=1 - 0.25 / inches,
                 ha="left", fontweight="bold")  # fmt: skip
    for name, pos in rows:
        ax = fig.add_subplot(grid[pos["y"] + 1, :])
        ax.axis("off")
        ax.text(0, 0.1, name, fontsize=11, color="dimgrey", fontweight="bold")
    for panel in panels:
        g = panel.grid
        ax = fig.add_subplot(grid[g["y"] + 2 : g["y"] + g["h"] + 1, g["x"] : g["x"] + g["w"]])
        draw(ax, panel, data[panel.number], (start, end), shades, step)
    fig.savefig(path)
    plt.close(fig)


def parse_shade(text: str) -> Shade:
    try:
        start, end, label = text.split(":", 2)
        return Shade(float(start), float(end), label)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shade {text!r}: expected START:END:LABEL") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prometheus", required=True, help="base URL of a Prometheus server")
    parser.add_argument("--start", type=float, required=True, help="epoch seconds")
    parser.add_argument("--end", type=float, required=True, help="epoch seconds")
    parser.add_argument("--step", type=float, default=5.0, help="query_range step (s)")
    parser.add_argument("--rate-interval", default="30s", help="stands for $__rate_interval")
    parser.add_argument("--topk", help="stands for $topk (default: the dashboard's default)")
    parser.add_argument("--dashboard", type=Path, default=DASHBOARD)
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--shade", type=parse_shade, action="append", default=[],
                        help="START:END:LABEL, a time span shaded in every time panel")  # fmt: skip
    parser.add_argument("--title", default="rpt-connector")
    args = parser.parse_args(argv)
    if args.end <= args.start:
        parser.error("--end must be after --start")
    summary = render(
        args.prometheus, args.start, args.end, args.out, step=args.step,
        rate_interval=args.rate_interval, dashboard=args.dashboard, shades=args.shade,
        title=args.title, topk=args.topk,
    )  # fmt: skip
    empty = [p["title"] for p in summary["panels"] if not p["series"]]
    print(f"rendered {len(summary['panels'])} panels into {args.out}; no data: {empty or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
