"""The learning curve of an adaptation: nDCG@10 of each setting's students at every kept checkpoint
(`checkpoint_every`), against the pairs they had seen and the minutes they had trained, with the starting model as
step 0.

A point is the mean over seeds of one setting's students at one step, with the seeds' spread and paired t-tests of
the per-query means over seeds against the start and, where the self control was trained, against it at the same
step. The checkpoints lie on one schedule (linear decay to the budget's last step): a point at step 200 of a
400-step run is not a 200-step run's end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..evaluation.significance import paired_test

KINDS = ("dense", "rerank")


def checkpoint_row_name(student: str, step: int) -> str:
    return f"{student}@{step}"


def learning_curve(
    rows: dict[str, dict[str, Any]],
    runs: list[tuple[str, str, str, int]],
    steps: dict[str, list[int]],
    seconds_per_step: dict[str, float],
    batch_size: int,
    baseline: str,
) -> list[dict[str, Any]]:
    """One point per (architecture, setting, retrieval, step).

    Args:
        rows: measured rows by name (`_measure`'s results): the baseline, the students and their checkpoints
            (`checkpoint_row_name`).
        runs: the budget's students, (name, architecture, setting, seed).
        steps: each student's measured steps (its checkpoints' and its last).
        seconds_per_step: each student's training time per step.
        batch_size: pairs per step.
        baseline: the row of the starting model (step 0).
    """
    groups: dict[tuple[str, str], list[str]] = {}
    for name, architecture, setting, _ in runs:
        if name in steps:
            groups.setdefault((architecture, setting), []).append(name)
    points = []
    for kind in KINDS:
        start = rows[baseline]["per_query_ndcg@10"].get(kind)
        if start is None:
            continue
        per_group: dict[tuple[str, str], dict[int, tuple[dict[str, float], list[float]]]] = {}
        for group, names in groups.items():
            common = sorted(set.intersection(*(set(steps[n]) for n in names)))
            for step in common:
                measured = [_row_at(rows, n, step, steps[n])["per_query_ndcg@10"].get(kind) for n in names]
                if any(m is None for m in measured):
                    continue
                per_group.setdefault(group, {})[step] = (
                    seed_mean(measured),
                    [float(np.mean(list(m.values()))) for m in measured],
                )
        for (architecture, setting), by_step in per_group.items():
            names = groups[(architecture, setting)]
            minutes_per_step = float(np.mean([seconds_per_step.get(n, 0.0) for n in names])) / 60
            points.append(_point(architecture, setting, kind, 0, 0.0, seed_mean([start]), [], {}, batch_size))
            for step, (per_query, seed_means) in sorted(by_step.items()):
                against = {"start": start}
                self_control = per_group.get((architecture, "self"), {}).get(step)
                if setting != "self" and self_control is not None:
                    against["self"] = self_control[0]
                points.append(
                    _point(
                        architecture,
                        setting,
                        kind,
                        step,
                        step * minutes_per_step,
                        per_query,
                        seed_means,
                        {other: paired_test(per_query, baseline_q) for other, baseline_q in against.items()},
                        batch_size,
                    )
                )
    return points


def _row_at(rows: dict[str, dict[str, Any]], name: str, step: int, measured_steps: list[int]) -> dict[str, Any]:
    return rows[name] if step == max(measured_steps) else rows[checkpoint_row_name(name, step)]


def seed_mean(per_query: list[dict[str, float]]) -> dict[str, float]:
    queries = sorted(set.intersection(*(set(p) for p in per_query)))
    return {q: float(np.mean([p[q] for p in per_query])) for q in queries}


def _point(architecture, setting, kind, step, minutes, per_query, seed_means, tests, batch_size) -> dict[str, Any]:
    return {
        "student": architecture,
        "setting": setting,
        "retrieval": kind,
        "step": step,
        "pairs_seen": step * batch_size,
        "minutes": round(minutes, 2),
        "ndcg@10": float(np.mean(list(per_query.values()))),
        "seed_means": seed_means,
        "spread": float(np.std(seed_means, ddof=1)) if len(seed_means) > 1 else 0.0,
        "comparisons": {
            other: {"difference": difference, "p": p, "queries": n} for other, (difference, p, n) in tests.items()
        },
    }


def plot_learning_curve(
    points: list[dict[str, Any]], references: dict[str, dict[str, float]], path: Path, title: str
) -> None:
    """nDCG@10 against pairs seen, one panel per retrieval, one line per (student, setting) with its seeds' spread;
    `references` (name -> retrieval -> nDCG@10) are drawn as horizontal lines (the teacher)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    kinds = [kind for kind in KINDS if any(p["retrieval"] == kind for p in points)]
    figure = Figure(figsize=(6 * len(kinds), 4.2), layout="constrained")
    FigureCanvasAgg(figure)
    for index, kind in enumerate(kinds):
        axes = figure.add_subplot(1, len(kinds), index + 1)
        lines: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for point in points:
            if point["retrieval"] == kind:
                lines.setdefault((point["student"], point["setting"]), []).append(point)
        for (student, setting), line in lines.items():
            axes.errorbar(
                [p["pairs_seen"] for p in line],
                [p["ndcg@10"] for p in line],
                yerr=[p["spread"] for p in line],
                marker="o",
                capsize=3,
                label=f"{student} {setting}",
            )
        for offset, (name, values) in enumerate(references.items()):
            if kind in values:
                axes.axhline(values[kind], linestyle="--", color=f"C{len(lines) + offset}", label=name)
        axes.set_xlabel("training pairs seen")
        axes.set_ylabel("nDCG@10")
        axes.set_title(f"{title}: {'full-corpus dense retrieval' if kind == 'dense' else 'BM25 re-ranking'}")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    figure.savefig(path, dpi=120)
