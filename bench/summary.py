"""`make bench`'s results: medians over the runs, the JSON files and BENCHMARKS.md's table."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from stages import markdown as stages_markdown

REPO = Path(__file__).resolve().parent.parent


def median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


_MEDIANS = ("reports_per_s", "cpu_us_per_report", "peak_rss_mib", "broker_cpu_us_per_report",
            "commits", "commit_ms_mean", "librdkafka_cpu_us_per_report",
            "data_bytes_per_report", "archive_bytes_per_report")  # fmt: skip


def summarize(results: dict) -> dict:
    summary: dict = {}
    for mode, runs in results["connector"].items():
        # A key only some runs have (the archive's bytes: only with the archive) is left out.
        summary[mode] = {key: median(runs, key) for key in _MEDIANS if all(key in r for r in runs)}
        summary[mode]["peak_rss_mib_max"] = max(r["peak_rss_mib"] for r in runs)
    for kind, runs in results.get("floor", {}).items():
        summary[f"floor_{kind}"] = {
            key: median(runs, key) for key in ("reports_per_s", "cpu_us_per_report")
        }
    if "simulator_serve" in results:
        summary["simulator_serve_per_s"] = median(results["simulator_serve"], "reports_per_s")
    pairs = (
        ("exactly_once", "floor_transactional"),
        ("exactly_once+archive", "floor_transactional"),
        ("exactly_once (pure Python)", "floor_transactional"),
        ("exactly_once (no headers)", "floor_transactional"),
        ("at_least_once", "floor_idempotent"),
    )
    for mode, floor_key in pairs:
        if mode in summary and floor_key in summary:
            ratio = summary[mode]["reports_per_s"] / summary[floor_key]["reports_per_s"]
            summary[mode]["ratio_to_floor"] = ratio
    if "latency" in results:
        summary["latency"] = results["latency"]
    if "exactly_once" in summary and "exactly_once+archive" in summary:
        summary["archive_cost"] = archive_cost(summary["exactly_once"],
                                               summary["exactly_once+archive"])  # fmt: skip
    return summary


def archive_cost(without: dict, with_archive: dict) -> dict:
    """What the raw archive adds to exactly_once, from runs of one `make bench`."""
    cpu_on, cpu_off = with_archive["cpu_us_per_report"], without["cpu_us_per_report"]
    return {
        "cpu_us_per_report_with": cpu_on, "cpu_us_per_report_without": cpu_off,
        "cpu_us_per_report_added": cpu_on - cpu_off,
        "data_bytes_per_report": with_archive.get("data_bytes_per_report"),
        "archive_bytes_per_report": with_archive.get("archive_bytes_per_report"),
    }  # fmt: skip


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
        "| broker B/report: data + archive | peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for mode in ("exactly_once", "exactly_once+archive", "exactly_once (pure Python)",
                 "exactly_once (no headers)", "at_least_once"):  # fmt: skip
        if mode in s:
            r = s[mode]
            ratio = f"{r['ratio_to_floor']:.2f}" if "ratio_to_floor" in r else "–"
            lines.append(
                f"| connector {mode} | {r['reports_per_s']:,.0f} | {ratio} "
                f"| {r['cpu_us_per_report']:.1f} | {r['broker_cpu_us_per_report']:.1f} "
                f"| {_bytes(r)} | {r['peak_rss_mib']:.0f} ({r['peak_rss_mib_max']:.0f}) |"
            )
    floors = {
        "transactional": ("transactional, produce() per record", "1.00"),
        "transactional_native": ("transactional, native produce per 500", None),
        "idempotent": ("idempotent, produce() per record", "1.00"),
    }
    for kind, (label, ratio) in floors.items():
        if f"floor_{kind}" in s:
            r = s[f"floor_{kind}"]
            if ratio is None and "floor_transactional" in s:
                ratio = f"{r['reports_per_s'] / s['floor_transactional']['reports_per_s']:.2f}"
            lines.append(
                f"| floor: bare producer, {label} | {r['reports_per_s']:,.0f} | {ratio or '–'} "
                f"| {r['cpu_us_per_report']:.1f} (whole process) | – | – | – |"
            )
    if "simulator_serve_per_s" in s:
        lines.append(f"| simulator serve rate (httpx drain) | {s['simulator_serve_per_s']:,.0f} "
                     "| – | – | – | – | – |")  # fmt: skip
    if "archive_cost" in s:
        lines += ["", archive_sentence(s["archive_cost"])]
    if "stages" in results:
        lines += ["", "Where the connector's CPU goes, per stage (issue 19), in the same run: "
                  + stages_markdown(results["stages"])]  # fmt: skip
    for lat in s.get("latency", []):
        lines += [
            "",
            f"Latency at {lat['offered_per_s']:,}/s offered (exactly_once, commit_interval "
            f"{lat['commit_interval_ms']} ms, {lat['reports']:,} of {lat['expected']:,} reports "
            f"seen): fetch → visible to a read_committed consumer p50 {lat['p50_ms']:.0f} ms, "
            f"p99 {lat['p99_ms']:.0f} ms, max {lat['max_ms']:.0f} ms.",
        ]
    return "\n".join(lines)


def _bytes(row: dict) -> str:
    if "data_bytes_per_report" not in row:
        return "–"
    data = f"{row['data_bytes_per_report']:.1f}"
    if "archive_bytes_per_report" not in row:
        return data
    return f"{data} + {row['archive_bytes_per_report']:.1f}"


def archive_sentence(cost: dict) -> str:
    """The raw archive's cost in one line: CPU with vs without, bytes data vs archive."""
    on, off = cost["cpu_us_per_report_with"], cost["cpu_us_per_report_without"]
    text = (
        f"The raw archive (issue 18), exactly_once in the same run: connector CPU {on:.1f} "
        f"µs/report with the archive topic, {off:.1f} without ({on - off:+.1f} µs, "
        f"{(on - off) / off:+.0%})"
    )
    if cost.get("archive_bytes_per_report") is not None:
        text += (
            f"; on the broker {cost['data_bytes_per_report']:.1f} B/report in the data topic "
            f"(Avro, lz4) and {cost['archive_bytes_per_report']:.1f} B/report in the archive "
            "topic (the raw bodies, zstd), partition `.log` bytes"
        )
    return text + "."
