"""Pooling the seeds of several runs of one adaptation: seeds trained in different folders (one after another, or at
the same time on several machines) are summarised together, as if one run had trained them all.

Every run must be the same adaptation (corpus, queries, starting model and every budget setting but the seeds, the
settings and the students), and every model measured by two of them (BM25, the start, the teacher) must have
measured the same per-query nDCG@10; a student measured by two runs is refused, so no seed counts twice.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..files import write_json_atomic, write_text_atomic
from .budgets import AdaptBudget
from .evaluation import summarise
from .report import write_adaptation_report

_POOLED_SETTINGS = ("seeds", "settings", "students")
_SAME = ("corpus", "documents", "start_model", "teacher", "queries", "bf16")
TOLERANCE = 1e-6


def _read(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (pass folders written by `hf-kd adapt`)")
    results = json.loads(path.read_text(encoding="utf-8"))
    if not results.get("evaluation"):
        raise ValueError(f"{path}: the adaptation measured nothing (no judged queries), so there is nothing to pool")
    results["evaluation"].pop("learning_curve", None)
    return results


def _differences(first: dict[str, Any], other: dict[str, Any], mixed_precision: bool) -> list[str]:
    changes = [key for key in _SAME if first.get(key) != other.get(key) and not (mixed_precision and key == "bf16")]
    budget_keys = (set(first["budget"]) | set(other["budget"])) - set(_POOLED_SETTINGS) - {"name"}
    changes += [f"budget {key}" for key in sorted(budget_keys) if first["budget"].get(key) != other["budget"].get(key)]
    if first["pairs"] != other["pairs"]:
        changes.append("pairs")
    for key in ("eval_set", "num_queries", "rel_threshold"):
        if first["evaluation"][key] != other["evaluation"][key]:
            changes.append(f"evaluation {key}")
    return changes


def _same_per_query(a: dict[str, dict[str, float]], b: dict[str, dict[str, float]]) -> bool:
    if a.keys() != b.keys():
        return False
    for kind in a:
        if a[kind].keys() != b[kind].keys():
            return False
        if any(abs(a[kind][q] - b[kind][q]) > TOLERANCE for q in a[kind]):
            return False
    return True


def pool_adaptations(folders: list[str | Path], out: str | Path, mixed_precision: bool = False) -> dict[str, Any]:
    """Pools the `results.json` of `folders` (each written by `hf-kd adapt`) into `out/results.json` and
    `out/tables.md`, with the summary over all their seeds; returns the pooled results.

    With `mixed_precision`, runs whose students trained in different precisions (float32 on one CPU, bfloat16 on
    another) pool too, and `bf16` of the pooled results lists both; a comparison is then only fair where every setting
    has seeds in each precision.

    Raises:
        ValueError: fewer than two folders, two different adaptations, a shared model measured differently, or a
            student measured by two runs.
    """
    if len(folders) < 2:
        raise ValueError(f"pooling needs at least two adaptation folders, got {len(folders)}")
    runs = [(Path(folder), _read(folder)) for folder in folders]
    first_folder, first = runs[0]
    students = {name: str(Path(first_folder, "students", name)) for name in first["students"]}
    rows = dict(first["evaluation"]["rows"])
    per_query = dict(first["evaluation"]["per_query_ndcg@10"])
    pooled_budget = {key: list(first["budget"][key]) for key in _POOLED_SETTINGS}
    for folder, results in runs[1:]:
        changes = _differences(first, results, mixed_precision)
        if changes:
            raise ValueError(
                f"{folder} holds another adaptation than {first_folder} ({', '.join(changes)}); only seeds, "
                "settings and students may differ between pooled runs (and the precision, with --mixed-precision)"
            )
        for name, measured in results["evaluation"]["per_query_ndcg@10"].items():
            if name in results["students"]:
                if name in students:
                    raise ValueError(f"student {name} is in both {students[name]} and {folder}: a seed counts once")
                students[name] = str(folder / "students" / name)
            elif name in per_query and not _same_per_query(per_query[name], measured):
                raise ValueError(
                    f"{folder} measured {name} differently from {first_folder} (per-query nDCG@10 differs by more "
                    f"than {TOLERANCE}): not the same evaluation"
                )
            per_query.setdefault(name, measured)
            rows.setdefault(name, results["evaluation"]["rows"][name])
        for key in _POOLED_SETTINGS:
            pooled_budget[key] += [v for v in results["budget"][key] if v not in pooled_budget[key]]
    budget = {**first["budget"], **pooled_budget}
    student_runs = AdaptBudget(**budget).student_runs(with_sources="twin" in budget["settings"])
    measured = {name: {"per_query_ndcg@10": per_query[name]} for name in per_query}
    stage_seconds: dict[str, float] = {}
    for _, results in runs:
        for stage, seconds in results.get("stage_seconds", {}).items():
            stage_seconds[stage] = round(stage_seconds.get(stage, 0.0) + seconds, 2)
    precisions = sorted({results["bf16"] for _, results in runs})
    pooled = {
        **{key: first.get(key) for key in (*_SAME, "pairs")},
        "bf16": precisions[0] if len(precisions) == 1 else precisions,
        "budget": budget,
        "pooled_from": [str(folder) for folder, _ in runs],
        "students": students,
        "evaluation": {
            **{key: first["evaluation"][key] for key in ("eval_set", "num_queries", "rel_threshold")},
            **{key: first["evaluation"][key] for key in ("teacher_row",) if key in first["evaluation"]},
            "rows": rows,
            "summary": summarise(measured, student_runs),
            "per_query_ndcg@10": per_query,
        },
        "stage_seconds": stage_seconds,
        "wall_time_s": round(sum(results.get("wall_time_s", 0.0) for _, results in runs), 2),
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "results.json", pooled)
    write_text_atomic(out / "tables.md", write_adaptation_report(pooled))
    return pooled
