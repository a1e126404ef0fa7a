"""Markdown tables shaped like the paper's, and the efficiency-effectiveness plot, from `results.json`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..evaluation.report import efficiency_markdown, join_efficiency, plot_efficiency

ARCHITECTURE_LABELS = {
    "bert_dot": "BERT_DOT",
    "colbert": "ColBERT",
    "prett": "PreTT",
    "tk": "TK",
    "bert_cat": "BERT_CAT (small)",
}
SETTING_LABELS = {"none": "no teacher", "T1": "T1", "T2": "T2"}


def _cell(metrics: dict[str, dict[str, float]] | None, dataset: str) -> str:
    if not metrics or dataset not in metrics:
        return "–"
    m = metrics[dataset]
    return f"{m['nDCG@10']:.3f} / {m['MRR@10']:.3f}"


def students_table(results: dict[str, Any]) -> str:
    """Students x teacher setting: nDCG@10 / MRR@10 on the DL20 dev queries and on SciFact test."""
    budget, metrics = results["budget"], results["metrics"]
    settings = budget["settings"]
    header = (
        "| student | "
        + " | ".join(f"{SETTING_LABELS[s]}: DL20 dev | {SETTING_LABELS[s]}: SciFact" for s in settings)
        + " |"
    )
    lines = [header, "|---|" + "---|---|" * len(settings)]
    for architecture in budget["students"]:
        cells = []
        for setting in settings:
            m = metrics.get(f"{architecture}-{setting}")
            cells += [_cell(m, "dl20-dev"), _cell(m, "scifact-test")]
        lines.append(f"| {ARCHITECTURE_LABELS[architecture]} | " + " | ".join(cells) + " |")
    for name in ["BM25", "MiniLM zero-shot", "teacher_1", "teacher_2", "T2 (teacher mean)"]:
        if name in metrics:
            row = f"| {name} | {_cell(metrics[name], 'dl20-dev')} | {_cell(metrics[name], 'scifact-test')} |"
            lines.append(row + " |" * (2 * len(settings) - 2))
    return "\n".join(lines)


def loss_table(results: dict[str, Any]) -> str:
    """BERT_DOT with T2: Margin-MSE against the paper's baseline losses."""
    metrics = results["metrics"]
    rows = [("Margin-MSE", "bert_dot-T2")] + [
        (loss, f"bert_dot-T2-{loss}") for loss in results["budget"]["loss_comparison"]
    ]
    rows.append(("no teacher (RankNet)", "bert_dot-none"))
    lines = ["| loss (BERT_DOT, T2) | DL20 dev nDCG@10 / MRR@10 | SciFact nDCG@10 / MRR@10 |", "|---|---|---|"]
    for label, name in rows:
        if name in metrics:
            lines.append(f"| {label} | {_cell(metrics[name], 'dl20-dev')} | {_cell(metrics[name], 'scifact-test')} |")
    return "\n".join(lines)


def efficiency_rows(results: dict[str, Any]):
    effectiveness = {}
    students = {
        ARCHITECTURE_LABELS[a]: next(
            (f"{a}-{s}" for s in ("T2", "T1", "none") if f"{a}-{s}" in results["metrics"]), None
        )
        for a in results["budget"]["students"]
    }
    for label, name in students.items():
        if name:
            effectiveness[label] = results["metrics"][name]["dl20-dev"]
    if "teacher_1" in results["metrics"]:
        effectiveness["BERT_CAT (teacher_1)"] = results["metrics"]["teacher_1"]["dl20-dev"]
    return join_efficiency(results["latency"], effectiveness)


def write_report(results: dict[str, Any], out: Path) -> str:
    """Writes `tables.md` and `efficiency.png`; returns the markdown."""
    rows = efficiency_rows(results)
    sections = [
        f"# Reproduction ({results['budget']['name']} budget)",
        f"Cells: nDCG@10 / MRR@10. DL20 dev: {results['data']['dl20_dev']['num_queries']} TREC-DL 2020 queries "
        f"never trained on, BM25 top-{results['budget']['rerank_top_k']} re-ranked (MRR at grade >= 2). "
        f"SciFact: {results['data']['scifact_test']['num_queries']} test queries, BM25 top-"
        f"{results['budget']['rerank_top_k']} re-ranked.",
        "## Students and teachers",
        students_table(results),
    ]
    if results["budget"]["loss_comparison"] and "bert_dot-T2" in results["metrics"]:
        sections += ["## Loss comparison", loss_table(results)]
    sections += [
        "## Efficiency (re-ranking latency per query, DL20 dev)",
        efficiency_markdown(rows),
        f"Device: {results['environment']['device']}; wall time {results['wall_time_s']:.0f} s.",
    ]
    markdown = "\n\n".join(sections) + "\n"
    (out / "tables.md").write_text(markdown, encoding="utf-8")
    plot_efficiency(rows, out / "efficiency.png")
    return markdown
