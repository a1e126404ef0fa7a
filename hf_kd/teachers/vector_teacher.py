"""A bi-encoder teacher scored from vectors encoded once: every passage of a corpus and every query, each encoded a
single time, and a pair's score is the inner product of its two vectors.

Scoring pairs one by one encodes a passage again for every query it is paired with; a corpus's candidates are drawn
from the very vectors of its whole-corpus search, so the teacher takes them from there instead (what `hf-kd adapt`
does: its dense candidates and its dense teacher share one encoding of the corpus).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from .base import Teacher

__all__ = ["VectorTeacher"]


class VectorTeacher(Teacher):
    """Pairs scored by the inner product of precomputed query and passage vectors (cosine for normalised ones).

    Args:
        name_or_path (`str`): the model the vectors come from (recorded in the provenance).
        query_vectors (`Mapping[str, np.ndarray]`): query text -> vector.
        passage_vectors (`np.ndarray`): (n, D) vectors of `passages`.
        passages (`Sequence[str]`): the n passage texts, in the rows' order.
        max_length (`int`): word pieces of each text the model read.
        name (`str`, *optional*): the short name in score columns.

    A text without a vector fails with a one-line error naming it, never with an invented score.
    """

    kind = "bi_encoder_vectors"

    def __init__(
        self,
        name_or_path: str,
        query_vectors: Mapping[str, np.ndarray],
        passage_vectors: np.ndarray,
        passages: Sequence[str],
        max_length: int,
        name: str | None = None,
    ):
        if len(passages) != len(passage_vectors):
            raise ValueError(f"{len(passages)} passages but {len(passage_vectors)} passage vectors")
        self.query_vectors = {
            " ".join(text.split()): np.asarray(v, dtype=np.float32) for text, v in query_vectors.items()
        }
        self.passage_vectors = np.asarray(passage_vectors, dtype=np.float32)
        self.rows: dict[str, int] = {}
        for row, text in enumerate(passages):
            self.rows.setdefault(" ".join(text.split()), row)
        super().__init__(name_or_path, None, max_length=max_length, device=torch.device("cpu"), name=name)

    def _row(self, passage: str) -> int:
        row = self.rows.get(" ".join(passage.split()))
        if row is None:
            raise ValueError(f"teacher {self.name}: no vector for the passage {passage[:80]!r}")
        return row

    def _query(self, query: str) -> np.ndarray:
        vector = self.query_vectors.get(" ".join(query.split()))
        if vector is None:
            raise ValueError(f"teacher {self.name}: no vector for the query {query[:80]!r}")
        return vector

    def score(self, queries: Sequence[str], passages: Sequence[str]) -> torch.Tensor:
        query_matrix = np.stack([self._query(q) for q in queries])
        passage_matrix = self.passage_vectors[[self._row(p) for p in passages]]
        return torch.from_numpy(np.einsum("ij,ij->i", query_matrix, passage_matrix).astype(np.float32))

    def pair_lengths(self, queries: Sequence[str], passages: Sequence[str]) -> np.ndarray:
        return np.zeros(len(queries), dtype=np.int64)  # no model runs: any order costs the same

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "name_or_path": self.name_or_path,
            "kind": self.kind,
            "revision": None,
            "max_length": self.max_length,
            "queries": len(self.query_vectors),
            "passages": len(self.passage_vectors),
        }
