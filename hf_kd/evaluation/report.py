"""The efficiency table (the paper's Table 1 joined with effectiveness) and the efficiency-effectiveness plot."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..files import atomic_path, write_json_atomic, write_text_atomic
from .latency import LatencyResult, timed_while_busy

__all__ = [
    "EfficiencyRow",
    "efficiency_markdown",
    "format_bytes",
    "join_efficiency",
    "machine_load_note",
    "plot_efficiency",
    "write_efficiency_report",
]

TABLE_METRICS = ("MRR@10", "nDCG@10")


@dataclass
class EfficiencyRow:
    """One model in the efficiency table.

    Attributes:
        name (`str`): label of the model.
        architecture (`str`): `bert_cat`, `bert_dot`, `colbert`, `prett` or `tk` (empty when unknown).
        median_ms (`float` or `None`): median re-ranking latency per query; None when not measured.
        p90_ms (`float` or `None`): 90th percentile latency per query.
        peak_memory_bytes (`int` or `None`): peak memory while re-ranking, see [`LatencyResult`].
        storage_bytes_per_passage (`float` or `None`): bytes cached per passage.
        metrics (`dict[str, float]`): effectiveness, e.g. `{"nDCG@10": 0.72, "MRR@10": 0.85}`; empty when unknown.
    """

    name: str
    architecture: str = ""
    median_ms: float | None = None
    p90_ms: float | None = None
    peak_memory_bytes: int | None = None
    storage_bytes_per_passage: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)


def join_efficiency(
    latencies: Sequence[LatencyResult | dict], effectiveness: dict[str, dict[str, float]]
) -> list[EfficiencyRow]:
    """Joins latency results with effectiveness metrics by model name.

    Args:
        latencies (`Sequence[LatencyResult | dict]`): latency results (or their `to_dict()`).
        effectiveness (`dict[str, dict[str, float]]`): model name -> metrics (e.g. from `metrics.json`).

    Returns:
        `list[EfficiencyRow]`: one row per name found on either side, latency rows first in their order.
    """
    rows: dict[str, EfficiencyRow] = {}
    for latency in latencies:
        item = latency.to_dict() if isinstance(latency, LatencyResult) else dict(latency)
        rows[item["name"]] = EfficiencyRow(
            name=item["name"],
            architecture=item.get("architecture", ""),
            median_ms=item["median_ms"],
            p90_ms=item.get("p90_ms"),
            peak_memory_bytes=item.get("peak_memory_bytes"),
            storage_bytes_per_passage=item.get("storage_bytes_per_passage"),
        )
    for name, metrics in effectiveness.items():
        rows.setdefault(name, EfficiencyRow(name=name)).metrics = dict(metrics)
    return list(rows.values())


def format_bytes(value: float | None) -> str:
    """`1536` -> `"1.5 KB"` (powers of 1024); None -> `"-"`."""
    if value is None:
        return "-"
    units = ("B", "KB", "MB", "GB")
    power = 0
    while abs(value) >= 1024 and power < len(units) - 1:
        value /= 1024
        power += 1
    return f"{value:.0f} B" if power == 0 else f"{value:.1f} {units[power]}"


def _format_number(value: float | None, digits: int) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def efficiency_markdown(rows: Sequence[EfficiencyRow], metric_names: Sequence[str] = TABLE_METRICS) -> str:
    """A markdown table in the layout of the paper's Table 1, plus effectiveness columns."""
    header = ["Model", "Query latency (median ms)", "p90 ms", "Peak memory", "Storage / passage", *metric_names]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for row in rows:
        cells = [
            row.name,
            _format_number(row.median_ms, 1),
            _format_number(row.p90_ms, 1),
            format_bytes(row.peak_memory_bytes),
            format_bytes(row.storage_bytes_per_passage),
            *(_format_number(row.metrics.get(name), 3) for name in metric_names),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _load_text(load: Sequence[float] | None) -> str:
    return "?" if not load else f"{load[0]:.2f}"


def machine_load_note(latencies: Sequence[LatencyResult | dict], remeasure: str = "measure again") -> str:
    """The line under an efficiency table that records the machine's load during each timing (the 1-minute load
    average before and after it, against the CPU threads the model computed with), and warns, naming the models,
    when other work ran (see [`timed_while_busy`]): their latencies are too high. Empty when no latency records a
    load. `remeasure` says how to time again (after "on an idle machine, ")."""
    items = [latency.to_dict() if isinstance(latency, LatencyResult) else dict(latency) for latency in latencies]
    recorded = [item for item in items if timed_while_busy(item) is not None]
    if not recorded:
        return ""
    loads = "; ".join(
        f"{item['name']} {_load_text(item.get('load_average_before'))} / "
        f"{_load_text(item.get('load_average_after'))} on {item['cpu_threads']} threads"
        for item in recorded
    )
    note = f"Machine load (1-minute load average before / after each timing, against the CPU threads used): {loads}."
    busy = [item["name"] for item in recorded if timed_while_busy(item)]
    if busy:
        note = (
            f"**Warning: timed on a busy machine.** The load average exceeded the CPU threads used while "
            f"{', '.join(busy)} {'was' if len(busy) == 1 else 'were'} timed: other work ran at the same time, so "
            f"{'its latency is' if len(busy) == 1 else 'their latencies are'} too high. On an idle machine, "
            f"{remeasure}.\n\n{note}"
        )
    return note


def plot_efficiency(
    rows: Sequence[EfficiencyRow],
    path: str | os.PathLike,
    metric: str = "nDCG@10",
    reference: Sequence[EfficiencyRow] | None = None,
    titles: tuple[str, str] = ("Efficiency vs. effectiveness", "Reference"),
) -> int:
    """Draws effectiveness against median query latency (log scale) as a PNG, written atomically.

    Args:
        rows (`Sequence[EfficiencyRow]`): the models; those without latency or `metric` are left out.
        path (`str` or `os.PathLike`): the PNG file.
        metric (`str`, *optional*, defaults to `"nDCG@10"`): the effectiveness metric on the y axis.
        reference (`Sequence[EfficiencyRow]`, *optional*): models drawn in a second panel on the right (e.g. a
            paper's published numbers), with its own axes.
        titles (`tuple[str, str]`, *optional*): titles of the panel of `rows` and of the reference panel.

    Returns:
        `int`: the number of models drawn from `rows`.

    Raises:
        ValueError: if no row has both a latency and `metric`.
    """

    def drawable(candidates: Sequence[EfficiencyRow]) -> list[EfficiencyRow]:
        return [row for row in candidates if row.median_ms is not None and row.metrics.get(metric) is not None]

    points = drawable(rows)
    if not points:
        raise ValueError(f"no model has both a latency and {metric}: nothing to plot")
    panels = [(points, titles[0])]
    if reference is not None and drawable(reference):
        panels.append((drawable(reference), titles[1]))
    figure = Figure(figsize=(6.4 * len(panels), 4.4), dpi=150)
    FigureCanvasAgg(figure)
    for index, (panel, title) in enumerate(panels, start=1):
        axes = figure.add_subplot(1, len(panels), index)
        axes.scatter([row.median_ms for row in panel], [row.metrics[metric] for row in panel], zorder=3)
        for row in panel:
            axes.annotate(row.name, (row.median_ms, row.metrics[metric]), textcoords="offset points", xytext=(5, 5))
        axes.set_xscale("log")
        axes.set_xlabel("Query latency, re-ranking (median ms per query, log scale)")
        axes.set_ylabel(metric)
        axes.set_title(title)
        axes.grid(True, which="both", alpha=0.3)
        axes.margins(x=0.25, y=0.12)  # room for the labels of the outermost points
    figure.tight_layout()
    with atomic_path(path) as tmp_path:
        figure.savefig(tmp_path, format="png")
    return len(points)


def write_efficiency_report(
    rows: Sequence[EfficiencyRow], out_dir: str | os.PathLike, metric: str = "nDCG@10"
) -> dict[str, Path]:
    """Writes `efficiency.md`, `efficiency.json` and (when something can be drawn) `efficiency.png`.

    Returns:
        `dict[str, Path]`: `"markdown"`, `"json"` and, if drawn, `"plot"` -> the written files.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out_dir / "efficiency.md", "json": out_dir / "efficiency.json"}
    write_text_atomic(paths["markdown"], efficiency_markdown(rows))
    write_json_atomic(paths["json"], [asdict(row) for row in rows])
    if any(row.median_ms is not None and row.metrics.get(metric) is not None for row in rows):
        paths["plot"] = out_dir / "efficiency.png"
        plot_efficiency(rows, paths["plot"], metric)
    return paths
