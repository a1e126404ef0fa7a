"""BM25 over a corpus as a teacher (`bm25:CORPUS`): any (query, passage) pair of the corpus gets the passage's BM25
score for the query, not only the pairs a run file holds.

Lexical and dense rankers fail on different queries: on BEIR SciFact the per-query z-score mean of BM25 and
all-MiniLM-L6-v2 (`hf-kd score --teacher bm25:CORPUS --teacher MINILM --normalize query_zscore`) ranks better than
either, with no relevance label (see the README's adaptation results).
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .base import Teacher, _short_name

__all__ = ["BM25_PREFIX", "BM25Teacher"]

BM25_PREFIX = "bm25:"
"""`load_teacher("bm25:CORPUS")` loads BM25 over a corpus (a BEIR folder or a collection TSV) as a teacher."""

_CACHED_QUERIES = 256


class BM25Teacher(Teacher):
    """BM25 (bm25s, Lucene variant; see `hf_kd.evaluation.BM25Index`) over a corpus as a teacher.

    A pair's score is the BM25 score of its passage, found in the corpus by its text (white space collapsed), for its
    query; each distinct query is scored against the whole corpus once (the latest queries are cached), so scoring
    every candidate of a query costs one pass. A passage that is not in the corpus cannot be scored with the corpus's
    statistics: it fails with a one-line error naming the passage, never with an invented score.

    Args:
        corpus (`Mapping[str, str]`): document id -> text, the texts the pairs' passages are taken from.
        source (`str`, *optional*): where the corpus was read from (recorded in the provenance).
        name (`str`, *optional*): the short name in score columns; defaults to `bm25`.
        k1, b: BM25's parameters.
    """

    kind = "bm25"

    def __init__(
        self,
        corpus: Mapping[str, str],
        source: str | None = None,
        name: str | None = None,
        k1: float = 1.2,
        b: float = 0.75,
    ):
        from ..evaluation.bm25 import BM25Index

        if not corpus:
            raise ValueError("BM25 teacher: the corpus is empty")
        self.index = BM25Index.build(dict(corpus), k1=k1, b=b, show_progress=False)
        self.rows: dict[str, int] = {}
        for row, doc_id in enumerate(self.index.doc_ids):
            self.rows.setdefault(" ".join(corpus[doc_id].split()), row)
        digest = hashlib.sha256()
        for doc_id in self.index.doc_ids:
            digest.update(f"{doc_id}\t{corpus[doc_id]}\n".encode())
        self.corpus_sha256 = digest.hexdigest()
        self.source = source
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        super().__init__(source or "corpus", None, max_length=0, device=torch.device("cpu"), name=name or "bm25")
        self.name = _short_name(self.name)

    @classmethod
    def from_corpus(cls, path: str | os.PathLike, name: str | None = None) -> BM25Teacher:
        """BM25 over a BEIR folder or a collection TSV (see `hf_kd.data.read_corpus`)."""
        from ..data.corpus import corpus_texts, read_corpus

        return cls(corpus_texts(read_corpus(path)), source=str(Path(path).resolve()), name=name)

    def corpus_scores(self, query: str) -> np.ndarray:
        """The query's BM25 score of every document of the corpus, in the order the corpus was given."""
        scores = self._cache.get(query)
        if scores is None:
            tokens = self.index.tokenizer.tokenize([query], update_vocab=False, return_as="ids", show_progress=False)
            ids = tokens[0] if tokens else []
            if ids:
                scores = np.asarray(self.index.retriever.get_scores(list(ids)), dtype=np.float32)
            else:  # no query word is in the corpus: every passage matches nothing
                scores = np.zeros(len(self.index), dtype=np.float32)
            self._cache[query] = scores
            if len(self._cache) > _CACHED_QUERIES:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(query)
        return scores

    def score(self, queries: Sequence[str], passages: Sequence[str]) -> torch.Tensor:
        scores = np.empty(len(queries), dtype=np.float32)
        for i, (query, passage) in enumerate(zip(queries, passages)):
            row = self.rows.get(" ".join(passage.split()))
            if row is None:
                raise ValueError(
                    f"BM25 teacher over {self.source or 'the corpus given'}: the passage {passage[:80]!r} is not in "
                    "its corpus, so it has no BM25 statistics; pass the corpus the candidates come from"
                )
            scores[i] = self.corpus_scores(query)[row]
        return torch.from_numpy(scores)

    def pair_lengths(self, queries: Sequence[str], passages: Sequence[str]) -> np.ndarray:
        # no model: any order costs the same, and pairs keep their order (a query's pairs side by side)
        return np.zeros(len(queries), dtype=np.int64)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "name_or_path": BM25_PREFIX + (self.source or "corpus"),
            "kind": self.kind,
            "revision": None,
            "corpus_sha256": self.corpus_sha256,
            "documents": len(self.index),
            "parameters": self.index.config,
        }
