"""`make bench`'s results: medians over the runs, the JSON files and BENCHMARKS.md's table."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def summarize(results: dict) -> dict:
    summary: dict = {}
    for mode, runs in results["connector"].items():
        summary[mode] = {
            key: median(runs, key)
            for key in ("reports_per_s", "cpu_us_per_report", "peak_rss_mib",
                        "broker_cpu_us_per_report", "commits", "commit_ms_mean",
                        "librdkafka_cpu_us_per_report")
        }  # fmt: skip
        summary[mode]["peak_rss_mib_max"] = max(r["peak_rss_mib"] for r in runs)
    for kind, runs in results.get("floor", {}).items():
        summary[f"floor_{kind}"] = {
            key: median(runs, key) for key in ("reports_per_s", "cpu_us_per_report")
        }
    if "simulator_serve" in results:
        summary["simulator_serve_per_s"] = median(results["simulator_serve"], "reports_per_s")
    pairs = (("exactly_once", "floor_transactional"), ("at_least_once", "floor_idempotent"))
    for mode, floor_key in pairs:
        if mode in summary and floor_key in summary:
            ratio = summary[mode]["reports_per_s"] / summary[floor_key]["reports_per_s"]
            summary[mode]["ratio_to_floor"] = ratio
    if "latency" in results:
        summary["latency"] = results["latency"]
    return summary


def save(results: dict, no_markdown: bool) -> None:
    out_dir = REPO / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=2) + "\n"
    stamp = results["started"].replace(":", "").replace("-", "")
    (out_dir / f"{stamp}.json").write_text(text)
    (out_dir / "latest.json").write_text(text)
    if not no_markdown:
        update_markdown(REPO / "BENCHMARKS.md", results)


_BEGIN, _END = "<!-- bench:begin -->", "<!-- bench:end -->"


def update_markdown(path: Path, results: dict) -> None:
    """Replace the generated block of BENCHMARKS.md (between the bench markers) with `results`."""
    block = f"{_BEGIN}\n{markdown_table(results)}\n{_END}"
    text = path.read_text() if path.exists() else f"# Benchmarks\n\n{_BEGIN}\n{_END}\n"
    head, _, rest = text.partition(_BEGIN)
    _, _, tail = rest.partition(_END)
    path.write_text(head + block + tail)


def markdown_table(results: dict) -> str:
    s, m = results["summary"], results["machine"]
    lines = [
        f"Run {results['started']}: `{results['command']}` — {results['reports']:,} reports per "
        f"run, medians of {results['runs']} runs. Machine: {m['cores']} cores, {m['cpu']}; "
        f"Python {m['python']}, confluent-kafka {m['confluent_kafka']} (librdkafka "
        f"{m['librdkafka']}), Kafka {m['kafka']}. Load average at start "
        f"{m['load_average'][0]:.2f}, at end {results['finished_load_average'][0]:.2f}. "
        "Peak RSS: median (max) of the runs.",
        "",
        "| scenario | reports/s | × floor | connector CPU µs/report | broker CPU µs/report "
        "| peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for mode in ("exactly_once", "at_least_once"):
        if mode in s:
            r = s[mode]
            ratio = f"{r['ratio_to_floor']:.2f}" if "ratio_to_floor" in r else "–"
            lines.append(
                f"| connector {mode} | {r['reports_per_s']:,.0f} | {ratio} "
                f"| {r['cpu_us_per_report']:.1f} | {r['broker_cpu_us_per_report']:.1f} "
                f"| {r['peak_rss_mib']:.0f} ({r['peak_rss_mib_max']:.0f}) |"
            )
    for kind in ("transactional", "idempotent"):
        if f"floor_{kind}" in s:
            r = s[f"floor_{kind}"]
            lines.append(
                f"| floor: bare producer, {kind} | {r['reports_per_s']:,.0f} | 1.00 "
                f"| {r['cpu_us_per_report']:.1f} (whole process) | – | – |"
            )
    if "simulator_serve_per_s" in s:
        lines.append(f"| simulator serve rate (httpx drain) | {s['simulator_serve_per_s']:,.0f} "
                     "| – | – | – | – |")  # fmt: skip
    for lat in s.get("latency", []):
        lines += [
            "",
            f"Latency at {lat['offered_per_s']:,}/s offered (exactly_once, commit_interval "
            f"{lat['commit_interval_ms']} ms, {lat['reports']:,} of {lat['expected']:,} reports "
            f"seen): fetch → visible to a read_committed consumer p50 {lat['p50_ms']:.0f} ms, "
            f"p99 {lat['p99_ms']:.0f} ms, max {lat['max_ms']:.0f} ms.",
        ]
    return "\n".join(lines)
