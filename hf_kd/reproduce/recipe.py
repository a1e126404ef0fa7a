"""The paper's experiment at small scale: `run_reproduction` runs the stages of `stages` in order (data ->
backbones -> teachers -> teacher scores -> students -> evaluation -> latency) and writes the tables.

Every stage writes its result under the output folder and is skipped when that result exists, so an interrupted
reproduction continues where it stopped; a folder holds the reproduction of one budget only.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from dataclasses import MISSING, Field, fields
from pathlib import Path
from typing import Any

import torch
from transformers import set_seed

from .. import __version__
from ..files import write_json_atomic
from ..jobs import fingerprint_changes, output_lock, record_timings
from . import stages
from .budgets import Budget
from .data import prepare_data
from .evaluation import per_query_ndcg
from .report import claims, write_report
from .stages import Reproduction


def _log(message: str) -> None:
    print(f"[hf-kd reproduce] {message}", flush=True)


# --------------------------------------------------------------------------------------------------------------------
# The whole experiment
# --------------------------------------------------------------------------------------------------------------------


def run_reproduction(budget: Budget, data_dir: str | Path, out: str | Path) -> dict[str, Any]:
    """Runs (or resumes) every stage and writes `results.json`, `tables.md` and `efficiency.png` into `out`.

    Holds the lock of `out` throughout: a second reproduction into the same folder stops with the holder's name.
    """
    budget.validate()
    with output_lock(out):
        return _run_stages(budget, Path(data_dir), Path(out))


def _run_stages(budget: Budget, data_dir: Path, out: Path) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    _check_same_budget(budget, out)
    start = time.perf_counter()
    timings: dict[str, float] = {}

    def stage(name: str, work: Callable[[], Any]) -> Any:
        _log(f"stage {name}")
        t0 = time.perf_counter()
        result = work()
        timings[name] = round(time.perf_counter() - t0, 2)
        return result

    set_seed(budget.seed)
    data = stage("data", lambda: prepare_data(budget, data_dir, out / "data"))
    _log(f"training triples: {data.triple_counts}; DL20 dev queries: {len(data.dev_query_ids)}")
    if data.teacher_triples:
        _log(f"candidate pairs for the teachers to label: {data.teacher_triple_counts}")
    run = Reproduction(budget, out, data)
    stage("backbones", lambda: stages.build_backbones(run))
    stage("teachers", lambda: stages.train_teachers(run))
    stage("teacher_scores", lambda: stages.score_training_triples(run))
    stage("students", lambda: stages.train_students(run))
    metrics = stage("evaluation", lambda: stages.evaluate_all(run))
    latency = stage("latency", lambda: stages.measure_latency(run))

    results = {
        "budget": budget.to_dict(),
        "data": data.to_dict(),
        "metrics": metrics,
        "latency": latency,
        "teacher_score_columns": run.teacher_columns,
        "teachers": _teacher_sources(budget),
        "per_query_ndcg@10": per_query_ndcg(run.evaluations),
        "environment": environment(),
        **record_timings(out, timings, round(time.perf_counter() - start, 2)),
    }
    results["claims"] = claims(results)
    write_json_atomic(str(out / "results.json"), results)
    write_report(results, out)
    return results


PRETRAINED_TEACHER_LABELS = {
    "mpnet": "all-mpnet-base-v2 (sentence-transformers bi-encoder, cosine)",
    "minilm": "all-MiniLM-L6-v2 zero-shot (sentence-transformers bi-encoder, cosine)",
}


# budget settings a finished reproduction takes on later: evaluation sets asked for afterwards are measured and added
_ADDITIVE_SETTINGS = ("teacher_eval_sets",)


def _check_same_budget(budget: Budget, out: Path) -> None:
    """Records the budget in `out/budget.json`, or checks that the reproduction in `out` is of the same budget: its
    finished stages are reused as they are, so results of two budgets are never mixed in one folder."""
    path = out / "budget.json"
    current = {k: v for k, v in budget.to_dict().items() if k not in _ADDITIVE_SETTINGS}
    if path.is_file():
        recorded = json.loads(path.read_text(encoding="utf-8"))
        # a setting added after the folder was written, left at its default, computes what that version computed
        defaults = {f.name: _default_of(f) for f in fields(Budget)}
        recorded.update({k: v for k, v in current.items() if k not in recorded and v == defaults.get(k)})
        changes = fingerprint_changes(recorded, current)
        if changes:
            raise ValueError(
                f"{out} holds a reproduction of another budget ({'; '.join(changes)}); its finished stages would be "
                "mixed with this one's: use another --out, or remove the folder"
            )
    write_json_atomic(str(path), current)


def _default_of(budget_field: Field) -> Any:
    if budget_field.default_factory is not MISSING:
        return budget_field.default_factory()
    return budget_field.default


def _teacher_sources(budget: Budget) -> dict[str, str]:
    """Each teacher's name (`teacher_1`, `teacher_2`, ...: the pretrained ones first) and what it is."""
    sources = [PRETRAINED_TEACHER_LABELS[key] for key in budget.pretrained_teachers]
    sources += [
        f"BERT_CAT, {layers} layers, RankNet on the training triples ({budget.teacher_steps} steps)"
        for layers in budget.teacher_layers
    ]
    return {f"teacher_{i + 1}": source for i, source in enumerate(sources)}


def environment() -> dict[str, Any]:
    import transformers

    return {
        "hf_kd": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
    }
