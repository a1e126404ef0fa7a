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
