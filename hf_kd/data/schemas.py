"""The declared schemas of teacher-score datasets, their detection, and the lazy join of ids to texts.

Every teacher-score source becomes one of these `datasets.Features`. The trainer reads the *text* forms
with exactly these column names:

| schema           | text form columns                                 | id form columns                    |
|------------------|---------------------------------------------------|------------------------------------|
| `scored_triples` | query, positive, negative, pos_score, neg_score   | query_id, positive_id, negative_id, |
|                  |                                                   | pos_score, neg_score               |
| `margin_triples` | query, positive, negative, margin                 | query_id, positive_id, negative_id, |
|                  |                                                   | margin                             |
| `nway`           | query, passages (first is the positive), scores   | query_id, passage_ids, scores      |
| `triples`        | query, positive, negative                         | query_id, positive_id, negative_id |
| `pointwise`      | query, passage, score                             | query_id, passage_id, score        |

Id forms come with separate queries and collection datasets of [`TEXTS_FEATURES`] (`id`, `text`), so that
files of tens of millions of rows need not repeat passage text; [`join_texts`] turns an id form into its
text form lazily, batch by batch, when rows are read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from datasets import Dataset, Features, IterableDataset, List, Value

__all__ = [
    "ID_SCHEMAS",
    "ID_TRIPLES_FEATURES",
    "MARGIN_ID_TRIPLES_FEATURES",
    "MARGIN_TRIPLES_FEATURES",
    "NWAY_FEATURES",
    "NWAY_ID_FEATURES",
    "POINTWISE_FEATURES",
    "POINTWISE_ID_FEATURES",
    "SCHEMAS",
    "SCORED_ID_TRIPLES_FEATURES",
    "SCORED_TRIPLES_FEATURES",
    "TEXTS_FEATURES",
    "TEXT_SCHEMAS",
    "TRIPLES_FEATURES",
    "detect_schema",
    "per_teacher_columns",
    "with_per_teacher_columns",
    "join_texts",
    "text_schema_of",
]

_STRING = Value("string")
_SCORE = Value("float32")

SCORED_TRIPLES_FEATURES = Features(
    {"query": _STRING, "positive": _STRING, "negative": _STRING, "pos_score": _SCORE, "neg_score": _SCORE}
)
"""(a) Pairwise triples with one teacher score per passage."""

MARGIN_TRIPLES_FEATURES = Features({"query": _STRING, "positive": _STRING, "negative": _STRING, "margin": _SCORE})
"""(a') Pairwise triples where the source gives only `margin = pos_score - neg_score`."""

NWAY_FEATURES = Features({"query": _STRING, "passages": List(_STRING), "scores": List(_SCORE)})
"""(b) One query, n passages (the first is the positive) and their n teacher scores."""

TRIPLES_FEATURES = Features({"query": _STRING, "positive": _STRING, "negative": _STRING})
"""(c) Unscored triples, for training teachers and for scoring with them."""

POINTWISE_FEATURES = Features({"query": _STRING, "passage": _STRING, "score": _SCORE})
"""One teacher score per (query, passage) pair."""

SCORED_ID_TRIPLES_FEATURES = Features(
    {
        "query_id": _STRING,
        "positive_id": _STRING,
        "negative_id": _STRING,
        "pos_score": _SCORE,
        "neg_score": _SCORE,
    }
)
MARGIN_ID_TRIPLES_FEATURES = Features(
    {"query_id": _STRING, "positive_id": _STRING, "negative_id": _STRING, "margin": _SCORE}
)
NWAY_ID_FEATURES = Features({"query_id": _STRING, "passage_ids": List(_STRING), "scores": List(_SCORE)})
ID_TRIPLES_FEATURES = Features({"query_id": _STRING, "positive_id": _STRING, "negative_id": _STRING})
POINTWISE_ID_FEATURES = Features({"query_id": _STRING, "passage_id": _STRING, "score": _SCORE})

TEXTS_FEATURES = Features({"id": _STRING, "text": _STRING})
"""Queries or passages by id, to be joined to an id form."""

TEXT_SCHEMAS: dict[str, Features] = {
    "scored_triples": SCORED_TRIPLES_FEATURES,
    "margin_triples": MARGIN_TRIPLES_FEATURES,
    "nway": NWAY_FEATURES,
    "triples": TRIPLES_FEATURES,
    "pointwise": POINTWISE_FEATURES,
}
ID_SCHEMAS: dict[str, Features] = {
    "scored_triples_ids": SCORED_ID_TRIPLES_FEATURES,
    "margin_triples_ids": MARGIN_ID_TRIPLES_FEATURES,
    "nway_ids": NWAY_ID_FEATURES,
    "triples_ids": ID_TRIPLES_FEATURES,
    "pointwise_ids": POINTWISE_ID_FEATURES,
}
SCHEMAS: dict[str, Features] = {**TEXT_SCHEMAS, **ID_SCHEMAS}
"""Every schema by name; id forms are named `<text form>_ids`."""

# id column -> (text column, which texts it refers to)
_ID_TO_TEXT_COLUMN = {
    "query_id": ("query", "queries"),
    "positive_id": ("positive", "collection"),
    "negative_id": ("negative", "collection"),
    "passage_id": ("passage", "collection"),
    "passage_ids": ("passages", "collection"),
}


def detect_schema(dataset_or_features: Dataset | IterableDataset | Features) -> str:
    """Names the schema of a dataset from its columns.

    Args:
        dataset_or_features (`Dataset`, `IterableDataset` or `Features`): what to inspect.

    Returns:
        `str`: a key of [`SCHEMAS`], e.g. `"scored_triples"` or `"nway_ids"`.

    Raises:
        ValueError: when the columns match no schema, or match one with other value types.
    """
    features = dataset_or_features if isinstance(dataset_or_features, Features) else dataset_or_features.features
    if features is None:
        raise ValueError("the dataset declares no features; cast it to one of hf_kd.data.SCHEMAS first")
    columns = set(features) - set(per_teacher_columns(features))
    for name, schema in SCHEMAS.items():
        if columns == set(schema):
            mismatched = [c for c in schema if features[c] != schema[c]]
            if mismatched:
                raise ValueError(
                    f"columns match schema {name!r} but {mismatched} have types "
                    f"{[features[c] for c in mismatched]}, expected {[schema[c] for c in mismatched]}"
                )
            return name
    known = {name: list(schema) for name, schema in SCHEMAS.items()}
    raise ValueError(f"columns {sorted(columns)} match no teacher-score schema; expected one of {known}")


PER_TEACHER_PREFIXES = ("pos_score_", "neg_score_", "margin_", "scores_")


def per_teacher_columns(columns) -> list[str]:
    """Columns holding one teacher's scores beside an ensemble's (`pos_score_<teacher>`, `neg_score_<teacher>`,
    `margin_<teacher>`, `scores_<teacher>`); they ride along with any schema."""
    return [c for c in columns if c.startswith(PER_TEACHER_PREFIXES)]


def with_per_teacher_columns(features: Features, columns) -> Features:
    """`features` plus the per-teacher score columns among `columns`, typed like the schema's own scores."""
    extended = Features(dict(features))
    for column in per_teacher_columns(columns):
        extended[column] = List(_SCORE) if column.startswith("scores_") else _SCORE
    return extended


def text_schema_of(schema_name: str) -> str:
    """The text form of a schema name: `"nway_ids"` -> `"nway"`; text forms map to themselves."""
    if schema_name not in SCHEMAS:
        raise ValueError(f"unknown schema {schema_name!r}; expected one of {list(SCHEMAS)}")
    return schema_name.removesuffix("_ids")


class _TextLookup:
    """Id -> text from a mapping, or from a (`id`, `text`) dataset without copying its texts into Python."""

    def __init__(self, texts: Mapping[str, str] | Dataset, kind: str):
        self.kind = kind
        if isinstance(texts, Dataset):
            missing = {"id", "text"} - set(texts.column_names)
            if missing:
                raise ValueError(f"the {kind} dataset needs columns 'id' and 'text', missing {sorted(missing)}")
            self._rows = {item_id: row for row, item_id in enumerate(texts["id"])}
            self._texts: Dataset | None = texts.select_columns(["text"])
            self._mapping: Mapping[str, str] | None = None
        else:
            self._mapping = texts
            self._texts = None

    def _missing(self, item_id: str) -> KeyError:
        return KeyError(f"id {item_id!r} not found in the {self.kind} ({self.kind} has no text for it)")

    def lookup(self, ids: list[str]) -> list[str]:
        if self._mapping is not None:
            try:
                return [self._mapping[i] for i in ids]
            except KeyError as e:
                raise self._missing(e.args[0]) from None
        rows = []
        for item_id in ids:
            row = self._rows.get(item_id)
            if row is None:
                raise self._missing(item_id)
            rows.append(row)
        return self._texts[rows]["text"]


class _JoinTexts:
    """Batched transform replacing id columns by text columns (picklable for dataloader workers)."""

    def __init__(self, id_columns: list[str], queries: _TextLookup, collection: _TextLookup):
        self.id_columns = id_columns
        self.lookups = {"queries": queries, "collection": collection}

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        out = {}
        for column, values in batch.items():
            if column not in self.id_columns:
                out[column] = values
                continue
            text_column, source = _ID_TO_TEXT_COLUMN[column]
            lookup = self.lookups[source]
            if column == "passage_ids":
                flat = lookup.lookup([pid for ids in values for pid in ids])
                texts, start = [], 0
                for ids in values:
                    texts.append(flat[start : start + len(ids)])
                    start += len(ids)
                out[text_column] = texts
            else:
                out[text_column] = lookup.lookup(list(values))
        return out


def join_texts(
    dataset: Dataset | IterableDataset,
    queries: Mapping[str, str] | Dataset,
    collection: Mapping[str, str] | Dataset,
) -> Dataset | IterableDataset:
    """Turns an id form into its text form lazily: texts are looked up only when rows are read.

    A `Dataset` gets a `with_transform` (nothing is materialised; `dataset.features` still describes the
    stored ids while indexing returns texts); an `IterableDataset` gets a batched `map`, applied on the fly
    while streaming, whose declared features are the text form.

    Args:
        dataset (`Dataset` or `IterableDataset`): an id form (see [`ID_SCHEMAS`]).
        queries (`Mapping[str, str]` or `Dataset`): query id -> text, or a dataset of [`TEXTS_FEATURES`].
        collection (`Mapping[str, str]` or `Dataset`): passage id -> text, or a dataset of [`TEXTS_FEATURES`].

    Returns:
        The same rows with `query_id` -> `query`, `positive_id` -> `positive`, `negative_id` -> `negative`,
        `passage_id` -> `passage`, `passage_ids` -> `passages`; score columns unchanged. Reading a row whose
        id has no text raises `KeyError`.

    Example:
        ```python
        >>> from datasets import Dataset
        >>> ids = Dataset.from_dict(
        ...     {"query_id": ["q1"], "positive_id": ["p1"], "negative_id": ["p2"], "margin": [2.5]},
        ...     features=MARGIN_ID_TRIPLES_FEATURES,
        ... )
        >>> texts = join_texts(ids, {"q1": "what is kd"}, {"p1": "distillation is ...", "p2": "a cat"})
        >>> texts[0]
        {'query': 'what is kd', 'positive': 'distillation is ...', 'negative': 'a cat', 'margin': 2.5}

        ```
    """
    schema = detect_schema(dataset)
    if schema not in ID_SCHEMAS:
        raise ValueError(f"join_texts expects an id form ({list(ID_SCHEMAS)}), got the text form {schema!r}")
    id_columns = [c for c in SCHEMAS[schema] if c in _ID_TO_TEXT_COLUMN]
    transform = _JoinTexts(id_columns, _TextLookup(queries, "queries"), _TextLookup(collection, "collection"))
    if isinstance(dataset, IterableDataset):
        text_features = Features(
            {
                _ID_TO_TEXT_COLUMN[c][0] if c in _ID_TO_TEXT_COLUMN else c: feature
                for c, feature in SCHEMAS[schema].items()
            }
        )
        joined = dataset.map(transform, batched=True, remove_columns=id_columns, features=text_features)
        return joined.select_columns(list(text_features))  # same column order as the map-style result
    return dataset.with_transform(transform)
