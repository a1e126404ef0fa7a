"""Evaluation of the reproduction: every model, teacher and ensemble re-ranks the same evaluation sets; runs,
metrics and per-query nDCG@10 are kept per model, and sets measured before are read back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..evaluation.rerank_set import RerankSet
from ..files import write_json_atomic
from ..teachers import Teacher, normalize_scores, score_pairs
from .data import EvalSet


def open_eval_set(spec: EvalSet, top_k: int) -> RerankSet:
    """The prepared evaluation set `spec`, read once and shared by every model."""
    return RerankSet.from_files(
        spec.queries, spec.collection, spec.run, spec.qrels, top_k=top_k, rel_threshold=spec.rel_threshold,
        name=spec.name,
    )  # fmt: skip


def evaluate_and_keep(name: str, eval_sets: list[RerankSet], out: Path, rerank_one) -> dict[str, dict[str, float]]:
    """Re-ranks every evaluation set with `rerank_one(data) -> run`; keeps runs, metrics and per-query nDCG@10
    under `out/name`. Sets measured before are read back, not re-ranked again; new sets are added."""
    folder = out / name
    record = {"name": name, "metrics": {}, "per_query_ndcg@10": {}}
    runs: dict[str, dict] = {}
    if (folder / "metrics.json").is_file():
        record = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
        runs = json.loads((folder / "runs.json").read_text(encoding="utf-8"))
    todo = [data for data in eval_sets if data.name not in record["metrics"]]
    if todo or not (folder / "metrics.json").is_file():
        for data in todo:
            runs[data.name] = rerank_one(data)
            metrics, per_query = data.evaluate(runs[data.name])
            record["metrics"][data.name] = metrics
            record.setdefault("per_query_ndcg@10", {})[data.name] = per_query
        folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(str(folder / "runs.json"), runs)
        write_json_atomic(str(folder / "metrics.json"), record)
    return record["metrics"]


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
        record = json.loads(path.read_text(encoding="utf-8"))
        if "per_query_ndcg@10" in record:
            found[record["name"]] = record["per_query_ndcg@10"]
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
