"""Paired significance of per-query metric differences between evaluation reports (`hf-kd compare`).

With a few dozen queries (27 DL20 dev queries, 50 SciFact test queries) a difference of 0.01 nDCG@10 is usually
noise; each comparison therefore carries the number of queries, the mean per-query difference with its 95%
confidence interval, and the two-sided p-value of a paired test over the queries both reports judged:

- `t-test`: Student's paired t-test (`scipy.stats.ttest_rel`), the test of the IR literature's tables;
- `permutation`: the paired randomisation test (`scipy.stats.permutation_test`, signs of the per-query differences
  flipped; exact up to 2^16 sign patterns, otherwise 100,000 seeded resamples), which assumes no normality.

Several candidates against one baseline are several tests: `correction="holm"` (Holm-Bonferroni) or
`"bonferroni"` adjusts their p-values together, so that "real" keeps its meaning.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..files import atomic_path, write_json_atomic
from .metrics import PRIMARY_METRIC
from .reports import EvaluationReport, read_reports

__all__ = [
    "CORRECTIONS",
    "TESTS",
    "PairedComparison",
    "adjust_p_values",
    "compare_reports",
    "comparisons_markdown",
    "format_p",
    "paired_test",
    "plot_comparisons",
    "read_compared_reports",
    "write_comparisons",
]

TESTS = ("t-test", "permutation")
CORRECTIONS = ("none", "holm", "bonferroni")
_EXACT_PERMUTATION_MAX_QUERIES = 16
_PERMUTATION_RESAMPLES = 100_000


def paired_test(
    a: Mapping[str, float], b: Mapping[str, float], test: str = "t-test", seed: int = 0
) -> tuple[float, float, int]:
    """Mean per-query difference of `a` over `b` and the two-sided paired p-value, over their common queries.

    Args:
        a, b: query id -> metric value.
        test: `t-test` or `permutation`.
        seed: the resampling seed of a permutation test too large to enumerate.

    Returns:
        `(difference, p, number of queries)`; p is 1.0 where every difference is 0 (or fewer than 2 queries).
    """
    if test not in TESTS:
        raise ValueError(f"unknown test {test!r}; choose from {', '.join(TESTS)}")
    queries = sorted(set(a) & set(b))
    x, y = np.array([a[q] for q in queries]), np.array([b[q] for q in queries])
    difference = float((x - y).mean()) if queries else float("nan")
    if len(queries) < 2 or not np.any(x != y):
        return difference, 1.0, len(queries)
    if test == "t-test":
        from scipy.stats import ttest_rel

        return difference, float(ttest_rel(x, y).pvalue), len(queries)
    from scipy.stats import permutation_test

    result = permutation_test(
        (x, y),
        lambda u, v, axis: np.mean(u - v, axis=axis),
        permutation_type="samples",
        vectorized=True,
        n_resamples=math.inf if len(queries) <= _EXACT_PERMUTATION_MAX_QUERIES else _PERMUTATION_RESAMPLES,
        alternative="two-sided",
        rng=np.random.default_rng(seed),
    )
    return difference, float(result.pvalue), len(queries)


def format_p(p: float) -> str:
    """A p-value as the tables print it: three decimals, or `<0.001`."""
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _confidence_interval(differences: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The t-interval of the mean of the per-query differences."""
    from scipy.stats import t

    n = len(differences)
    mean = float(differences.mean())
    if n < 2:
        return mean, mean
    half = float(t.ppf(0.5 + level / 2, n - 1) * differences.std(ddof=1) / math.sqrt(n))
    return mean - half, mean + half


@dataclass
class PairedComparison:
    """One candidate against the baseline on one evaluation set.

    Attributes:
        baseline, candidate: the compared models' names.
        evaluation: the evaluation set, e.g. `msmarco-dl20` or `scifact (test)`.
        metric: the compared per-query metric, e.g. `nDCG@10`.
        num_queries: the queries both reports judged; the test and the means are over these.
        baseline_mean, candidate_mean: the metric's means over those queries.
        difference: `candidate_mean - baseline_mean`.
        ci_low, ci_high: 95% t-interval of the mean per-query difference.
        test: `t-test` or `permutation`.
        p_value: two-sided p-value of the paired test.
        adjusted_p_value: after the correction for several comparisons (`p_value` without one).
        correction: `none`, `holm` or `bonferroni`.
        differences: query id -> the candidate's value minus the baseline's, for each of those queries.
    """

    baseline: str
    candidate: str
    evaluation: str
    metric: str
    num_queries: int
    baseline_mean: float
    candidate_mean: float
    difference: float
    ci_low: float
    ci_high: float
    test: str
    p_value: float
    adjusted_p_value: float
    correction: str = "none"
    differences: dict[str, float] = field(default_factory=dict)

    def significant(self, alpha: float = 0.05) -> bool:
        return self.adjusted_p_value < alpha

    def to_dict(self) -> dict:
        return asdict(self)


def adjust_p_values(p_values: Sequence[float], correction: str) -> list[float]:
    """p-values adjusted for testing them together: `holm` (Holm-Bonferroni, step-down) or `bonferroni`."""
    if correction not in CORRECTIONS:
        raise ValueError(f"unknown correction {correction!r}; choose from {', '.join(CORRECTIONS)}")
    m = len(p_values)
    if correction == "none":
        return list(p_values)
    if correction == "bonferroni":
        return [min(1.0, p * m) for p in p_values]
    adjusted = [0.0] * m
    running = 0.0
    for rank, index in enumerate(sorted(range(m), key=lambda i: p_values[i])):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def _evaluation_name(report: EvaluationReport) -> str:
    name = report.dataset or "evaluation"
    return f"{name} ({report.split})" if report.split else name


def _by_evaluation(reports: Sequence[EvaluationReport], source: str) -> dict[str, EvaluationReport]:
    keyed: dict[str, EvaluationReport] = {}
    for report in reports:
        key = _evaluation_name(report)
        if key in keyed:
            raise ValueError(f"{source}: holds two reports of {key}; compare one evaluation per set")
        keyed[key] = report
    return keyed


def _per_query(report: EvaluationReport, metric: str, source: str, evaluation: str) -> dict[str, float]:
    if report.per_query is None:
        raise ValueError(
            f"{source}: the report of {evaluation} has no per-query values; compare the metrics.json written by "
            "`hf-kd evaluate`, `hf-kd retrieve` or `hf-kd reproduce`"
        )
    values = {qid: v[metric] for qid, v in report.per_query.items() if metric in v}
    if not values:
        raise ValueError(f"{source}: the report of {evaluation} has no per-query {metric}")
    return values


def read_compared_reports(paths: Sequence[str]) -> list[tuple[str, list[EvaluationReport]]]:
    """The reports of each `metrics.json` file (or of the `metrics.json` in each folder), with the name each goes
    by: the recorded model name, else the folder's name; where two would share a name, the paths as given."""
    found = []
    for path in paths:
        file = Path(path)
        if file.is_dir():
            file = file / "metrics.json"
        if not file.is_file():
            raise FileNotFoundError(f"{path}: no such metrics file (or folder holding metrics.json)")
        reports = read_reports(file)
        name = next((r.name for r in reports if r.name), None) or (
            file.parent.name if file.name == "metrics.json" else file.stem
        )
        found.append((name, reports))
    names = [name for name, _ in found]
    return [(str(path) if names.count(name) > 1 else name, reports) for path, (name, reports) in zip(paths, found)]


def compare_reports(
    baseline: tuple[str, Sequence[EvaluationReport]],
    candidates: Sequence[tuple[str, Sequence[EvaluationReport]]],
    metric: str = PRIMARY_METRIC,
    test: str = "t-test",
    correction: str = "none",
    seed: int = 0,
) -> list[PairedComparison]:
    """Each candidate against the baseline on every evaluation set both hold, per query.

    Args:
        baseline: `(name, reports)` of the baseline (e.g. from [`read_compared_reports`]).
        candidates: `(name, reports)` of each candidate.
        metric: the per-query metric compared (default: nDCG@10).
        test: `t-test` or `permutation`.
        correction: `none`, `holm` or `bonferroni`, applied over all the comparisons returned.
        seed: the resampling seed of large permutation tests.

    Returns:
        `list[PairedComparison]`: candidate by candidate, in the baseline's order of evaluation sets.

    Raises:
        ValueError: a report without per-query values, two reports of one set in one source, or a candidate
            sharing no evaluation set (or no judged query) with the baseline; one line naming the source.
    """
    baseline_name, baseline_reports = baseline
    base = _by_evaluation(baseline_reports, baseline_name)
    found: list[PairedComparison] = []
    for name, reports in candidates:
        other = _by_evaluation(reports, name)
        shared = [key for key in base if key in other]
        if not shared:
            raise ValueError(
                f"{name}: no evaluation set in common with {baseline_name} "
                f"({', '.join(other) or 'none'} against {', '.join(base)})"
            )
        for key in shared:
            b = _per_query(base[key], metric, baseline_name, key)
            c = _per_query(other[key], metric, name, key)
            queries = sorted(set(b) & set(c))
            if not queries:
                raise ValueError(f"{name}: no query of {key} in common with {baseline_name}")
            difference, p, n = paired_test(c, b, test, seed)
            differences = {q: c[q] - b[q] for q in queries}
            low, high = _confidence_interval(np.array(list(differences.values())))
            found.append(
                PairedComparison(
                    baseline=baseline_name,
                    candidate=name,
                    evaluation=key,
                    metric=metric,
                    num_queries=n,
                    baseline_mean=float(np.mean([b[q] for q in queries])),
                    candidate_mean=float(np.mean([c[q] for q in queries])),
                    difference=difference,
                    ci_low=low,
                    ci_high=high,
                    test=test,
                    p_value=p,
                    adjusted_p_value=p,
                    correction=correction,
                    differences=differences,
                )
            )
    for comparison, adjusted in zip(found, adjust_p_values([c.p_value for c in found], correction)):
        comparison.adjusted_p_value = adjusted
    return found


def comparisons_markdown(comparisons: Sequence[PairedComparison], alpha: float = 0.05) -> str:
    """A Markdown table: one row per comparison, with the verdict at `alpha`."""
    if not comparisons:
        return ""
    first = comparisons[0]
    p_label = "p" if first.correction == "none" else f"p ({first.correction})"
    lines = [
        f"{first.metric}, paired {first.test} against {first.baseline}",
        "",
        f"| candidate | evaluation | queries | {first.baseline} | candidate | difference [95% CI] | {p_label} | |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in comparisons:
        verdict = f"real (p < {alpha:g})" if c.significant(alpha) else "noise"
        lines.append(
            f"| {c.candidate} | {c.evaluation} | {c.num_queries} | {c.baseline_mean:.3f} | {c.candidate_mean:.3f} "
            f"| {c.difference:+.3f} [{c.ci_low:+.3f}, {c.ci_high:+.3f}] | {format_p(c.adjusted_p_value)} | {verdict} |"
        )
    return "\n".join(lines) + "\n"


def write_comparisons(comparisons: Sequence[PairedComparison], path: str, alpha: float = 0.05) -> None:
    """The comparisons as JSON (`{"alpha", "comparisons": [...]}`), written atomically."""
    write_json_atomic(path, {"alpha": alpha, "comparisons": [c.to_dict() for c in comparisons]})


def plot_comparisons(comparisons: Sequence[PairedComparison], path: str, alpha: float = 0.05) -> None:
    """Per-query differences, one panel per comparison: a bar per query (sorted), the mean and its 95% interval,
    written atomically as a PNG. Where a mean gain comes from a few queries, this shows it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not comparisons:
        raise ValueError("no comparisons to plot")
    columns = min(2, len(comparisons))
    rows = math.ceil(len(comparisons) / columns)
    figure = Figure(figsize=(6.4 * columns, 3.6 * rows), dpi=120)
    FigureCanvasAgg(figure)
    for index, comparison in enumerate(comparisons, start=1):
        axes = figure.add_subplot(rows, columns, index)
        values = sorted(comparison.differences.values())
        colours = ["tab:green" if v > 0 else "tab:red" if v < 0 else "tab:gray" for v in values]
        axes.bar(range(len(values)), values, color=colours, width=0.85)
        axes.axhline(0.0, color="black", linewidth=0.8)
        axes.axhspan(comparison.ci_low, comparison.ci_high, color="tab:blue", alpha=0.15, label="95% CI of the mean")
        axes.axhline(comparison.difference, color="tab:blue", linewidth=1.2, label="mean difference")
        verdict = "real" if comparison.significant(alpha) else "noise"
        axes.set_title(
            f"{comparison.candidate} vs {comparison.baseline}, {comparison.evaluation}\n"
            f"{comparison.difference:+.3f}, p={format_p(comparison.adjusted_p_value)} ({verdict}, {comparison.test})",
            fontsize=9,
        )
        axes.set_xlabel(f"queries, sorted by difference ({comparison.num_queries})")
        axes.set_ylabel(f"{comparison.metric} difference")
        axes.set_xticks([])
        axes.legend(fontsize=7, loc="upper left")
    figure.tight_layout()
    with atomic_path(path) as tmp_path:
        figure.savefig(tmp_path, format="png")
