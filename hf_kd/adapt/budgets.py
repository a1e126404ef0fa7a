"""Budgets of `hf-kd adapt`: how many queries, pairs, steps and seeds one adaptation spends.

A budget is a list of settings, never code of its own; every value can be overridden on the command line
(`--set key=value`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from ..data.pseudo_queries import METHODS
from .teacher import PAIR_SELECTIONS, teacher_members

SETTINGS = ("teacher", "self", "twin")
STUDENTS = ("bert_dot", "colbert", "tk")


@dataclass
class AdaptBudget:
    """Sizes of one adaptation.

    Attributes:
        name: `ci`, `short`, `cpu` or `long`.
        query_method: how pseudo-queries are made where no `--queries` are given (see
            `hf_kd.data.pseudo_queries`): `span`, `keywords`, `sentence`, `title` or `generator`.
        queries_per_doc: pseudo-queries per document.
        max_documents: documents pseudo-queries are made from (None: all).
        max_queries: queries the student learns from, drawn at random by `seed` from those made or given (None:
            all).
        bm25_candidates / dense_candidates: each query's candidates: BM25's and the starting model's top k over
            the whole corpus; the pairs are drawn from their union.
        pairs_per_query: pairs of candidates per query the students train on, labelled by the teacher.
        pair_selection: `random` (`pairs_per_query` random pairs of each query's candidates) or `disagreement`
            (`selection_pool` times as many random pairs are labelled, and the `pairs_per_query` of each query whose
            teacher margin is farthest from the starting model's own margin are kept: the pairs the start orders
            against the teacher first; see `hf_kd.adapt.teacher.select_disagreeing_pairs`). The self control and
            the twin train on the same queries and pairs.
        selection_pool: see `pair_selection`.
        teacher: the teacher's members, one or two joined by `+` (see `hf_kd.adapt.teacher`): `bm25`, `start` (the
            starting model) and `model` (the `--teacher-model`); two are fused by their per-query z-scores, in the
            last one's units. `bm25+start` by default, `bm25+model` where a `--teacher-model` is given.
        teacher_max_length: word pieces of each text the dense members of the teacher read.
        fusion_depth: the teacher's per-query statistics: BM25's and the dense teacher's mean and standard
            deviation over the union of their top `fusion_depth` documents of the whole corpus (see
            `hf_kd.teachers.union_zscore_statistics`); the mean z-score is given back in the dense teacher's units.
        students: architectures adapted: `bert_dot` (full-corpus dense retrieval and re-ranking), `colbert`, `tk`
            (re-ranking).
        settings: `teacher` (Margin-MSE from the BM25 + dense ensemble), `self` (the control: Margin-MSE on the same
            pairs from the starting model's own scores), `twin` (no teacher: RankNet on (pseudo-query, its source
            document, a BM25 negative); pseudo-queries only).
        seeds: one student per seed and setting (the order of the training pairs).
        steps / batch_size / learning_rate: the optimisation of each student (pairs seen = steps x batch_size).
        max_passage_length: word pieces of each passage, in training and in the saved students.
        max_query_length: word pieces of each query, for the starting model, the dense teacher and the students (in
            training and in the saved students): SciFact's longest test claim has 62, and 15% have more than the
            30 a BERT_DOT reads by default.
        non_backbone_learning_rate: heads, projections and TK.
        backbone_dropout: the encoder's dropout while training (None: the backbone's own, 0.1).
        bf16: `auto` (bfloat16 autocast where the CPU has bfloat16 matrix units, see `hf_kd.training.precision`),
            `true` or `false`: the students' training, and the `--teacher-model`'s encoding of the corpus.
        checkpoint_every: each student keeps a checkpoint every that many steps (None: none): a killed student
            resumes from its last, and the evaluation measures every one of them, a learning curve of nDCG@10
            against the pairs seen and the minutes spent (`learning_curve` in results.json, `curve.png`).
        eval_top_k: BM25 candidates re-ranked per evaluation query; dense retrieval ranks the whole corpus.
        max_eval_queries: evaluation queries (None: all judged ones of the split).
        seed: the seed of the queries, candidates and pairs.
    """

    name: str
    query_method: str = "span"
    queries_per_doc: int = 1
    max_documents: int | None = None
    max_queries: int | None = None
    bm25_candidates: int = 20
    dense_candidates: int = 20
    pairs_per_query: int = 4
    pair_selection: str = "random"
    selection_pool: int = 4
    teacher: str = "bm25+start"
    teacher_max_length: int = 256
    fusion_depth: int = 100
    students: list[str] = field(default_factory=lambda: ["bert_dot"])
    settings: list[str] = field(default_factory=lambda: list(SETTINGS))
    seeds: list[int] = field(default_factory=lambda: [42])
    steps: int = 100
    batch_size: int = 32
    learning_rate: float = 5e-5
    max_passage_length: int = 160
    max_query_length: int = 64
    non_backbone_learning_rate: float = 1e-3
    backbone_dropout: float | None = None
    bf16: str = "auto"
    checkpoint_every: int | None = None
    eval_top_k: int = 100
    max_eval_queries: int | None = None
    seed: int = 0

    def with_overrides(self, overrides: dict[str, Any]) -> AdaptBudget:
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown budget settings {unknown}; known: {', '.join(sorted(known))}")
        if isinstance(overrides.get("bf16"), bool):  # `--set bf16=false` reads as YAML's false
            overrides = {**overrides, "bf16": str(overrides["bf16"]).lower()}
        budget = replace(self, **overrides)
        budget.validate()
        return budget

    def validate(self) -> None:
        if self.query_method not in METHODS:
            raise ValueError(f"query_method must be one of {', '.join(METHODS)}, got {self.query_method!r}")
        for student in self.students:
            if student not in STUDENTS:
                raise ValueError(f"unknown student {student!r}; adapt trains {', '.join(STUDENTS)}")
        for setting in self.settings:
            if setting not in SETTINGS:
                raise ValueError(f"unknown setting {setting!r}; choose from {', '.join(SETTINGS)}")
        if not self.seeds:
            raise ValueError("seeds: at least one seed")
        teacher_members(self.teacher)
        if self.pair_selection not in PAIR_SELECTIONS:
            raise ValueError(f"pair_selection must be one of {', '.join(PAIR_SELECTIONS)}, got {self.pair_selection!r}")
        if self.bf16 not in ("auto", "true", "false"):
            raise ValueError(f"bf16 must be auto, true or false, got {self.bf16!r}")
        if self.backbone_dropout is not None and not 0.0 <= self.backbone_dropout < 1.0:
            raise ValueError(f"backbone_dropout must be in [0, 1), got {self.backbone_dropout}")
        for name in (
            "queries_per_doc",
            "pairs_per_query",
            "selection_pool",
            "steps",
            "batch_size",
            "max_passage_length",
            "max_query_length",
            "teacher_max_length",
            "fusion_depth",
            "eval_top_k",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.checkpoint_every is not None and not 1 <= self.checkpoint_every <= self.steps:
            raise ValueError(
                f"checkpoint_every must be between 1 and steps ({self.steps}), got {self.checkpoint_every}"
            )
        if self.bm25_candidates < 1 and self.dense_candidates < 1:
            raise ValueError("bm25_candidates and dense_candidates are both 0: a query would have no candidates")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def student_runs(self, with_sources: bool) -> list[tuple[str, str, str, int]]:
        """(name, architecture, setting, seed) of every student, seed by seed (an interrupted run has every setting
        of its first seeds); the twin only where the queries have source documents."""
        settings = [s for s in self.settings if s != "twin" or with_sources]
        return [
            (f"{architecture}-{setting}-s{seed}", architecture, setting, seed)
            for seed in self.seeds
            for architecture in self.students
            for setting in settings
        ]


BUDGETS: dict[str, AdaptBudget] = {
    # CI: SciFact's small cut (400 documents), 100 pseudo-queries, a few steps of each setting (and their learning
    # curve), in a few minutes
    "ci": AdaptBudget(
        name="ci",
        max_documents=100,
        bm25_candidates=8,
        dense_candidates=8,
        pairs_per_query=2,
        teacher_max_length=64,
        steps=6,
        batch_size=8,
        checkpoint_every=3,
        max_passage_length=64,
        eval_top_k=30,
    ),
    # the README's main job: one seed of each setting, a ColBERT student (on SciFact's unjudged training claims it
    # beats its start, p<0.001, and its self control, p=0.041 over six seeds). On SciFact (5,183 documents) on two
    # idle cores, 100 steps of 32 pairs at 160 word pieces take about 9 minutes per student in bfloat16 (14 in
    # float32 on a CPU without bfloat16 units), the corpus's encoding for candidates and the start's evaluation
    # about 7, each student's evaluation about 2
    "short": AdaptBudget(name="short", max_queries=1600, students=["colbert"]),
    # three seeds of each setting: means, spreads and paired tests over seeds (about 90 minutes on two idle cores
    # for the teacher-taught student and its self control)
    "cpu": AdaptBudget(name="cpu", max_queries=1600, seeds=[42, 43, 44]),
    # hours, unattended and resumable (a checkpoint every 100 steps): every document's queries, ten times the steps,
    # and the learning curve
    "long": AdaptBudget(
        name="long", queries_per_doc=3, steps=1000, batch_size=32, seeds=[42, 43, 44], checkpoint_every=100
    ),
}


def get_adapt_budget(name: str, overrides: dict[str, Any] | None = None) -> AdaptBudget:
    try:
        budget = BUDGETS[name]
    except KeyError:
        raise ValueError(f"unknown budget {name!r}; choose one of {', '.join(BUDGETS)}") from None
    return budget.with_overrides(overrides or {})
