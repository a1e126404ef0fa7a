"""Score distributions of teachers and students on the positives and negatives of triples (`hf-kd analyze-scores`).

The paper observes that architectures settle in different score ranges, which is why students learn the
teacher's margin rather than its scores. This module shows it: for each teacher of a teacher-score
dataset (and each student model given), the distributions of its scores on positives and negatives and of
its margins `score(q, p+) - score(q, p-)`, drawn as PNG files, with summary statistics in JSON.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..data.score_dataset import ScoreDataset
from ..files import atomic_path, write_json_atomic
from .loading import load_teacher
from .scoring import DEFAULT_BATCH_SIZE, score_pairs

__all__ = [
    "SUMMARY_FILENAME",
    "analyze_scores",
    "plot_margin_distributions",
    "plot_score_distributions",
    "score_statistics",
]

SUMMARY_FILENAME = "score_summary.json"
SCORES_PLOT_FILENAME = "score_distributions.png"
MARGINS_PLOT_FILENAME = "margin_distributions.png"
_QUANTILES = {"q05": 0.05, "q25": 0.25, "median": 0.5, "q75": 0.75, "q95": 0.95}

Scores = Mapping[str, tuple[np.ndarray, np.ndarray]]


def _describe(values: np.ndarray) -> dict[str, float]:
    values = np.asarray(values, dtype=np.float64)
    quantiles = np.quantile(values, list(_QUANTILES.values()))
    return {
        "mean": float(values.mean()),
        "std": float(values.std()),
        "min": float(values.min()),
        **{name: float(q) for name, q in zip(_QUANTILES, quantiles)},
        "max": float(values.max()),
    }


def score_statistics(pos: np.ndarray, neg: np.ndarray) -> dict:
    """Summary statistics of one scorer on triples.

    Args:
        pos (`np.ndarray`): (n,) scores of the positives.
        neg (`np.ndarray`): (n,) scores of the negatives.

    Returns:
        `dict`: `triples`; `pos`, `neg` and `margin` (= pos - neg), each with mean, std (population), min,
        q05, q25, median, q75, q95 and max; `positive_ranked_first`, the fraction of triples with
        pos > neg; `ties`, the fraction with pos == neg.

    Example:
        ```python
        >>> stats = score_statistics(np.array([3.0, 1.0, 2.0]), np.array([1.0, 2.0, 2.0]))
        >>> stats["margin"]["mean"], round(stats["positive_ranked_first"], 3), round(stats["ties"], 3)
        (0.3333333333333333, 0.333, 0.333)
        ```
    """
    pos, neg = np.asarray(pos, dtype=np.float64), np.asarray(neg, dtype=np.float64)
    if len(pos) == 0 or len(pos) != len(neg):
        raise ValueError(f"expected as many positive as negative scores, at least one, got {len(pos)} and {len(neg)}")
    margin = pos - neg
    return {
        "triples": len(pos),
        "pos": _describe(pos),
        "neg": _describe(neg),
        "margin": _describe(margin),
        "positive_ranked_first": float(np.mean(margin > 0)),
        "ties": float(np.mean(margin == 0)),
    }


def _save_figure(figure: Figure, path: Path) -> None:
    FigureCanvasAgg(figure)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


def plot_score_distributions(scores: Scores, path: str | os.PathLike, bins: int = 50) -> None:
    """Draws, per scorer, the histograms of its scores on positives and on negatives (own x range each).

    Args:
        scores: scorer name -> (pos, neg) scores.
        path (`str` or `os.PathLike`): the PNG file to write.
        bins (`int`, *optional*, defaults to 50): histogram bins per scorer.
    """
    columns = min(3, len(scores))
    rows = -(-len(scores) // columns)
    figure = Figure(figsize=(4.5 * columns, 3.2 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).reshape(-1)
    for ax, (name, (pos, neg)) in zip(axes, scores.items()):
        edges = np.histogram_bin_edges(np.concatenate([pos, neg]), bins=bins)
        ax.hist(pos, bins=edges, alpha=0.55, color="tab:green", label="positives")
        ax.hist(neg, bins=edges, alpha=0.55, color="tab:red", label="negatives")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("score")
        ax.set_ylabel("triples")
        ax.legend(fontsize=8)
    for ax in axes[len(scores) :]:
        ax.set_visible(False)
    figure.suptitle("Scores on positives and negatives")
    _save_figure(figure, Path(path))


def plot_margin_distributions(scores: Scores, path: str | os.PathLike, bins: int = 60) -> None:
    """Draws every scorer's margin distribution (`pos - neg`) on shared axes, so their ranges compare.

    Args:
        scores: scorer name -> (pos, neg) scores.
        path (`str` or `os.PathLike`): the PNG file to write.
        bins (`int`, *optional*, defaults to 60): histogram bins over the common range.
    """
    margins = {name: np.asarray(pos, np.float64) - np.asarray(neg, np.float64) for name, (pos, neg) in scores.items()}
    edges = np.histogram_bin_edges(np.concatenate(list(margins.values())), bins=bins)
    figure = Figure(figsize=(8, 4.5), layout="constrained")
    ax = figure.subplots()
    for name, margin in margins.items():
        ax.hist(margin, bins=edges, histtype="step", linewidth=1.5, density=True, label=name)
    ax.axvline(0.0, color="black", linewidth=0.8, linestyle="--")
    ax.set_xlabel("margin = score(q, p+) - score(q, p-)")
    ax.set_ylabel("density")
    ax.set_title("Margin distributions")
    ax.legend(fontsize=8)
    _save_figure(figure, Path(path))


def _distinct_name(name: str, taken: Mapping[str, object]) -> str:
    candidate, index = name, 2
    while candidate in taken:
        candidate, index = f"{name}_{index}", index + 1
    return candidate


def analyze_scores(
    scores_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    models: Sequence[str | os.PathLike] = (),
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    bf16: bool = False,
    device: str | torch.device | None = None,
    max_triples: int | None = None,
    show_progress_bar: bool = True,
) -> dict:
    """Draws the score and margin distributions of a teacher-score dataset's teachers and of student models.

    Writes into `out_dir`: `score_distributions.png`, `margin_distributions.png` and `score_summary.json`
    (see [`score_statistics`]; one entry per scorer).

    Args:
        scores_path (`str` or `os.PathLike`): a teacher-score dataset folder (see `hf_kd.teachers.score_triples`).
            With several teachers, each teacher and their ensemble (`pos_score` / `neg_score`) are analysed.
        out_dir (`str` or `os.PathLike`): the folder for the plots and the summary (created if missing).
        models (`Sequence[str]`, *optional*): checkpoints (students such as hf-kd BERT_DOT, or other
            cross-encoders) that score the same triples, each loaded with `load_teacher`.
        batch_size (`int`, *optional*, defaults to 64): pairs per forward pass of the models.
        bf16 (`bool`, *optional*, defaults to `False`): run the models under bfloat16 autocast.
        device (`str` or `torch.device`, *optional*): where the models run.
        max_triples (`int`, *optional*): analyse only the first this many triples.
        show_progress_bar (`bool`, *optional*, defaults to `True`): show the models' scoring progress.

    Returns:
        `dict`: the summary written to `score_summary.json`.
    """
    dataset = ScoreDataset.open(scores_path)
    table, provenance = dataset.table(), dataset.provenance
    teacher_scores = dataset.teacher_scores(table)
    if max_triples is not None:
        if max_triples < 1:
            raise ValueError(f"max_triples must be >= 1, got {max_triples}")
        table = table.slice(0, max_triples)
        teacher_scores = {name: (pos[:max_triples], neg[:max_triples]) for name, (pos, neg) in teacher_scores.items()}
    if table.num_rows == 0:
        raise ValueError(f"{scores_path} holds no triples to analyse")
    described = {d.get("name"): d for d in provenance.parameters.get("teachers", [])}
    scores: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    sources: dict[str, dict] = {}
    for name, pair in teacher_scores.items():
        scores[name] = pair
        sources[name] = {"kind": "teacher", "name_or_path": described.get(name, {}).get("name_or_path")}
    if len(teacher_scores) > 1:
        name = _distinct_name("ensemble", scores)
        scores[name] = tuple(table.column(column).to_numpy() for column in ScoreDataset.score_columns())
        sources[name] = {"kind": "ensemble", "normalize": provenance.parameters.get("normalize")}

    queries = table.column("query").to_pylist()
    passages = table.column("positive").to_pylist() + table.column("negative").to_pylist()
    for model in models:
        scorer = load_teacher(model, device=device)
        model_scores = score_pairs(scorer, queries + queries, passages, batch_size, bf16, show_progress_bar)
        name = _distinct_name(scorer.name, scores)
        scores[name] = (model_scores[: table.num_rows], model_scores[table.num_rows :])
        sources[name] = {"kind": "model", "name_or_path": scorer.describe()["name_or_path"]}

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labelled = {f"{name} ({sources[name]['kind']})": pair for name, pair in scores.items()}
    plot_score_distributions(labelled, out / SCORES_PLOT_FILENAME)
    plot_margin_distributions(labelled, out / MARGINS_PLOT_FILENAME)
    summary = {
        "source": str(Path(scores_path).resolve()),
        "triples": table.num_rows,
        "plots": [SCORES_PLOT_FILENAME, MARGINS_PLOT_FILENAME],
        "scorers": {name: {**sources[name], **score_statistics(pos, neg)} for name, (pos, neg) in scores.items()},
    }
    write_json_atomic(out / SUMMARY_FILENAME, summary)
    return summary
