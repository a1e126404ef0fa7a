"""Evaluation of the reproduction: every model, teacher and ensemble re-ranks the same evaluation sets; runs and
reports (per-query values included) are kept per model by `hf_kd.evaluation.reports.keep_reports`, and sets
measured before are read back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..evaluation.reports import keep_reports, read_reports
from ..evaluation.rerank_set import RerankSet
from ..teachers import Teacher, normalize_scores, score_pairs
from .data import EvalSet


def open_eval_set(spec: EvalSet, top_k: int) -> RerankSet:
    """The prepared evaluation set `spec`, read once and shared by every model."""
    return RerankSet.from_files(
        spec.queries, spec.collection, spec.run, spec.qrels, top_k=top_k, rel_threshold=spec.rel_threshold,
        name=spec.name,
    )  # fmt: skip


def evaluate_and_keep(name: str, eval_sets: list[RerankSet], out: Path, rerank_one) -> dict[str, dict[str, float]]:
    """Re-ranks every evaluation set with `rerank_one(data) -> run`; keeps runs and reports (per-query values
    included) under `out/name` with `hf_kd.evaluation.reports.keep_reports`, which reads back the sets measured
    before. Returns evaluation set -> metrics and query counts."""
    by_name = {data.name: data for data in eval_sets}

    def measure(missing: list[tuple[str, str]]) -> dict:
        measured = {}
        for dataset, retrieval in missing:
            run = rerank_one(by_name[dataset])
            measured[(dataset, retrieval)] = (by_name[dataset].report(run, name=name), run)
        return measured

    reports = keep_reports(out / name, [(data.name, "rerank") for data in eval_sets], measure)
    return {dataset: report.metrics_and_counts() for (dataset, _), report in reports.items()}


def evaluate_model(name: str, model, tokenizer, eval_sets: list[RerankSet], out: Path) -> dict[str, dict[str, float]]:
    """Re-ranks every evaluation set with a zoo `model`; keeps runs and metrics under `out/name`. A progress bar
    says which set is re-ranked with which model, one step per query."""
    return evaluate_and_keep(
        name,
        eval_sets,
        out,
        lambda data: data.rerank(model, tokenizer, show_progress=True, model_name=name),
    )


def evaluate_teacher(name: str, teacher: Teacher, eval_sets: list[RerankSet], out: Path) -> dict[str, dict[str, float]]:
    """Re-ranks every evaluation set with any [`Teacher`] (a bi-encoder, a cross-encoder, a run file), one query's
    candidates at a time (in batches of similar length), under a progress bar that names the set and the teacher."""

    def rerank_one(data: RerankSet) -> dict[str, dict[str, float]]:
        run: dict[str, dict[str, float]] = {}
        candidates = {qid: pids for qid, pids in data.candidates().items() if pids}
        for qid in tqdm(candidates, desc=f"Re-ranking {data.name} with {name}", unit="query"):
            pids = candidates[qid]
            texts = [data.collection[pid] for pid in pids]
            scores = score_pairs(teacher, [data.queries[qid]] * len(pids), texts, batch_size=32)
            run[qid] = dict(zip(pids, scores.tolist()))
        return run

    return evaluate_and_keep(name, eval_sets, out, rerank_one)


def per_query_ndcg(out: Path) -> dict[str, dict[str, dict[str, float]]]:
    """Model -> evaluation set -> query id -> nDCG@10, of every model evaluated under `out`."""
    found = {}
    for path in sorted(out.glob("*/metrics.json")):
        reports = read_reports(path)
        per_set = {r.dataset: r.per_query_ndcg for r in reports if r.per_query_ndcg is not None}
        if per_set:
            found[reports[0].name or path.parent.name] = per_set
    return found


def mean_of_runs(runs: list[dict[str, dict[str, float]]], normalize: str = "none") -> dict[str, dict[str, float]]:
    """The ensemble's run: per candidate, the mean of the members' scores after the ensemble's per-teacher
    normalisation (`hf_kd.teachers.normalize_scores`; per query for the `query_` methods), as in training."""
    normalised = []
    for run in runs:
        keys = [(q, p) for q in run for p in run[q]]
        values = np.array([run[q][p] for q, p in keys])
        groups = np.array([q for q, _ in keys], dtype=object)
        # each candidate once: as both "positive" and "negative" it leaves the statistics unchanged
        scaled, _ = normalize_scores(values, values, normalize, groups=groups)
        normalised.append(dict(zip(keys, scaled.tolist())))
    return {q: {p: float(np.mean([n[(q, p)] for n in normalised])) for p in runs[0][q]} for q in runs[0]}
