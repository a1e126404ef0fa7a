"""`tables.md` of an adaptation: what it learned from, what each model measures, and whether the differences are
real."""

from __future__ import annotations

from typing import Any

from ..evaluation.significance import format_p, paired_test
from .evaluation import BASELINE, TEACHER_ROW

_SETTING_NAMES = {
    "teacher": "adapted (Margin-MSE from {teacher})",
    "self": "self control (Margin-MSE from the start's own scores)",
    "twin": "no-teacher twin (RankNet, source document vs a BM25 negative)",
}
_METRICS = ("nDCG@10", "MRR@10", "Recall@100")


def _cell(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _comparison(c: dict[str, float] | None) -> str:
    if c is None:
        return "–"
    p = format_p(c["p"])
    return f"{c['difference']:+.3f}, p{p if p.startswith('<') else '=' + p}"


def _over_seeds(ndcg: float, spread: float, seeds: int) -> str:
    """A mean over seeds with its spread; one seed has none."""
    return f"{ndcg:.3f} ± {spread:.3f}" if seeds > 1 else f"{ndcg:.3f} (one seed)"


def _precision(bf16: bool | list[bool]) -> str:
    if isinstance(bf16, list):  # pooled runs of both precisions
        return " and ".join(_precision(value) for value in bf16) + " (pooled runs)"
    return "bfloat16" if bf16 else "float32"


def _model_label(path: str) -> str:
    from ..pretrained import minilm_path

    try:
        if str(path) == str(minilm_path()):
            return "all-MiniLM-L6-v2"
    except (ImportError, FileNotFoundError):
        pass
    return str(path)


def write_adaptation_report(results: dict[str, Any]) -> str:
    budget, queries, pairs = results["budget"], results["queries"], results["pairs"]
    teacher = (results.get("teacher") or {}).get("label", "BM25 + start")
    made = f"{queries.get('method')} pseudo-queries" if "method" in queries else f"queries of {queries.get('source')}"
    lines = [
        f"# Adaptation to {results['corpus']} ({results['documents']} documents), budget `{budget['name']}`",
        "",
        f"- training queries: {queries['queries']} ({made}); pairs labelled: {pairs['pairs']}"
        + (
            f", the {pairs['trained']} farthest from the start's own margins kept"
            if budget.get("pair_selection") == "disagreement"
            else ""
        ),
        f"- students: {', '.join(budget['students'])} from {_model_label(results['start_model'])}, "
        f"{budget['steps']} steps of {budget['batch_size']} pairs, learning rate {budget['learning_rate']}, "
        f"{budget['max_passage_length']} word pieces, {_precision(results['bf16'])}, dropout "
        f"{'of the backbone' if budget['backbone_dropout'] is None else budget['backbone_dropout']}, "
        f"seeds {budget['seeds']}",
        f"- teacher: {teacher}"
        + (f" ({results['teacher']['model']})" if (results.get("teacher") or {}).get("model") else ""),
        f"- time: {results['wall_time_s'] / 60:.1f} min ("
        + ", ".join(f"{name} {seconds / 60:.1f}" for name, seconds in results["stage_seconds"].items())
        + ")"
        + (" in all, summed over the pooled runs" if results.get("pooled_from") else ""),
        *(
            [f"- pooled from {len(results['pooled_from'])} runs: {', '.join(results['pooled_from'])}"]
            if results.get("pooled_from")
            else []
        ),
        "",
    ]
    evaluation = results.get("evaluation")
    if not evaluation:
        lines.append("No judged queries for this corpus: nothing was measured (pass --eval-queries and --qrels).")
        return "\n".join(lines) + "\n"
    lines += [
        f"## {evaluation['eval_set']}: {evaluation['num_queries']} judged queries",
        "",
        "`start` is the students' starting point as they read passages "
        f"({budget['max_passage_length']} word pieces). "
        "Dense: the whole corpus, exact search. Re-rank: BM25's top "
        f"{budget['eval_top_k']}. The teacher is measured as a ranker of the whole corpus (the union of its members' "
        "top lists); re-ranking students are not dense retrievers (–).",
        "",
        "| model | "
        + " | ".join(f"dense {m}" for m in _METRICS)
        + " | "
        + " | ".join(f"re-rank {m}" for m in _METRICS)
        + " |",
        "|---|" + "---|" * (2 * len(_METRICS)),
    ]
    for name, metrics in evaluation["rows"].items():
        dense, rerank = metrics.get("dense", {}), metrics.get("rerank", {})
        lines.append(
            f"| {name} | "
            + " | ".join(_cell(dense.get(m)) for m in _METRICS)
            + " | "
            + " | ".join(_cell(rerank.get(m)) for m in _METRICS)
            + " |"
        )
    lines += _teacher_headroom(evaluation)
    lines += [
        "",
        "### Over seeds: nDCG@10 mean ± spread (the standard deviation of the seeds' means), and paired t-tests on "
        "the per-query means over seeds",
        "",
        "| student | setting | retrieval | seeds | nDCG@10 | vs start | vs self control | vs twin |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for line in evaluation["summary"]:
        cells = [_comparison(line["comparisons"].get(other)) for other in ("start", "self", "twin")]
        setting = _SETTING_NAMES[line["setting"]].format(teacher=teacher)
        lines.append(
            f"| {line['student']} | {setting} | {line['retrieval']} | {line['seeds']} | "
            f"{_over_seeds(line['ndcg@10'], line['spread'], line['seeds'])} | " + " | ".join(cells) + " |"
        )
    if "twin" in budget["settings"] and "method" not in queries:
        lines += [
            "",
            "No no-teacher twin: it learns each query's source document as its positive, which pseudo-queries have "
            "and given queries (a query log) do not.",
        ]
    curve = evaluation.get("learning_curve")
    if curve:
        lines += _curve_table(curve)
    return "\n".join(lines) + "\n"


def _teacher_headroom(evaluation: dict[str, Any]) -> list[str]:
    """One line: whether the teacher ranks the corpus better than the students' start. Where it does not, no student
    can be expected to gain from its labels over the self control, whatever the training."""
    per_query = evaluation.get("per_query_ndcg@10", {})
    teacher_row = evaluation.get("teacher_row", TEACHER_ROW)
    teacher = per_query.get(teacher_row, {}).get("dense")
    start = per_query.get(BASELINE, {}).get("dense")
    if not teacher or not start:
        return []
    difference, p, _ = paired_test(teacher, start)
    rows = evaluation["rows"]
    measured = (
        f"The teacher ranks the whole corpus at {rows[teacher_row]['dense']['nDCG@10']:.3f} nDCG@10, the start at "
        f"{rows[BASELINE]['dense']['nDCG@10']:.3f} ({_comparison({'difference': difference, 'p': p})})"
    )
    if difference > 0 and p < 0.05:
        return ["", f"{measured}: the headroom the students learn from."]
    return [
        "",
        f"{measured}: **the teacher is not measurably stronger than the students' start on this corpus**, so its "
        "labels cannot be expected to lift a student above its self control.",
    ]


def _curve_table(points: list[dict[str, Any]]) -> list[str]:
    lines = [
        "",
        "### Learning curve (`curve.png`): nDCG@10 at every kept checkpoint, mean ± spread over seeds, minutes of "
        "training; the checkpoints lie on one schedule (the learning rate decays to the last step)",
        "",
        "| student | setting | retrieval | step | pairs seen | minutes | nDCG@10 | vs start | vs self control |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for point in points:
        cells = [_comparison(point["comparisons"].get(other)) for other in ("start", "self")]
        lines.append(
            f"| {point['student']} | {point['setting']} | {point['retrieval']} | {point['step']} | "
            f"{point['pairs_seen']} | {point['minutes']:.1f} | "
            f"{_over_seeds(point['ndcg@10'], point['spread'], len(point['seed_means']))} | " + " | ".join(cells) + " |"
        )
    return lines
