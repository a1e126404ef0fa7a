"""What a model card says about a checkpoint folder: its architecture, evaluation results, latency, size and
training, read from the files hf-kd writes into it and gathered with the user's fields into a [`ModelCardInfo`]."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult

from ..evaluation.reports import EvaluationReport, read_reports, reports_from_json
from ..files import read_json_file
from ..losses import LOSSES
from ..training.summary import SUMMARY_FILE, TrainSummary

__all__ = [
    "ARCHITECTURE_DISPLAY_NAMES",
    "EvaluationResult",
    "ModelCardInfo",
    "architecture_of",
    "collect_card_info",
    "read_evaluation_results",
]

ARCHITECTURE_DISPLAY_NAMES = {
    "bert_cat": "BERT_CAT",
    "bert_dot": "BERT_DOT",
    "colbert": "ColBERT",
    "prett": "PreTT",
    "tk": "TK",
}
# model-index metric types, named as the Hub's leaderboards name them (MTEB style)
METRIC_TYPES = {
    "MRR@10": "mrr_at_10",
    "nDCG@10": "ndcg_at_10",
    "Recall@100": "recall_at_100",
    "Recall@1000": "recall_at_1000",
    "MAP": "map",
}
# test-set folder name -> (name shown in cards, dataset id used as model-index `dataset.type`)
KNOWN_TEST_SETS = {
    "msmarco-dl19": ("TREC Deep Learning 2019 (passages)", "msmarco-passage/trec-dl-2019"),
    "msmarco-dl20": ("TREC Deep Learning 2020 (passages)", "msmarco-passage/trec-dl-2020"),
    "msmarco-dev": ("MS MARCO passage dev", "msmarco-passage/dev/small"),
    "scifact": ("BEIR SciFact", "BeIR/scifact"),
    "scifact-small": ("BEIR SciFact (subset)", "BeIR/scifact"),
    # the evaluation sets of `hf-kd reproduce`
    "dl20-dev": ("TREC Deep Learning 2020 (passages), held-out queries", "msmarco-passage/trec-dl-2020"),
    "scifact-test": ("BEIR SciFact (test queries)", "BeIR/scifact"),
}
# keys of `training_args.json` shown in the card, in this order (TrainingArguments and HfKdArguments fields)
TRAINING_KEYS = (
    "backbone",
    "max_query_length",
    "max_passage_length",
    "learning_rate",
    "non_backbone_learning_rate",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "num_train_epochs",
    "max_steps",
    "warmup_ratio",
    "warmup_steps",
    "weight_decay",
    "lr_scheduler_type",
    "optim",
    "fp16",
    "bf16",
    "seed",
)
SUMMARY_KEYS = ("global_step", "examples_seen", "world_size", "train_runtime_s", "train_loss", "best_metric")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


@dataclass
class EvaluationResult:
    """The effectiveness of a checkpoint on one test set, as recorded by `hf-kd evaluate` in `metrics.json`.

    Attributes:
        test_set (`str`): name shown in the card, e.g. `"TREC Deep Learning 2020 (passages)"`.
        dataset_type (`str`): dataset id for the `model-index`, e.g. `"msmarco-passage/trec-dl-2020"`.
        split (`str`): the split of the judgements (`"test"` unless the report says otherwise).
        metrics (`dict[str, float]`): metric name (`"nDCG@10"`, `"MRR@10"`, ...) -> value.
        first_stage (`str` or `None`): the run whose candidates were re-ranked, e.g. `"bm25"`.
        top_k (`int` or `None`): candidates re-ranked per query.
        num_queries (`int` or `None`): queries evaluated.
        source (`str`): the file the result was read from.
    """

    test_set: str
    dataset_type: str
    split: str
    metrics: dict[str, float]
    first_stage: str | None = None
    top_k: int | None = None
    num_queries: int | None = None
    source: str = ""

    def eval_results(self) -> list[EvalResult]:
        """The result as `huggingface_hub.EvalResult`s (one per metric), the `model-index` entries."""
        return [
            EvalResult(
                task_type="text-ranking",
                task_name="Passage re-ranking" if self.first_stage else "Passage ranking",
                dataset_type=self.dataset_type,
                dataset_name=self.test_set,
                dataset_split=self.split,
                metric_type=METRIC_TYPES.get(name, re.sub(r"\W+", "_", name.lower()).strip("_")),
                metric_name=name,
                metric_value=value,
            )
            for name, value in self.metrics.items()
        ]


@dataclass
class ModelCardInfo:
    """Everything a model card shows: fields the user gives, and fields computed from the checkpoint folder.

    Args:
        repo_id (`str`): the Hub repository, `ORG/NAME`.
        revision (`str`, *optional*, defaults to `"main"`): the branch the usage snippets load.
        license (`str`, *optional*, defaults to `"apache-2.0"`): the model's license identifier.
        base_model (`str`, *optional*): the Hub id of the backbone; defaults to the config's
            `backbone_name_or_path` when that is a Hub id (not a local folder).
        datasets (`list[str]`, *optional*): Hub ids of the teacher-score datasets the model was trained on.
        teacher (`str`, *optional*): the teacher (e.g. `"ensemble of BERT-Base, BERT-Large, ALBERT-Large
            BERT_CAT"`); defaults to the teachers recorded with the local training data, if found.
        language (`str`, *optional*, defaults to `"en"`).
        architecture (`str`): computed, `bert_cat`, `bert_dot`, `colbert`, `prett` or `tk`.
        config (`dict`): computed, the folder's `config.json`.
        num_parameters (`int` or `None`): computed from the safetensors header.
        evaluation (`list[EvaluationResult]`): computed from `metrics.json` files.
        latency (`dict` or `None`): computed, one `hf_kd.evaluation.LatencyResult` as a dict (`latency.json`).
        loss (`str` or `None`): computed, the training loss name (`train_summary.json`).
        loss_config (`dict`): computed, the loss's hyper-parameters.
        training (`dict[str, Any]`): computed, the training hyper-parameters and run statistics found.
    """

    repo_id: str
    revision: str = "main"
    license: str = "apache-2.0"
    base_model: str | None = None
    datasets: list[str] = field(default_factory=list)
    teacher: str | None = None
    language: str = "en"
    architecture: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    num_parameters: int | None = None
    evaluation: list[EvaluationResult] = field(default_factory=list)
    latency: dict[str, Any] | None = None
    loss: str | None = None
    loss_config: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)

    @property
    def display_name(self) -> str:
        return ARCHITECTURE_DISPLAY_NAMES[self.architecture]

    @property
    def loss_tag(self) -> str:
        return (self.loss or "margin_mse").replace("_", "-")


def architecture_of(config: dict[str, Any], source: str | os.PathLike) -> str:
    """The hf-kd architecture (`bert_dot`, ...) of a `config.json`, from its `model_type`."""
    from ..models import MODEL_CLASSES

    by_model_type = {cls.config_class.model_type: name for name, cls in MODEL_CLASSES.items()}
    model_type = config.get("model_type")
    if model_type not in by_model_type:
        raise ValueError(
            f"{source}: model_type {model_type!r} is not an hf-kd architecture; expected one of "
            f"{sorted(by_model_type)} (a checkpoint saved by an hf-kd model's save_pretrained)"
        )
    return by_model_type[model_type]


def _test_set_of(report: EvaluationReport, source: Path) -> tuple[str, str, str]:
    """(name, dataset type, split) of an evaluation report: its dataset, or the name of the file's folder."""
    folder = report.dataset or source.parent.name
    name, dataset_type = KNOWN_TEST_SETS.get(folder, (folder, folder))
    return name, dataset_type, report.split or "test"


def _first_stage_of(report: EvaluationReport) -> str | None:
    return Path(report.run).name.split(".")[0] if report.run else None


def _evaluation_result(report: EvaluationReport, source: Path) -> EvaluationResult:
    test_set, dataset_type, split = _test_set_of(report, source)
    return EvaluationResult(
        test_set=test_set,
        dataset_type=dataset_type,
        split=split,
        metrics=dict(report.metrics),
        first_stage=_first_stage_of(report),
        top_k=report.top_k,
        num_queries=report.num_queries,
        source=str(source),
    )


def read_evaluation_results(
    folder: str | os.PathLike, metrics_files: Sequence[str | os.PathLike] = ()
) -> list[EvaluationResult]:
    """Reads the evaluation results of a checkpoint folder, wherever `hf-kd evaluate` wrote them.

    In this order, each file once: `metrics.json` of the folder and of its direct sub-folders (one per test set),
    the `metrics_files` given, and the evaluations recorded in the folder's `hf_kd_evaluations.json` by
    `hf-kd evaluate --model FOLDER --out OUT` (read from `OUT/metrics.json`, or from the record's copy of the
    report when that file is gone).

    A file holds evaluation reports as `hf_kd.evaluation.reports.read_reports` reads them: one report of
    `hf-kd evaluate` or `hf-kd retrieve`, `{"evaluations": [report, ...]}` (the `metrics.json` that
    `hf-kd reproduce` writes into each checkpoint, one report per evaluation set), or a shape of an earlier version
    (a list of reports, a flat `{"nDCG@10": 0.71, ...}` mapping where an optional `dataset` key names the test
    set). A report without a dataset is named after the file's folder.

    Raises:
        FileNotFoundError: a file of `metrics_files` does not exist.
        ValueError: a file is malformed (names the file and entry).
    """
    from ..evaluation.records import EVALUATIONS_FILENAME, recorded_evaluations

    folder = Path(folder)
    for given in metrics_files:
        if not Path(given).is_file():
            raise FileNotFoundError(f"metrics file {given} not found (written by `hf-kd evaluate --out DIR`)")
    paths = [folder / "metrics.json", *sorted(folder.glob("*/metrics.json")), *map(Path, metrics_files)]
    seen: set[Path] = set()
    results = []
    for path in paths:
        if path.is_file() and path.resolve() not in seen:
            seen.add(path.resolve())
            results.extend(_evaluation_result(report, path) for report in read_reports(path))
    for entry in recorded_evaluations(folder):
        path = Path(entry["metrics_file"])
        if path.resolve() in seen:
            continue
        seen.add(path.resolve())
        if path.is_file():
            reports = read_reports(path)
        else:
            reports = reports_from_json(entry["report"], f"{folder / EVALUATIONS_FILENAME} (copy of {path})")
        results.extend(_evaluation_result(report, path) for report in reports)
    return results


def _read_latency(folder: Path) -> dict[str, Any] | None:
    """The latency of this checkpoint from `latency.json` (a LatencyResult dict, a list, or `{"results": [...]}`)."""
    path = folder / "latency.json"
    if not path.is_file():
        return None
    data = read_json_file(path)
    entries = data.get("results", [data]) if isinstance(data, dict) else data
    if not entries or not all(isinstance(e, dict) and "median_ms" in e for e in entries):
        raise ValueError(f"{path}: expected latency results with 'median_ms' (as written by hf-kd benchmark)")
    matching = [e for e in entries if e.get("name") == folder.name]
    return (matching or entries)[0]


def _count_parameters(folder: Path) -> int | None:
    from safetensors import safe_open

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for file in files:
        with safe_open(str(file), framework="numpy") as weights:
            for name in weights.keys():  # noqa: SIM118 - safe_open objects are not iterable
                shape = weights.get_slice(name).get_shape()
                count = 1
                for size in shape:
                    count *= size
                total += count
    return total


def _training_info(folder: Path) -> tuple[str | None, dict[str, Any], dict[str, Any], list[str]]:
    """(loss, loss config, hyper-parameters and run statistics, local training files) of the folder."""
    summary = (TrainSummary.load(folder) or TrainSummary()).to_dict()
    arguments = read_json_file(folder / "training_args.json") if (folder / "training_args.json").is_file() else {}
    training = {key: arguments[key] for key in TRAINING_KEYS if arguments.get(key) is not None}
    training.update({key: summary[key] for key in SUMMARY_KEYS if summary.get(key) is not None})
    loss = summary.get("loss") or arguments.get("loss")
    loss_config = summary.get("loss_config") or arguments.get("loss_kwargs") or {}
    train_files = arguments.get("train_files") or []
    return loss, loss_config if isinstance(loss_config, dict) else {}, training, list(train_files)


def _recorded_teachers(train_files: list[str], folder: Path) -> list[str]:
    """Teachers named in the provenance of local teacher-score datasets the model was trained on."""
    from ..data.score_dataset import ScoreDataset

    teachers = []
    for train_file in train_files:
        # a relative path is relative to where training ran, or to the checkpoint folder
        paths = [Path(train_file)] if Path(train_file).is_absolute() else [Path(train_file), folder / train_file]
        candidates = [c for path in paths for c in (path, path.parent, path.parent.parent)]
        recorded = next((c for c in candidates if ScoreDataset.is_score_dataset(c)), None)
        if recorded is not None:
            teachers.extend(ScoreDataset.open(recorded).provenance.teachers)
    return list(dict.fromkeys(teachers))


def collect_card_info(
    folder: str | os.PathLike,
    repo_id: str,
    metrics_files: Sequence[str | os.PathLike] = (),
    **user_fields: Any,
) -> ModelCardInfo:
    """Reads a checkpoint folder into a [`ModelCardInfo`].

    Args:
        folder (`str` or `os.PathLike`): a checkpoint saved by an hf-kd model's `save_pretrained`.
        repo_id (`str`): the Hub repository the card is for.
        metrics_files (`Sequence[str | os.PathLike]`, *optional*): `metrics.json` files of `hf-kd evaluate`
            outside the folder (see [`read_evaluation_results`]).
        **user_fields: the user-given fields of [`ModelCardInfo`] (`revision`, `license`, `base_model`,
            `datasets`, `teacher`, `language`).

    Raises:
        FileNotFoundError: the folder has no `config.json`.
        ValueError: the config is not an hf-kd model's, or a JSON file is malformed (names file and line).
    """
    folder = Path(folder)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} not found: {folder} is not a saved checkpoint")
    config = read_json_file(config_path)
    if not isinstance(config, dict):
        raise ValueError(f"{config_path}: expected a JSON object")
    loss, loss_config, training, train_files = _training_info(folder)
    info = ModelCardInfo(
        repo_id=repo_id,
        architecture=architecture_of(config, config_path),
        config=config,
        num_parameters=_count_parameters(folder),
        evaluation=read_evaluation_results(folder, metrics_files),
        latency=_read_latency(folder),
        loss=loss,
        loss_config=loss_config,
        training=training,
        **user_fields,
    )
    if info.loss is not None and info.loss not in LOSSES:
        raise ValueError(f"{folder / SUMMARY_FILE}: unknown loss {info.loss!r}; expected one of {list(LOSSES)}")
    if info.base_model is None:
        backbone = config.get("backbone_name_or_path")
        if backbone and HUB_ID.match(str(backbone)) and not Path(str(backbone)).exists():
            info.base_model = str(backbone)
    if info.teacher is None:
        info.teacher = ", ".join(_recorded_teachers(train_files, folder)) or None
    return info
