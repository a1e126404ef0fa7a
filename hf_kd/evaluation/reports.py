"""The evaluation report, `metrics.json`: one model evaluated on one evaluation set.

Every writer of `metrics.json` builds an [`EvaluationReport`] and every reader reads one back:

- `hf-kd evaluate` (re-ranking a first-stage run) and `hf-kd retrieve` (dense retrieval from an index) write one
  report, `OUT/metrics.json`, and keep a copy without the per-query values in the model's
  `hf_kd_evaluations.json` (`hf_kd.evaluation.records`);
- `hf-kd reproduce` writes into each checkpoint folder a `metrics.json` with one report per evaluation set,
  `{"evaluations": [report, ...]}` (see [`write_reports`]);
- `hf-kd reproduce` and `hf-kd adapt` keep every model's evaluations in `EVALUATIONS/<model>/metrics.json` (and
  its ranked runs in `runs.json` beside) with [`keep_reports`], which reads back what was measured before;
- the model card (`hf_kd.hub.card_info`) and `hf-kd benchmark --metrics` read them with [`read_reports`].

A report as JSON (keys without a value are left out):

```json
{
  "model": "outputs/bert_dot", "name": "bert_dot", "architecture": "bert_dot",
  "dataset": "msmarco-dl20", "split": "test", "qrels": "data/msmarco-dl20/qrels.txt",
  "retrieval": "rerank", "run": "data/msmarco-dl20/runs/bm25.top100.trec", "top_k": 100,
  "rel_threshold": 2, "num_queries": 54, "num_queries_missing_from_run": 0, "num_run_queries_without_qrels": 0,
  "metrics": {"MRR@10": 0.81, "nDCG@10": 0.69, "Recall@100": 0.5, "Recall@1000": 0.62, "MAP": 0.37},
  "first_stage_metrics": {"MRR@10": 0.6, "...": 0.0},
  "per_query": {"1030303": {"MRR@10": 1.0, "nDCG@10": 0.8, "...": 0.0}}
}
```

A dense retrieval report has `"retrieval": "dense"`, no `run`, and the index: `index` (its folder),
`index_factory`, `index_bytes` and `num_passages`; its `top_k` is the number of passages retrieved per query.

[`read_reports`] also reads the files of earlier versions: the re-ranking report without `dataset` (the dataset is
then the qrels file's folder, or `DATASET` of a BEIR `DATASET/qrels/SPLIT.tsv`), the dense report with `k`, the
checkpoint file of `hf-kd reproduce` (`{"name", "evaluations": [{"dataset", "run", "top_k", "metrics", ...}]}`),
the record of the reproduction's evaluation folder (`{"name", "metrics": {SET: {...}}, "per_query_ndcg@10":
{SET: {...}}}`), a flat `{"nDCG@10": 0.71, "dataset": ...}` mapping, and a list of reports.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ..files import write_json_atomic
from .metrics import METRIC_NAMES, PRIMARY_METRIC

__all__ = [
    "RETRIEVAL_KINDS",
    "EvaluationReport",
    "dataset_of_qrels",
    "is_metric_name",
    "keep_reports",
    "kept_runs",
    "read_reports",
    "reports_from_json",
    "reports_to_json",
    "write_reports",
]

RETRIEVAL_KINDS = ("rerank", "dense")
_STRING_FIELDS = (
    "model",
    "name",
    "architecture",
    "dataset",
    "split",
    "qrels",
    "retrieval",
    "run",
    "index",
    "index_factory",
    "dtype",
)
_INTEGER_FIELDS = (
    "index_bytes",
    "num_passages",
    "top_k",
    "rel_threshold",
    "num_queries",
    "num_queries_missing_from_run",
    "num_run_queries_without_qrels",
)
_COUNT_KEYS = ("num_queries", "num_queries_missing_from_run", "num_run_queries_without_qrels", "rel_threshold")
_EXPECTED = "an evaluation report (an object with a 'metrics' mapping, as written by `hf-kd evaluate`)"


def is_metric_name(name: str) -> bool:
    """Whether a key of a metrics mapping names a ranking metric (`MRR@10`, `MAP`, `nDCG@10`, ...)."""
    return name in METRIC_NAMES or "@" in name


def dataset_of_qrels(qrels: str | os.PathLike) -> tuple[str, str | None]:
    """(dataset name, split) of a judgements file: `DATASET` and `SPLIT` of a BEIR `DATASET/qrels/SPLIT.tsv`,
    otherwise the name of the file's folder and no split."""
    path = Path(qrels)
    if path.parent.name == "qrels":
        return path.parent.parent.name, path.stem
    return path.parent.name, None


@dataclass
class EvaluationReport:
    """One model evaluated on one evaluation set: what was ranked, how, and the resulting metrics.

    Attributes:
        metrics (`dict[str, float]`): mean metric values over the judged queries, e.g. `{"nDCG@10": 0.69}`.
        model (`str` or `None`): the model's folder (or Hub id), as given to the evaluation.
        name (`str` or `None`): the model's name (its folder's name).
        architecture (`str` or `None`): `bert_cat`, `bert_dot`, `colbert`, `prett` or `tk`.
        dataset (`str` or `None`): the evaluation set, e.g. `"msmarco-dl20"`, `"scifact"`, `"dl20-dev"`.
        split (`str` or `None`): the split of the judgements (BEIR), e.g. `"test"`.
        qrels (`str` or `None`): the judgements file.
        retrieval (`str` or `None`): `"rerank"` (the candidates of `run` re-ranked) or `"dense"` (retrieval from
            `index`).
        run (`str` or `None`): the first-stage run whose candidates were re-ranked.
        index (`str` or `None`): the dense index folder; with `index_factory`, `index_bytes` and `num_passages`.
        top_k (`int` or `None`): candidates re-ranked per query, or passages retrieved per query (dense).
        rel_threshold (`int` or `None`): the smallest grade counted as relevant by MRR@10, Recall and MAP.
        num_queries (`int` or `None`): judged queries, the denominator of the means.
        num_queries_missing_from_run (`int` or `None`): judged queries without candidates (scored 0).
        num_run_queries_without_qrels (`int` or `None`): ranked queries without judgements (ignored).
        dtype (`str` or `None`): the precision of the model's weights, `"float32"` or `"bfloat16"`.
        first_stage_metrics (`dict[str, float]` or `None`): the same metrics of the first-stage run.
        per_query (`dict[str, dict[str, float]]` or `None`): query id -> metric -> value.
    """

    metrics: dict[str, float]
    model: str | None = None
    name: str | None = None
    architecture: str | None = None
    dataset: str | None = None
    split: str | None = None
    qrels: str | None = None
    retrieval: str | None = None
    run: str | None = None
    index: str | None = None
    index_factory: str | None = None
    index_bytes: int | None = None
    num_passages: int | None = None
    top_k: int | None = None
    rel_threshold: int | None = None
    num_queries: int | None = None
    num_queries_missing_from_run: int | None = None
    num_run_queries_without_qrels: int | None = None
    dtype: str | None = None
    first_stage_metrics: dict[str, float] | None = None
    per_query: dict[str, dict[str, float]] | None = None

    def __post_init__(self) -> None:
        if self.dataset is None and self.qrels:
            self.dataset, split = dataset_of_qrels(self.qrels)
            self.split = self.split or split
        if self.retrieval is None:
            self.retrieval = "dense" if self.index else "rerank" if self.run else None
        if self.retrieval is not None and self.retrieval not in RETRIEVAL_KINDS:
            raise ValueError(f"retrieval is {self.retrieval!r}, expected one of {RETRIEVAL_KINDS}")

    @classmethod
    def from_evaluate_run(cls, result: Mapping[str, Any], **report_fields: Any) -> EvaluationReport:
        """The report of a result of `hf_kd.evaluation.metrics.evaluate_run` (means, query counts and, when
        present, `per_query`), with the other fields given by name."""
        counts = {key: int(result[key]) for key in _COUNT_KEYS if result.get(key) is not None}
        per_query = result.get("per_query")
        if per_query is not None:
            per_query = {qid: {k: float(v) for k, v in values.items()} for qid, values in per_query.items()}
        return cls(**{"metrics": _metrics_of(result), **counts, "per_query": per_query, **report_fields})

    def metrics_and_counts(self) -> dict[str, float]:
        """The mean metrics followed by the query counts and the relevance threshold, as numbers in one mapping
        (the shape `hf_kd.evaluation.metrics.evaluate_run` returns them in, per-query values aside)."""
        counts = {key: getattr(self, key) for key in _COUNT_KEYS if getattr(self, key) is not None}
        return {**self.metrics, **{key: float(value) for key, value in counts.items()}}

    @property
    def per_query_ndcg(self) -> dict[str, float] | None:
        """Query id -> nDCG@10, for paired significance tests (None without per-query values)."""
        if self.per_query is None:
            return None
        return {qid: values[PRIMARY_METRIC] for qid, values in self.per_query.items() if PRIMARY_METRIC in values}

    def to_json(self, per_query: bool = True) -> dict[str, Any]:
        """The report as a JSON object: fields without a value are left out; `per_query=False` leaves out the
        per-query values."""
        data = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if value is None or (item.name == "per_query" and not per_query):
                continue
            data[item.name] = dict(value) if isinstance(value, dict) else value
        # the mean metrics first among the mappings, after the fields that say what was evaluated
        return {key: data[key] for key in sorted(data, key=_json_order)}

    @classmethod
    def from_json(cls, data: Any, source: str | os.PathLike = "evaluation report") -> EvaluationReport:
        """Reads one report, in the shape of [`to_json`] or of earlier versions (see the module's documentation).

        Args:
            data: the parsed JSON object.
            source: names the file (and entry) in error messages.

        Raises:
            ValueError: the object is not a report; one line naming `source` and what was expected.
        """
        where = str(source)
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected {_EXPECTED}, got {type(data).__name__}")
        if "evaluations" in data:
            raise ValueError(f"{where}: holds several evaluations ('evaluations'); expected one report")
        raw_metrics = data.get("metrics", data)  # earlier versions also wrote a flat {"nDCG@10": ...} mapping
        if not isinstance(raw_metrics, dict):
            raise ValueError(f"{where}: 'metrics' must map metric names to numbers, got {type(raw_metrics).__name__}")
        metrics = _numbers(raw_metrics, where, "metric")
        if not metrics:
            raise ValueError(f"{where}: no metrics found; expected keys such as 'nDCG@10' and 'MRR@10'")
        values: dict[str, Any] = {"metrics": metrics}
        for key in _STRING_FIELDS:
            value = data.get(key)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{where}: {key!r} is {value!r}, expected a string")
            values[key] = value
        for key in _INTEGER_FIELDS:
            value = data.get(key)
            if value is None and key == "top_k":
                value = data.get("k")  # dense reports of earlier versions
            if value is None and key in _COUNT_KEYS and "metrics" in data:
                value = raw_metrics.get(key)  # the reproduction's records kept the counts among the metrics
            values[key] = _integer(value, where, key)
        if values["retrieval"] is not None and values["retrieval"] not in RETRIEVAL_KINDS:
            raise ValueError(f"{where}: 'retrieval' is {values['retrieval']!r}, expected one of {RETRIEVAL_KINDS}")
        first_stage = data.get("first_stage_metrics")
        if first_stage is not None:
            if not isinstance(first_stage, dict):
                raise ValueError(f"{where}: 'first_stage_metrics' must map metric names to numbers")
            values["first_stage_metrics"] = _numbers(first_stage, where, "first-stage metric")
        values["per_query"] = _per_query(data, where)
        return cls(**values)

    def write(self, path: str | os.PathLike) -> Path:
        """Writes the report to `path` (atomically: a crash never leaves a half-written file); returns the path."""
        write_json_atomic(path, self.to_json())
        return Path(path)

    @classmethod
    def read(cls, path: str | os.PathLike) -> EvaluationReport:
        """Reads the one report of a file.

        Raises:
            ValueError: the file is not valid JSON, not a report, or holds several (read those with
                [`read_reports`]); one line naming the file.
        """
        reports = read_reports(path)
        if len(reports) != 1:
            raise ValueError(f"{path}: holds {len(reports)} evaluation reports, expected one")
        return reports[0]


def _json_order(key: str) -> int:
    order = [item.name for item in fields(EvaluationReport)]
    order.remove("metrics")
    order.insert(order.index("first_stage_metrics"), "metrics")
    return order.index(key)


def _metrics_of(values: Mapping[str, Any]) -> dict[str, float]:
    """The metric entries of a mapping, in `METRIC_NAMES` order first."""
    names = [name for name in METRIC_NAMES if name in values]
    names += [name for name in values if is_metric_name(name) and name not in METRIC_NAMES]
    return {name: float(values[name]) for name in names}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _numbers(values: dict, where: str, what: str) -> dict[str, float]:
    for name, value in values.items():
        if is_metric_name(name) and not _is_number(value):
            raise ValueError(f"{where}: {what} {name!r} is {value!r}, expected a number")
    return _metrics_of(values)


def _integer(value: Any, where: str, key: str) -> int | None:
    if value is None:
        return None
    if _is_number(value) and float(value).is_integer():
        return int(value)
    raise ValueError(f"{where}: {key!r} is {value!r}, expected an integer")


def _per_query(data: dict, where: str) -> dict[str, dict[str, float]] | None:
    per_query = data.get("per_query")
    if per_query is None and isinstance(data.get("per_query_ndcg@10"), dict):
        per_query = {qid: {PRIMARY_METRIC: value} for qid, value in data["per_query_ndcg@10"].items()}
    if per_query is None:
        return None
    if not isinstance(per_query, dict) or not all(
        isinstance(values, dict) and all(_is_number(v) for v in values.values()) for values in per_query.values()
    ):
        raise ValueError(f"{where}: 'per_query' must map query ids to {{metric: number}}")
    return {str(qid): {name: float(v) for name, v in values.items()} for qid, values in per_query.items()}


def _is_reproduction_record(data: dict) -> bool:
    """The record of an earlier reproduction's evaluation folder: `metrics` maps evaluation sets to metrics."""
    metrics = data.get("metrics")
    return isinstance(metrics, dict) and bool(metrics) and all(isinstance(v, dict) for v in metrics.values())


def reports_from_json(data: Any, source: str | os.PathLike = "evaluation report") -> list[EvaluationReport]:
    """The reports of a parsed `metrics.json`: one report, a list of reports, `{"evaluations": [report, ...]}`,
    or a shape of an earlier version (see the module's documentation).

    Raises:
        ValueError: not a report or a collection of reports; one line naming `source` (and the entry).
    """
    where = str(source)
    if isinstance(data, list):
        return [EvaluationReport.from_json(entry, f"{where} (entry {i})") for i, entry in enumerate(data)]
    if not isinstance(data, dict):
        raise ValueError(
            f"{where}: expected {_EXPECTED}, or {{'evaluations': [report, ...]}}; got {type(data).__name__}"
        )
    if "evaluations" in data:
        entries = data["evaluations"]
        if not isinstance(entries, list) or not entries:
            raise ValueError(f"{where}: 'evaluations' must be a non-empty list of evaluation reports")
        shared = {key: data[key] for key in ("model", "name", "architecture") if isinstance(data.get(key), str)}
        return [
            EvaluationReport.from_json(
                {**shared, **entry} if isinstance(entry, dict) else entry, f"{where} (entry {i})"
            )
            for i, entry in enumerate(entries)
        ]
    if _is_reproduction_record(data):
        per_query = data.get("per_query_ndcg@10") or {}
        return [
            EvaluationReport.from_json(
                {
                    "name": data.get("name"),
                    "dataset": dataset,
                    "retrieval": "rerank",
                    "metrics": metrics,
                    "per_query_ndcg@10": per_query.get(dataset),
                },
                f"{where} ({dataset})",
            )
            for dataset, metrics in data["metrics"].items()
        ]
    return [EvaluationReport.from_json(data, where)]


def reports_to_json(reports: Sequence[EvaluationReport], per_query: bool = True) -> dict[str, Any]:
    """Several reports of one model as one JSON object, `{"evaluations": [report, ...]}`.

    `model`, `name` and `metrics` repeat those of the first report, for tools that read a single report's keys
    (`hf-kd benchmark --metrics`, scripts); [`reports_from_json`] reads the evaluations only.
    """
    if not reports:
        raise ValueError("no evaluation reports to write")
    first = reports[0]
    head = {"model": first.model, "name": first.name, "metrics": dict(first.metrics)}
    return {
        **{key: value for key, value in head.items() if value is not None},
        "evaluations": [report.to_json(per_query=per_query) for report in reports],
    }


def write_reports(path: str | os.PathLike, reports: Sequence[EvaluationReport], per_query: bool = True) -> Path:
    """Writes several reports of one model into one file (atomically), as [`reports_to_json`]; returns the path."""
    write_json_atomic(path, reports_to_json(reports, per_query=per_query))
    return Path(path)


def read_reports(path: str | os.PathLike) -> list[EvaluationReport]:
    """The reports of a `metrics.json` file, whichever version wrote it (see [`reports_from_json`]).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not valid JSON (names file, line and column) or holds no reports.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}:{error.lineno}:{error.colno}: invalid JSON ({error.msg})") from None
    return reports_from_json(data, path)


EvaluationKey = tuple[str, str]
"""What one report of a model measures: (dataset, retrieval), e.g. `("dl20-dev", "rerank")`."""
Run = dict[str, dict[str, float]]


def keep_reports(
    folder: str | os.PathLike,
    wanted: Sequence[EvaluationKey],
    measure: Callable[[list[EvaluationKey]], Mapping[EvaluationKey, tuple[EvaluationReport, Run | None]]],
) -> dict[EvaluationKey, EvaluationReport]:
    """One model's evaluations, kept in `folder`: the (dataset, retrieval) pairs of `wanted` measured before are
    read back from `folder/metrics.json`; the others are measured by `measure(missing)`, which returns each one's
    report and, where it is worth keeping, its ranked run, and are added.

    `folder/metrics.json` holds the reports (per-query values included, see [`write_reports`]) and
    `folder/runs.json` the runs, `{retrieval: {dataset: run}}`; the runs are written first, so that a kept report
    never lacks its run. Reports of earlier versions' records are read back too (see [`read_reports`]).

    Returns:
        `dict`: (dataset, retrieval) -> report, for every pair of `wanted`.

    Raises:
        ValueError: `measure` did not return a report for a missing pair.
    """
    folder = Path(folder)
    path = folder / "metrics.json"
    kept = {(r.dataset, r.retrieval): r for r in read_reports(path)} if path.is_file() else {}
    missing = [key for key in wanted if key not in kept]
    if missing:
        measured = measure(missing)
        absent = [key for key in missing if key not in measured]
        if absent:
            raise ValueError(f"{folder}: the evaluation returned no report for {absent}")
        runs = kept_runs(folder)
        for key, (report, run) in measured.items():
            report.dataset, report.retrieval = key
            kept[key] = report
            if run is not None:
                runs[key] = run
        folder.mkdir(parents=True, exist_ok=True)
        if runs:
            by_retrieval: dict[str, dict[str, Run]] = {}
            for (dataset, retrieval), run in runs.items():
                by_retrieval.setdefault(retrieval, {})[dataset] = run
            write_json_atomic(folder / "runs.json", by_retrieval)
        write_reports(path, list(kept.values()))
    return {key: kept[key] for key in wanted}


def kept_runs(folder: str | os.PathLike) -> dict[EvaluationKey, Run]:
    """The runs [`keep_reports`] kept in `folder/runs.json`, by (dataset, retrieval); earlier versions kept
    re-ranking runs by dataset alone."""
    path = Path(folder) / "runs.json"
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    if not set(data) <= set(RETRIEVAL_KINDS):
        data = {"rerank": data}
    return {(dataset, retrieval): run for retrieval, runs in data.items() for dataset, run in runs.items()}
