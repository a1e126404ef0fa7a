"""The adaptation's teacher: one ranker, or two fused per query (see `hf_kd.teachers.union_zscore_statistics`), of
any (query, document) pair of the corpus.

Its members (the budget's `teacher`, e.g. `bm25+start`): `bm25` (BM25 over the corpus), `start` (the starting
model itself) and `model` (a stronger sentence-transformers bi-encoder the user gives with `--teacher-model`). Two
members are fused by the mean of their per-query z-scores over the union of their top documents, given back in the
last member's units (a dense model's, the scale the students' scores start on). The starting model's own scores are
labelled beside them whatever the teacher: they teach the self control. `run` is the adaptation's shared state
(`hf_kd.adapt.pipeline.Adaptation`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

LEXICAL_TEACHER = "bm25"
DENSE_TEACHER = "minilm"
"""The score column of the starting model (all-MiniLM-L6-v2 unless `--start-model` names another)."""
MODEL_TEACHER = "teacher_model"
"""The score column of the `--teacher-model`."""
MEMBER_COLUMNS = {"bm25": LEXICAL_TEACHER, "start": DENSE_TEACHER, "model": MODEL_TEACHER}


def teacher_members(spec: str) -> list[str]:
    """The members of a `teacher` setting, in order (the last one gives the fused scores their units).

    Example:
        ```python
        >>> teacher_members("bm25+start"), teacher_members("model")
        (['bm25', 'start'], ['model'])

        ```
    """
    members = spec.split("+")
    known = ", ".join(MEMBER_COLUMNS)
    if not 1 <= len(members) <= 2 or len(set(members)) != len(members) or not set(members) <= set(MEMBER_COLUMNS):
        raise ValueError(f"teacher must be one member or two joined by '+', each one of {known}; got {spec!r}")
    if members[-1] == "bm25":
        raise ValueError(
            f"teacher={spec!r}: the last member gives the fused scores their units and must be a dense model "
            f"(start or model), e.g. {'+'.join(reversed(members)) if len(members) == 2 else 'bm25+start'}"
        )
    if members == ["start"]:
        raise ValueError("teacher='start' is the self control (settings=[self]); a teacher needs bm25 or model")
    return members


@dataclass
class Member:
    """One ranker of the teacher: its score column and its scorer (a `BM25Teacher`, or the corpus vectors of a dense
    model); its name in words is `teacher_label`'s."""

    column: str
    lexical: Any = None
    vectors: Any = None
    name_or_path: str = ""
    max_length: int = 0

    def corpus_scores(self, queries: dict[str, str]) -> np.ndarray:
        """The member's score of every document of the corpus (columns in the corpus's order) for each query."""
        if self.lexical is not None:
            return np.stack([self.lexical.corpus_scores(text) for text in queries.values()])
        return self.vectors.all_scores(queries)

    def pair_teacher(self, queries: dict[str, str], corpus: dict[str, str]):
        """A `Teacher` of any (query of `queries`, document of `corpus`) pair."""
        if self.lexical is not None:
            return self.lexical
        from ..teachers.vector_teacher import VectorTeacher

        return VectorTeacher(
            self.name_or_path,
            dict(zip(queries.values(), self.vectors.query_vectors(queries))),
            self.vectors.vectors,
            [corpus[d] for d in self.vectors.ids],
            max_length=self.max_length,
            name=self.column,
        )


def load_member(run, key: str) -> Member:
    """The member `key` (`bm25`, `start` or `model`) of `run`'s teacher."""
    from ..teachers import BM25Teacher

    length = run.budget.teacher_max_length
    if key == "bm25":
        lexical = BM25Teacher(run.corpus, source=run.corpus_path, name=LEXICAL_TEACHER)
        return Member(LEXICAL_TEACHER, lexical=lexical, name_or_path=run.corpus_path)
    if key == "start":
        return Member(DENSE_TEACHER, vectors=run.start_vectors(), name_or_path=run.start_model, max_length=length)
    if run.teacher_model is None:
        raise ValueError(f"teacher={run.budget.teacher!r} has the member 'model': pass --teacher-model")
    return Member(MODEL_TEACHER, vectors=run.teacher_vectors(), name_or_path=run.teacher_model, max_length=length)


def teacher_label(spec: str, teacher_model: str | None) -> str:
    """The teacher in words, e.g. `BM25 + start`, `BM25 + all-mpnet-base-v2`."""
    labels = {"bm25": "BM25", "start": "start", "model": Path(teacher_model).name if teacher_model else "model"}
    return " + ".join(labels[m] for m in teacher_members(spec))


def teacher_row_name(spec: str, teacher_model: str | None) -> str:
    """The evaluation's row of the teacher, e.g. `teacher (BM25 + start)`, `teacher (BM25 + all-mpnet-base-v2)`."""
    return f"teacher ({teacher_label(spec, teacher_model)})"


def fuse(members: list[Member], scores: list[np.ndarray], statistics=None) -> np.ndarray:
    """The teacher's scores from its members' `scores` (aligned rows): the only member's as they are, or the mean
    z-score of two, in the last one's units, with each row's `(centers, scales)` statistics."""
    if len(members) == 1:
        return np.asarray(scores[0], np.float64)
    from ..teachers import fuse_union_zscore

    return fuse_union_zscore(scores[0], scores[1], *statistics)


def corpus_ranking(members: list[Member], queries: dict[str, str], depth: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """The teacher's scores of the whole corpus for each query, and per query the documents it ranks: the union of
    its members' top `depth` where two are fused (the statistics come from there), every document otherwise."""
    from ..teachers import union_zscore_statistics

    scores = [member.corpus_scores(queries) for member in members]
    if len(members) == 1:
        every = np.arange(scores[0].shape[1])
        return np.asarray(scores[0], np.float64), [every] * len(queries)
    centers, scales, unions = union_zscore_statistics(scores[0], scores[1], depth)
    return fuse(members, scores, (centers, scales)), unions


def fusion_statistics(members: list[Member], queries: dict[str, str], depth: int) -> tuple[np.ndarray, np.ndarray]:
    """Each query's `(centers, scales)` of two fused members over the union of their top `depth` documents."""
    from ..teachers import union_zscore_statistics

    centers, scales, _ = union_zscore_statistics(*(m.corpus_scores(queries) for m in members), depth)
    return centers, scales


PAIR_SELECTIONS = ("random", "disagreement")


def select_disagreeing_pairs(
    queries: list[str], teacher_margins: np.ndarray, start_margins: np.ndarray, per_query: int
) -> np.ndarray:
    """The rows to train on: per query, the `per_query` pairs whose teacher margin is farthest from the starting
    model's own margin, (teacher - start)^2, the Margin-MSE loss a student starts from (pairs the start orders
    against the teacher come first). Returns row indices in their original order.

    Args:
        queries: each row's query (rows of one query need not be adjacent).
        teacher_margins, start_margins: each row's positive-minus-negative score of the teacher and of the start.
        per_query: pairs kept per query (all of a query's pairs where it has fewer).
    """
    if not len(queries) == len(teacher_margins) == len(start_margins):
        raise ValueError(
            f"{len(queries)} queries, {len(teacher_margins)} teacher margins, {len(start_margins)} start margins"
        )
    loss = (np.asarray(teacher_margins, np.float64) - np.asarray(start_margins, np.float64)) ** 2
    rows: dict[str, list[int]] = {}
    for index, query in enumerate(queries):
        rows.setdefault(query, []).append(index)
    kept = []
    for indices in rows.values():
        order = sorted(indices, key=lambda i: (-loss[i], i))
        kept.extend(order[:per_query])
    return np.array(sorted(kept), dtype=np.int64)
