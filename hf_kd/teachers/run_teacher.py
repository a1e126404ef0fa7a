"""A TREC run file with scores as a teacher (`run:PATH`): a pair's score is the run's score of its query and
passage ids."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .base import Teacher, _short_name

__all__ = ["RUN_PREFIX", "RunTeacher"]

RUN_PREFIX = "run:"
"""`load_teacher("run:PATH", queries=..., collection=...)` loads a TREC run file as a teacher."""


class RunTeacher(Teacher):
    """A TREC run file with scores (`qid Q0 pid rank score tag`) as a teacher: a pair's score is the run's score
    of its query and passage ids, found through the texts of the queries and the collection.

    A pair the run does not hold gets NaN, never an invented score; `score_triples` drops the triples with such a
    pair and counts them (or fails, with `missing="error"`). Texts are matched with their white space collapsed;
    where several ids share a text, the first one the run scores for the pair is used.

    Args:
        run_path (`str` or `os.PathLike`): the run file.
        queries (`Mapping[str, str]`): query id -> text, covering the run's queries.
        collection (`Mapping[str, str]`): passage id -> text, covering the run's passages.
        name (`str`, *optional*): the short name; defaults to the file name without `.trec`/`.txt`.
    """

    kind = "run"
    covers_every_pair = False

    def __init__(self, run_path, queries, collection, name: str | None = None):
        from ..data import read_run

        run_path = Path(run_path)
        if not run_path.is_file():
            raise FileNotFoundError(f"run teacher: no run file at {run_path}")
        self.run = read_run(run_path)
        self.query_ids = _ids_by_text(queries)
        self.passage_ids = _ids_by_text(collection)
        unknown = sorted(q for q in self.run if q not in queries)
        if unknown:
            raise ValueError(
                f"{run_path}: {len(unknown)} of its {len(self.run)} queries have no text in the queries given, "
                f"e.g. {unknown[:3]}; pass the queries file of the run's topics"
            )
        self.sha256 = hashlib.sha256(run_path.read_bytes()).hexdigest()
        default_name = re.sub(r"\.(trec|txt|run)$", "", run_path.name)
        super().__init__(str(run_path), None, max_length=0, device=torch.device("cpu"), name=name or default_name)
        self.name = _short_name(self.name)

    def score(self, queries: Sequence[str], passages: Sequence[str]) -> torch.Tensor:
        scores = [self._pair_score(query, passage) for query, passage in zip(queries, passages)]
        return torch.tensor(scores, dtype=torch.float32)

    def _pair_score(self, query: str, passage: str) -> float:
        for qid in self.query_ids.get(" ".join(query.split()), ()):
            candidates = self.run.get(qid, {})
            for pid in self.passage_ids.get(" ".join(passage.split()), ()):
                if pid in candidates:
                    return candidates[pid]
        return float("nan")

    def pair_lengths(self, queries: Sequence[str], passages: Sequence[str]) -> np.ndarray:
        return np.zeros(len(queries), dtype=np.int64)  # no model: any order costs the same

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "name_or_path": RUN_PREFIX + str(Path(self.name_or_path).resolve()),
            "kind": self.kind,
            "revision": None,
            "sha256": self.sha256,
            "queries_scored": len(self.run),
            "pairs_in_run": sum(len(c) for c in self.run.values()),
        }


def _ids_by_text(texts) -> dict[str, list[str]]:
    ids: dict[str, list[str]] = {}
    for item_id, text in texts.items():
        ids.setdefault(" ".join(text.split()), []).append(item_id)
    return ids


def _texts(texts: Mapping[str, str] | str | os.PathLike | None, kind: str, run_path: str) -> Mapping[str, str]:
    from ..data import read_collection_tsv, read_queries_tsv

    if texts is None:
        raise ValueError(
            f"run teacher {run_path!r} needs the {kind} texts of its ids: pass --queries and --collection "
            "(queries= and collection= in Python)"
        )
    if isinstance(texts, Mapping):
        return texts
    return read_queries_tsv(texts) if kind == "queries" else read_collection_tsv(texts)


def _load_run_teacher(run_path: str, queries, collection, name: str | None) -> RunTeacher:
    return RunTeacher(
        run_path, _texts(queries, "queries", run_path), _texts(collection, "collection", run_path), name=name
    )
