"""The stages of the reproduction (`hf-kd reproduce`), each a function of the shared [`Reproduction`] state:
backbones -> teachers -> teacher scores -> students -> evaluation -> latency.

Every stage writes its result under the output folder and skips the work that is already there, so an interrupted
reproduction continues where it stopped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch
from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel

from .. import model_class_for
from ..data.score_dataset import ScoreDataset
from ..evaluation.latency import measure_rerank_latency
from ..evaluation.reports import EvaluationReport, kept_runs, write_reports
from ..evaluation.rerank import top_candidates
from ..evaluation.rerank_set import RerankSet
from ..files import write_json_atomic
from ..models.sentence_transformers_layout import file_versions, give_plain_file_modes
from ..pretrained import PRETRAINED_PATHS, minilm_path
from ..teachers import Teacher, load_teacher, score_triples
from ..training.stage import student_config, train_model
from .budgets import Budget
from .data import PreparedData
from .evaluation import evaluate_and_keep, evaluate_model, evaluate_teacher, mean_of_runs, open_eval_set

TINY = dict(hidden_size=32, num_attention_heads=2, intermediate_size=64)


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
    before = file_versions(staging)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    give_plain_file_modes(staging, before)  # safetensors writes the weights through a private temporary file
    staging.rename(out)
    return str(out)


def _pretrained_teacher_names(budget: Budget) -> dict[str, str]:
    """Names of the pretrained teachers (`mpnet` -> `teacher_1`, ...): they come first."""
    return {key: f"teacher_{i + 1}" for i, key in enumerate(budget.pretrained_teachers)}


def _trained_teacher_names(budget: Budget) -> list[str]:
    """Names of the BERT_CAT teachers trained here: they follow the pretrained ones."""
    offset = len(budget.pretrained_teachers)
    return [f"teacher_{offset + i + 1}" for i in range(len(budget.teacher_layers))]


def _load_recipe_teacher(budget: Budget, name: str, path: str) -> Teacher:
    if name in _trained_teacher_names(budget):
        return load_teacher(path, name=name)
    return load_teacher(path, max_length=budget.teacher_max_length, name=name)


def _loss_for(setting: str) -> str:
    return "ranknet" if setting == "none" else "margin_mse"


def _teacher_columns(
    scores_dir: Path, teacher_names: list[str], self_teacher: str | None = None
) -> dict[str, tuple[str, str]]:
    """Score columns of T1 (the first teacher), T2 (the mean) and, with `self_teacher` (the name of zero-shot
    MiniLM), of the self-distillation control in the teacher-score dataset. A dataset of one teacher has only the
    plain columns."""
    roles = {"T1": teacher_names[0], "self": self_teacher}
    if len(teacher_names) == 1:
        return {setting: ScoreDataset.score_columns() for setting, name in roles.items() if name == teacher_names[0]}
    scores = ScoreDataset.open(scores_dir)
    columns = {"T2": ScoreDataset.score_columns()}
    for setting, name in roles.items():
        if name is None:
            continue
        if name not in scores.teachers:
            role = "first teacher" if setting == "T1" else "self-distillation teacher"
            raise ValueError(f"{scores_dir}: no scores of the {role} {name}; columns: {list(scores.features)}")
        columns[setting] = ScoreDataset.score_columns(name)
    return columns


def _self_teacher_name(budget: Budget) -> str | None:
    """The name the reproduction gives zero-shot MiniLM among its teachers (None when it is not one)."""
    return _pretrained_teacher_names(budget).get("minilm")


def _latency_models(budget: Budget, teachers: dict[str, str], students: dict[str, str]) -> dict[str, str]:
    """One model per architecture (the most distilled one), and the first teacher."""
    trained = _trained_teacher_names(budget)
    chosen = {f"BERT_CAT ({trained[0]})": teachers[trained[0]]} if trained else {}
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


def _model_metrics_file(
    name: str, folder: str, model, metrics: dict[str, dict[str, float]], eval_sets: list[RerankSet]
) -> list[EvaluationReport]:
    """The reports a checkpoint folder carries in its `metrics.json` for its model card, one per evaluation set."""
    return [
        EvaluationReport.from_evaluate_run(
            metrics[d.name],
            model=str(folder),
            name=name,
            architecture=getattr(model.config, "architecture", None) or model.config.model_type,
            dataset=d.name,
            qrels=d.qrels_file,
            retrieval="rerank",
            run=d.run_file,
            top_k=d.top_k,
            rel_threshold=d.rel_threshold,
            num_queries=int(metrics[d.name].get("num_queries", len(d.qrels))),
        )
        for d in eval_sets
    ]


# --------------------------------------------------------------------------------------------------------------------
# The stages
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class Reproduction:
    """What the stages of one reproduction share: its budget, its folder and what earlier stages made."""

    budget: Budget
    out: Path
    data: PreparedData
    backbones: dict[str, str] = field(default_factory=dict)  # "student", "small_cat", trained teachers' names
    teachers: dict[str, str] = field(default_factory=dict)  # teacher_1, ... -> checkpoint folder
    students: dict[str, str] = field(default_factory=dict)  # e.g. bert_dot-T2 -> checkpoint folder
    # "T1" / "T2" -> (positive, negative) score columns of the teacher-score dataset
    teacher_columns: dict[str, tuple[str, str]] = field(default_factory=dict)

    @cached_property
    def eval_sets(self) -> list[RerankSet]:
        """DL20 dev and SciFact test, read once when first needed."""
        top_k = self.budget.rerank_top_k
        return [open_eval_set(spec, top_k) for spec in (self.data.dl20_dev, self.data.scifact_test)]

    @property
    def trained_teachers(self) -> list[str]:
        return _trained_teacher_names(self.budget)

    @property
    def scores_dir(self) -> Path:
        return self.out / "teacher_scores"

    @property
    def evaluations(self) -> Path:
        return self.out / "evaluation"

    def student_runs(self) -> list[tuple[str, str, str, str]]:
        """(name, architecture, setting, loss) of every student: each architecture in each setting, and BERT_DOT
        from T2 with the loss-comparison losses."""
        budget = self.budget
        runs = [
            (f"{architecture}-{setting}", architecture, setting, _loss_for(setting))
            for architecture in budget.students
            for setting in budget.settings
        ]
        if "bert_dot" in budget.students and budget.num_teachers >= 2:
            runs += [(f"bert_dot-T2-{loss}", "bert_dot", "T2", loss) for loss in budget.loss_comparison]
        return runs


def build_backbones(run: Reproduction) -> None:
    """The backbone folders the budget trains on, and only those: of the trained teachers, of the students (every
    architecture but BERT_CAT) and of the small BERT_CAT student."""
    budget, folder = run.budget, run.out / "backbones"
    for i, (name, layers) in enumerate(zip(run.trained_teachers, budget.teacher_layers)):
        run.backbones[name] = make_backbone(budget, layers, folder / f"{name}-L{layers}", seed=i)
    if any(architecture != "bert_cat" for architecture in budget.students):
        student_layers = 6 if budget.backbone == "minilm" else 2
        run.backbones["student"] = make_backbone(budget, student_layers, folder / f"student-L{student_layers}", seed=10)
    if "bert_cat" in budget.students:
        small = budget.small_cat_layers
        run.backbones["small_cat"] = make_backbone(budget, small, folder / f"small_cat-L{small}", seed=11)


def train_teachers(run: Reproduction) -> None:
    """The pretrained teachers' folders, and the BERT_CAT teachers trained with RankNet on the training triples."""
    budget = run.budget
    for key, name in _pretrained_teacher_names(budget).items():
        run.teachers[name] = PRETRAINED_PATHS[key]()
    for i, name in enumerate(run.trained_teachers):
        folder = run.out / "teachers" / name
        train_model(
            budget,
            folder,
            architecture="bert_cat",
            backbone=run.backbones[name],
            loss="ranknet",
            train_file=run.data.train_triples,
            steps=budget.teacher_steps,
            seed=budget.seed + 100 * (i + 1),
            learning_rate=budget.teacher_learning_rate or budget.learning_rate,
        )
        run.teachers[name] = str(folder)


def score_training_triples(run: Reproduction) -> None:
    """Every teacher scores the training triples (or the budget's candidate pairs) into one teacher-score dataset
    (T2 is the normalised mean)."""
    if not ScoreDataset.is_score_dataset(run.scores_dir):
        loaded = [_load_recipe_teacher(run.budget, name, path) for name, path in run.teachers.items()]
        normalize = run.budget.teacher_normalize if len(loaded) > 1 else "none"
        score_triples(
            loaded,
            run.data.teacher_triples or run.data.train_triples,
            run.scores_dir,
            batch_size=32,
            normalize=normalize,
            overwrite=True,
        )
    run.teacher_columns = _teacher_columns(run.scores_dir, list(run.teachers), _self_teacher_name(run.budget))


def train_students(run: Reproduction) -> None:
    """Every student: without a teacher (RankNet on the triples' labels), and from T1, T2 and zero-shot MiniLM (the
    self-distillation control) with its loss."""
    budget = run.budget
    for name, architecture, setting, loss in run.student_runs():
        folder = run.out / "students" / name
        pos_column, neg_column = run.teacher_columns[setting] if setting != "none" else ScoreDataset.score_columns()
        backbone = run.backbones["small_cat" if architecture == "bert_cat" else "student"]
        train_model(
            budget,
            folder,
            architecture=architecture,
            backbone=backbone,
            loss=loss,
            train_file=run.data.train_triples if setting == "none" else str(run.scores_dir),
            steps=budget.student_steps,
            seed=budget.seed,
            learning_rate=budget.student_learning_rate(architecture),
            model_config=student_config(architecture, backbone, sentence_transformers=budget.backbone == "minilm"),
            pos_score_column=pos_column,
            neg_score_column=neg_column,
        )
        run.students[name] = str(folder)


def evaluate_all(run: Reproduction) -> dict[str, dict[str, dict[str, float]]]:
    """BM25, zero-shot MiniLM, the teachers, the students and the teachers' mean re-rank every evaluation set;
    model -> evaluation set -> metrics. Each model's runs and per-query nDCG@10 are kept under `evaluation/`."""
    budget, evaluations = run.budget, run.evaluations
    eval_sets = run.eval_sets
    results = {"BM25": evaluate_and_keep("BM25", eval_sets, evaluations, RerankSet.first_stage)}
    if budget.backbone == "minilm":
        zero_shot = model_class_for("bert_dot").from_backbone(
            minilm_path(), pooling="mean", normalize_embeddings=True, max_passage_length=budget.max_passage_length
        )
        tokenizer = AutoTokenizer.from_pretrained(minilm_path())
        results["MiniLM zero-shot"] = evaluate_model("MiniLM zero-shot", zero_shot, tokenizer, eval_sets, evaluations)
    for name, path in run.teachers.items():
        if name not in run.trained_teachers:
            teacher = _load_recipe_teacher(budget, name, path)
            measured_on = [d for d in eval_sets if d.name in budget.teacher_eval_sets]
            results[name] = evaluate_teacher(name, teacher, measured_on, evaluations)
    trained = {name: run.teachers[name] for name in run.trained_teachers}
    for name, folder in {**trained, **run.students}.items():
        model = AutoModel.from_pretrained(folder)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        results[name] = evaluate_model(name, model, tokenizer, eval_sets, evaluations)
        write_reports(Path(folder) / "metrics.json", _model_metrics_file(name, folder, model, results[name], eval_sets))
    if len(run.teachers) >= 2:
        member_runs = [
            {dataset: ranked for (dataset, _), ranked in kept_runs(evaluations / name).items()} for name in run.teachers
        ]
        results["T2 (teacher mean)"] = evaluate_and_keep(
            "T2 (teacher mean)",
            [d for d in eval_sets if all(d.name in runs for runs in member_runs)],
            evaluations,
            lambda d: mean_of_runs([runs[d.name] for runs in member_runs], budget.teacher_normalize),
        )
    return results


def measure_latency(run: Reproduction) -> list[dict]:
    """Re-ranking latency of one model per architecture (and the first trained teacher) on the first DL20 dev
    queries; kept in `latency.json`."""
    path = run.out / "latency.json"
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    budget, dev = run.budget, run.eval_sets[0]
    candidate_ids = top_candidates(dev.run, budget.latency_candidates)
    query_ids = sorted(candidate_ids)[: budget.latency_queries]
    queries = [dev.queries[q] for q in query_ids]
    candidates = [[dev.collection[p] for p in candidate_ids[q]] for q in query_ids]
    measured = []
    for name, folder in _latency_models(budget, run.teachers, run.students).items():
        model = AutoModel.from_pretrained(folder)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        result = measure_rerank_latency(model, tokenizer, queries, candidates, name=name)
        measured.append(result.to_dict())
    write_json_atomic(str(path), measured)
    return measured
