"""Evaluation of an adaptation on the corpus's judged queries: full-corpus dense retrieval (faiss, exact) and
re-ranking of BM25's top k, for BM25, the starting model, the teacher ensemble and every student; the students of
one setting are summarised over seeds (mean, spread, and paired tests on per-query means over seeds).

Every model's reports (metrics and per-query values, one per retrieval) are kept in `evaluation/<name>/metrics.json`
by `hf_kd.evaluation.reports.keep_reports` and read back when present, so a resumed adaptation measures only what is
new; `hf-kd compare` reads them as they are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..evaluation.metrics import evaluate_run
from ..evaluation.reports import EvaluationReport, keep_reports
from ..evaluation.significance import paired_test
from .curve import seed_mean
from .vectors import CorpusVectors, start_encoder

BASELINE = "start"
"""The student's exact starting point (the starting model at the students' passage length)."""
TEACHER_ROW = "teacher (BM25 + start)"
"""The default teacher the students learn from, measured as a ranker of the whole corpus (another teacher's row
is named after its members, `hf_kd.adapt.teacher.teacher_row_name`, and given in the evaluation's `teacher_row`)."""


def _measure(name: str, run_dense, run_rerank, eval_data, rel_threshold: int) -> dict:
    """The reports of a model's dense and re-ranking runs (either may be None), keyed as `keep_reports` keeps them."""
    measured = {}
    for kind, ranked in (("dense", run_dense), ("rerank", run_rerank)):
        if ranked is not None:
            report = EvaluationReport.from_evaluate_run(
                evaluate_run(ranked, eval_data.qrels, rel_threshold=rel_threshold),
                name=name,
                dataset=eval_data.name,
                retrieval=kind,
                rel_threshold=rel_threshold,
            )
            measured[(eval_data.name, kind)] = (report, None)
    return measured


def _kept(folder: Path, name: str, eval_data, retrievals: tuple[str, ...], compute) -> dict[str, Any]:
    """A model's row: per retrieval, its metrics and per-query nDCG@10, measured by `compute(name)` unless kept."""
    reports = keep_reports(folder / name, [(eval_data.name, kind) for kind in retrievals], lambda _: compute(name))
    return {
        "metrics": {kind: report.metrics_and_counts() for (_, kind), report in reports.items()},
        "per_query_ndcg@10": {kind: report.per_query_ndcg for (_, kind), report in reports.items()},
    }


BOTH = ("dense", "rerank")


def _retrievals(architecture: str) -> tuple[str, ...]:
    """What a student is measured by: a BERT_DOT student retrieves from the whole corpus and re-ranks; any other
    re-ranks."""
    return BOTH if architecture == "bert_dot" else ("rerank",)


def evaluate_adaptation(run) -> dict[str, Any]:
    """Measures BM25, the starting model (zero-shot, at the teacher's and at the students' passage length), the
    teacher (and a `--teacher-model` fused with another member on its own) and every student on `run.eval_data`;
    returns the rows and the summary over seeds."""
    from ..evaluation.bm25 import BM25Index
    from .teacher import corpus_ranking, load_member, teacher_members, teacher_row_name

    eval_data, budget, corpus = run.eval_data, run.budget, run.corpus
    folder = run.out / "evaluation"
    rel_threshold = 1 if max(g for judged in eval_data.qrels.values() for g in judged.values()) <= 1 else 2
    queries = eval_data.queries
    k = budget.eval_top_k
    bm25_run = BM25Index.build(corpus, show_progress=False).search(queries, k=k, show_progress=False)
    rows: dict[str, dict[str, Any]] = {}
    rows["BM25"] = _kept(
        folder, "BM25", eval_data, BOTH, lambda name: _measure(name, bm25_run, bm25_run, eval_data, rel_threshold)
    )

    def zero_shot(name: str, length: int) -> dict:
        # at the teacher's length these are the vectors the candidates were drawn from: read back, not encoded
        teacher_length = length == budget.teacher_max_length
        cache = run.start_vectors_path if teacher_length else None
        vectors = CorpusVectors(
            *start_encoder(run.start_model, length, budget.max_query_length, teacher_length), corpus, cache
        )
        return _measure(name, vectors.retrieve(queries, k), vectors.rerank(queries, bm25_run), eval_data, rel_threshold)

    def teacher(name: str, keys: list[str]) -> dict:
        # the teacher the students learn from, as a ranker: the union of its members' top lists, by fused score
        members = [load_member(run, key) for key in keys]
        scores, ranked = corpus_ranking(members, queries, budget.fusion_depth)
        ids, dense = list(corpus), {}
        for i, (qid, rows) in enumerate(zip(queries, ranked)):
            top = rows[np.argsort(-scores[i, rows], kind="stable")][:k]
            dense[qid] = {ids[row]: float(scores[i, row]) for row in top}
        return _measure(name, dense, None, eval_data, rel_threshold)

    if budget.teacher_max_length != budget.max_passage_length:  # the starting model as the teacher reads
        rows[f"start ({budget.teacher_max_length} word pieces)"] = _kept(
            folder, "start-teacher-length", eval_data, BOTH, lambda name: zero_shot(name, budget.teacher_max_length)
        )
    rows[BASELINE] = _kept(folder, "start", eval_data, BOTH, lambda name: zero_shot(name, budget.max_passage_length))
    keys = teacher_members(budget.teacher)
    teacher_row = teacher_row_name(budget.teacher, run.teacher_model)
    rows[teacher_row] = _kept(folder, "teacher", eval_data, ("dense",), lambda name: teacher(name, keys))
    if "model" in keys and len(keys) > 1:  # the teacher model on its own, beside BM25 and the start on theirs
        rows[teacher_row_name("model", run.teacher_model) + " alone"] = _kept(
            folder, "teacher-model", eval_data, ("dense",), lambda name: teacher(name, ["model"])
        )
    architectures = {name: arch for name, arch, _, _ in run.student_runs()}

    def measure_student(name: str, student_folder: str) -> dict:
        return _measure_student(name, student_folder, corpus, bm25_run, eval_data, k, rel_threshold)

    for name, student_folder in run.students.items():
        rows[name] = _kept(
            folder, name, eval_data, _retrievals(architectures[name]), lambda n, f=student_folder: measure_student(n, f)
        )
    curve = None
    if budget.checkpoint_every:
        curve = _learning_curve(run, rows, folder, architectures, measure_student, teacher_row)
    return {
        "eval_set": eval_data.name,
        "num_queries": len(queries),
        "rel_threshold": rel_threshold,
        "teacher_row": teacher_row,
        "rows": {name: row["metrics"] for name, row in rows.items()},
        "summary": summarise(rows, run.student_runs()),
        "per_query_ndcg@10": {name: row["per_query_ndcg@10"] for name, row in rows.items()},
        **({"learning_curve": curve} if curve is not None else {}),
    }


def _measure_student(name: str, student_folder: str, corpus, bm25_run, eval_data, k: int, rel_threshold: int) -> dict:
    """A BERT_DOT student: dense retrieval of the whole corpus and re-ranking; any other: re-ranking."""
    from ..evaluation.loading import load_model
    from ..evaluation.rerank_set import RerankSet

    model, tokenizer = load_model(student_folder, "cpu")
    queries = eval_data.queries
    if model.config.architecture == "bert_dot":
        vectors = CorpusVectors(model, tokenizer, corpus)
        return _measure(name, vectors.retrieve(queries, k), vectors.rerank(queries, bm25_run), eval_data, rel_threshold)
    needed = {p for cands in bm25_run.values() for p in cands}
    rerank_set = RerankSet(
        queries,
        {p: corpus[p] for p in needed},
        bm25_run,
        eval_data.qrels,
        top_k=k,
        rel_threshold=rel_threshold,
        name=eval_data.name,
    )
    return _measure(name, None, rerank_set.rerank(model, tokenizer), eval_data, rel_threshold)


def _learning_curve(
    run, rows: dict[str, dict[str, Any]], folder: Path, architectures: dict[str, str], measure, teacher_row: str
) -> list[dict[str, Any]]:
    """Measures every kept checkpoint of every student (rows `<student>@<step>`, kept like the others), then writes
    the curve's plot `curve.png`; returns its points (see `hf_kd.adapt.curve`)."""
    from ..training.checkpoints import complete_checkpoints
    from ..training.summary import TrainSummary
    from .curve import checkpoint_row_name, learning_curve, plot_learning_curve

    steps, seconds_per_step = {}, {}
    for name, student_folder in run.students.items():
        summary = TrainSummary.load(student_folder)
        last = summary.global_step
        measured = []
        for step, checkpoint in complete_checkpoints(student_folder):
            if step < last:
                row = checkpoint_row_name(name, step)
                rows[row] = _kept(
                    folder, row, run.eval_data, _retrievals(architectures[name]), lambda n, c=checkpoint: measure(n, c)
                )
                measured.append(step)
        steps[name] = [*measured, last]
        if summary.train_runtime_s and summary.steps_this_run:
            seconds_per_step[name] = summary.train_runtime_s / summary.steps_this_run
    points = learning_curve(
        rows,
        run.student_runs(),
        steps,
        seconds_per_step,
        run.budget.batch_size,
        BASELINE,
    )
    teacher = rows.get(teacher_row, {}).get("metrics", {})
    plot_learning_curve(
        points,
        {teacher_row: {kind: m["nDCG@10"] for kind, m in teacher.items()}},
        run.out / "curve.png",
        run.eval_data.name,
    )
    return points


def summarise(rows: dict[str, dict[str, Any]], student_runs: list[tuple[str, str, str, int]]) -> list[dict[str, Any]]:
    """One line per (architecture, setting, retrieval): nDCG@10 mean over seeds and its spread (the standard deviation
    of the seeds' means), and paired t-tests of the per-query means over seeds against the start, the self control
    and the twin.

    Args:
        rows: measured rows by name, each with its `per_query_ndcg@10` by retrieval; `BASELINE` among them.
        student_runs: (name, architecture, setting, seed) of the students to summarise (`AdaptBudget.student_runs`).
    """
    groups: dict[tuple[str, str], list[str]] = {}
    for name, architecture, setting, _ in student_runs:
        if name in rows:
            groups.setdefault((architecture, setting), []).append(name)
    lines = []
    for kind in ("dense", "rerank"):
        means = {}
        for (architecture, setting), names in groups.items():
            measured = [rows[n]["per_query_ndcg@10"][kind] for n in names if kind in rows[n]["per_query_ndcg@10"]]
            if measured:
                means[(architecture, setting)] = (
                    seed_mean(measured),
                    [float(np.mean(list(m.values()))) for m in measured],
                )
        start = rows[BASELINE]["per_query_ndcg@10"][kind]
        for (architecture, setting), (per_query, seed_means) in means.items():
            line = {
                "student": architecture,
                "setting": setting,
                "retrieval": kind,
                "seeds": len(seed_means),
                "ndcg@10": float(np.mean(list(per_query.values()))),
                "seed_means": seed_means,
                "spread": float(np.std(seed_means, ddof=1)) if len(seed_means) > 1 else 0.0,
                "comparisons": {},
            }
            against = {"start": start}
            for other in ("self", "twin"):
                if other != setting and (architecture, other) in means:
                    against[other] = means[(architecture, other)][0]
            for other, baseline in against.items():
                difference, p, n = paired_test(per_query, baseline)
                line["comparisons"][other] = {"difference": difference, "p": p, "queries": n}
            lines.append(line)
    return lines
