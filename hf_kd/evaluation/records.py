"""The record an evaluation leaves in the checkpoint it evaluated, so the model card finds its results.

`hf-kd evaluate --model DIR --out OUT` (and `hf-kd retrieve`) writes `OUT/metrics.json`, an
[`~hf_kd.evaluation.reports.EvaluationReport`], and adds an entry to `DIR/hf_kd_evaluations.json`: the path of that
`metrics.json` and a copy of its report without the per-query values. `hf-kd push DIR` then reads
the report from the `metrics.json` when it is still there, and from the copy when it was moved or deleted. A
second evaluation written to the same `OUT` replaces its entry.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from ..files import write_json_atomic
from .reports import EvaluationReport

__all__ = ["EVALUATIONS_FILENAME", "record_evaluation", "recorded_evaluations"]

EVALUATIONS_FILENAME = "hf_kd_evaluations.json"


def record_evaluation(
    checkpoint: str | os.PathLike, metrics_file: str | os.PathLike, report: EvaluationReport | dict[str, Any]
):
    """Adds (or replaces) the entry of `metrics_file` in the checkpoint folder's record.

    `report` is the report written to `metrics_file` (an [`EvaluationReport`], or its JSON object); the record keeps
    it without the per-query values.

    Returns the record's path, or None when `checkpoint` is not a local folder (a Hub id) or cannot be written to
    (a note is printed; the evaluation itself is kept).
    """
    folder = Path(checkpoint)
    if not folder.is_dir():
        return None
    metrics_file = str(Path(metrics_file).resolve())
    path = folder / EVALUATIONS_FILENAME
    entries = [entry for entry in recorded_evaluations(folder) if entry["metrics_file"] != metrics_file]
    if not isinstance(report, EvaluationReport):
        report = EvaluationReport.from_json(report, metrics_file)
    summary = report.to_json(per_query=False)
    entries.append({"metrics_file": metrics_file, "report": summary})
    try:
        write_json_atomic(path, {"evaluations": entries})
    except OSError as error:
        print(f"note: could not record the evaluation in {path} ({error.strerror})", file=sys.stderr)
        return None
    return path


def recorded_evaluations(checkpoint: str | os.PathLike) -> list[dict[str, Any]]:
    """The entries of the checkpoint's record, `{"metrics_file": absolute path, "report": {...}}` each."""
    path = Path(checkpoint) / EVALUATIONS_FILENAME
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}:{error.lineno}:{error.colno}: invalid JSON ({error.msg})") from None
    entries = data.get("evaluations") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not all(
        isinstance(e, dict) and isinstance(e.get("metrics_file"), str) and isinstance(e.get("report"), dict)
        for e in entries
    ):
        raise ValueError(f"{path}: expected {{'evaluations': [{{'metrics_file': ..., 'report': {{...}}}}]}}")
    return entries
