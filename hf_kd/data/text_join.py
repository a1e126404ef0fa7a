"""The join of id-form training rows to their texts: [`join_texts`] looks the ids up in [`TextStore`]s lazily,
batch by batch, when rows are read.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pyarrow as pa
from datasets import Dataset, Features, IterableDataset

from .schemas import ID_SCHEMAS, ID_TO_TEXT_COLUMN, SCHEMAS, schema_of_columns, text_columns
from .texts import MissingIdRows, TextStore

__all__ = ["JoinTexts", "join_texts", "joined_columns"]


class JoinTexts:
    """Batched transform replacing the id columns of a batch by their texts (see [`join_texts`]).

    Args:
        id_columns (`list[str]`): the id columns of the rows (keys of `ID_TO_TEXT_COLUMN`).
        queries ([`TextStore`]), collection ([`TextStore`]): the texts.
        source (`str`, *optional*): the rows' file or dataset, named with the row by a missing-id error.
    """

    def __init__(
        self,
        id_columns: list[str],
        queries: TextStore,
        collection: TextStore,
        source: str = "the rows",
        rejected: MissingIdRows | None = None,
    ):
        self.id_columns = id_columns
        self.stores = {"queries": queries, "collection": collection}
        self.source = source
        self.rejected = rejected

    def __call__(self, batch: dict[str, list], indices: list[int] | None = None) -> dict[str, list]:
        if self.rejected is not None:
            batch = self._drop_missing(batch, indices)
        out = {}
        for column, values in batch.items():
            if column not in self.id_columns:
                out[column] = values
                continue
            text_column, kind = ID_TO_TEXT_COLUMN[column]
            store = self.stores[kind]
            if column == "passage_ids":
                flat = [pid for ids in values for pid in ids]
                where = [f"{self.source}, row {i}" for i, ids in zip(indices, values) for _ in ids] if indices else None
                texts, start = [], 0
                flat_texts = store.lookup(flat, where)
                for ids in values:
                    texts.append(flat_texts[start : start + len(ids)])
                    start += len(ids)
                out[text_column] = texts
            else:
                where = [f"{self.source}, row {i}" for i in indices] if indices else None
                out[text_column] = store.lookup(values, where)
        return out

    def _drop_missing(self, batch: dict[str, list], indices: list[int] | None) -> dict[str, list]:
        rows = len(next(iter(batch.values()))) if batch else 0
        indices = indices if indices is not None else list(range(rows))
        keep = np.ones(rows, dtype=bool)
        for column in self.id_columns:
            store = self.stores[ID_TO_TEXT_COLUMN[column][1]]
            values = batch[column]
            if column == "passage_ids":
                flat = pa.array([pid for ids in values for pid in ids])
                owner = np.repeat(np.arange(rows), [len(ids) for ids in values])
            else:
                flat, owner = pa.array(values), np.arange(rows)
            for position in np.flatnonzero(store.rows(flat) < 0):
                row = int(owner[position])
                self.rejected.add(self.source, indices[row], column, str(flat[int(position)].as_py()), store)
                keep[row] = False
        if keep.all():
            return batch
        return {column: [v for v, k in zip(values, keep) if k] for column, values in batch.items()}


def join_texts(
    dataset: Dataset | IterableDataset,
    queries: TextStore | Mapping[str, str] | Dataset,
    collection: TextStore | Mapping[str, str] | Dataset,
    source: str = "the rows",
    rejected: MissingIdRows | None = None,
) -> Dataset | IterableDataset:
    """Turns an id form into its text form lazily: texts are looked up only when rows are read, batch by batch.

    A `Dataset` gets a `with_transform` (nothing is materialised; `dataset.features` still describes the
    stored ids while indexing returns texts); an `IterableDataset` gets a batched `map`, applied on the fly
    while streaming, whose declared features are the text form.

    Args:
        dataset (`Dataset` or `IterableDataset`): an id form (see `ID_SCHEMAS`), possibly with per-teacher columns.
        queries ([`TextStore`], `Mapping[str, str]` or `Dataset`): query id -> text, or a dataset of
            `TEXTS_FEATURES`.
        collection ([`TextStore`], `Mapping[str, str]` or `Dataset`): passage id -> text, likewise.
        source (`str`, *optional*): the rows' file or dataset, named by missing-id errors of streamed rows.
        rejected ([`MissingIdRows`], *optional*): streamed rows with a missing id are recorded there and
            dropped instead of raising (map-style datasets are checked up front, see [`check_ids`]).

    Returns:
        The same rows with `query_id` -> `query`, `positive_id` -> `positive`, `negative_id` -> `negative`,
        `passage_id` -> `passage`, `passage_ids` -> `passages`; score columns unchanged. Reading a row whose
        id has no text raises [`MissingIdError`] (a `KeyError`).

    Example:
        ```python
        >>> from datasets import Dataset, Features, IterableDataset
        >>> from hf_kd.data import MARGIN_ID_TRIPLES_FEATURES
        >>> ids = Dataset.from_dict(
        ...     {"query_id": ["q1"], "positive_id": ["p1"], "negative_id": ["p2"], "margin": [2.5]},
        ...     features=MARGIN_ID_TRIPLES_FEATURES,
        ... )
        >>> texts = join_texts(ids, {"q1": "what is kd"}, {"p1": "distillation is ...", "p2": "a cat"})
        >>> texts[0]
        {'query': 'what is kd', 'positive': 'distillation is ...', 'negative': 'a cat', 'margin': 2.5}

        ```
    """
    schema = schema_of_columns(dataset.column_names)  # by name: ids of any type match the stores' decimal ids
    if schema not in ID_SCHEMAS:
        raise ValueError(f"join_texts expects an id form ({list(ID_SCHEMAS)}), got the text form {schema!r}")
    id_columns = [c for c in SCHEMAS[schema] if c in ID_TO_TEXT_COLUMN]
    transform = JoinTexts(
        id_columns, TextStore.open(queries, "queries"), TextStore.open(collection, "collection"), source, rejected
    )
    if isinstance(dataset, IterableDataset):
        features = dataset.features
        text_features = Features(
            {ID_TO_TEXT_COLUMN[c][0] if c in ID_TO_TEXT_COLUMN else c: feature for c, feature in features.items()}
        )
        joined = dataset.map(
            transform, batched=True, with_indices=True, remove_columns=id_columns, features=text_features
        )
        return joined.select_columns(list(text_features))  # same column order as the map-style result
    return dataset.with_transform(transform)


def joined_columns(dataset: Dataset | IterableDataset) -> list[str]:
    """The columns rows of `dataset` have when read: the text columns of an id form joined by [`join_texts`]."""
    transform = (getattr(dataset, "format", None) or {}).get("format_kwargs", {}).get("transform")
    if isinstance(transform, JoinTexts):
        return text_columns(dataset.column_names)
    return list(dataset.column_names)
