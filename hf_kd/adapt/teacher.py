"""The adaptation's teacher: BM25 over the corpus and the starting model, fused per query (see
`hf_kd.teachers.union_zscore_statistics`). `run` is the adaptation's shared state (`hf_kd.adapt.pipeline.Adaptation`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

LEXICAL_TEACHER = "bm25"
DENSE_TEACHER = "minilm"


def teacher_members(run, vectors, queries: dict[str, str]) -> tuple[Any, Any]:
    """BM25 over the corpus and the starting model (from its corpus vectors at the teacher's length, and the vectors
    of `queries`), as teachers of any (query, document) pair."""
    from ..teachers import BM25Teacher
    from ..teachers.vector_teacher import VectorTeacher

    lexical = BM25Teacher(run.corpus, source=run.corpus_path, name=LEXICAL_TEACHER)
    dense = VectorTeacher(
        run.start_model,
        dict(zip(queries.values(), vectors.query_vectors(queries))),
        vectors.vectors,
        [run.corpus[d] for d in vectors.ids],
        max_length=run.budget.teacher_max_length,
        name=DENSE_TEACHER,
    )
    return lexical, dense


def teacher_scores(run, queries: dict[str, str], vectors=None, lexical=None) -> tuple[np.ndarray, np.ndarray]:
    """BM25's and the starting model's scores of every document of the corpus (rows in the corpus's order) for each
    query: what the teacher's statistics are taken from. `vectors` and `lexical` (a `BM25Teacher`) are built when
    not given."""
    from ..teachers import BM25Teacher

    vectors = vectors or run.start_vectors()
    lexical = lexical or BM25Teacher(run.corpus, source=run.corpus_path, name=LEXICAL_TEACHER)
    bm25 = np.stack([lexical.corpus_scores(text) for text in queries.values()])
    return bm25, vectors.all_scores(queries)


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
