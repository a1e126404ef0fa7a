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
files of tens of millions of rows need not repeat passage text; `join_texts` turns an id form into its
text form lazily, batch by batch, when rows are read.
"""

from __future__ import annotations

from collections.abc import Mapping

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
    "LAYOUT_RENAMES",
    "detect_schema",
    "normalize_columns",
    "per_teacher_columns",
    "schema_of_columns",
    "select_teacher_columns",
    "with_per_teacher_columns",
    "text_columns",
    "text_schema_of",
    "ID_TO_TEXT_COLUMN",
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

ID_TO_TEXT_COLUMN = {
    "query_id": ("query", "queries"),
    "positive_id": ("positive", "collection"),
    "negative_id": ("negative", "collection"),
    "passage_id": ("passage", "collection"),
    "passage_ids": ("passages", "collection"),
}
"""Id column -> (its text column, `"queries"` or `"collection"`: the texts it refers to)."""


def text_columns(columns) -> list[str]:
    """The columns of the text form of rows with `columns`: id columns become their text columns."""
    return [ID_TO_TEXT_COLUMN[c][0] if c in ID_TO_TEXT_COLUMN else c for c in columns]


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
    name = schema_of_columns(features)
    schema = SCHEMAS[name]
    mismatched = [c for c in schema if features[c] != schema[c]]
    if mismatched:
        raise ValueError(
            f"columns match schema {name!r} but {mismatched} have types "
            f"{[features[c] for c in mismatched]}, expected {[schema[c] for c in mismatched]}"
        )
    return name


def schema_of_columns(columns) -> str:
    """The schema whose columns are `columns` (per-teacher score columns aside), by name only."""
    columns = set(columns) - set(per_teacher_columns(columns))
    for name, schema in SCHEMAS.items():
        if columns == set(schema):
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


LAYOUT_RENAMES = {
    "sentence-transformers margin": (
        {"query_id", "positive_id", "negative_id", "score"},
        {"score": "margin"},
    ),
    "sentence-transformers margin (texts)": ({"query", "positive", "negative", "score"}, {"score": "margin"}),
    "PyLate": ({"query_id", "document_ids", "scores"}, {"document_ids": "passage_ids"}),
}
"""Other libraries' column sets and the renames that make them hf-kd schemas."""


def normalize_columns(dataset: Dataset | IterableDataset) -> tuple[Dataset | IterableDataset, str]:
    """Renames the columns of another library's layout to an hf-kd schema; returns the dataset and the layout."""
    columns = set(dataset.column_names) - set(per_teacher_columns(dataset.column_names))
    for layout, (names, renames) in LAYOUT_RENAMES.items():
        if columns == names:
            return dataset.rename_columns(renames), layout
    return dataset, "hf-kd"


def select_teacher_columns(
    dataset: Dataset | IterableDataset, renames: Mapping[str, str]
) -> tuple[Dataset | IterableDataset, str | None]:
    """Rows of an hf-kd schema or of another library's layout with the chosen teacher's columns under the schema's
    names (e.g. `pos_score_teacher_1` -> `pos_score`, replacing an ensemble's `pos_score`) and the other teachers'
    columns dropped; returns them with the schema they then have (a key of [`SCHEMAS`], `None` where none
    matches)."""
    dataset, _ = normalize_columns(dataset)
    for source, target in renames.items():
        if source != target and source in dataset.column_names:
            if target in dataset.column_names:
                dataset = dataset.remove_columns(target)
            dataset = dataset.rename_column(source, target)
    extra = per_teacher_columns(dataset.column_names)
    if extra:
        dataset = dataset.remove_columns(extra)
    columns = set(dataset.column_names)
    return dataset, next((name for name, schema in SCHEMAS.items() if columns == set(schema)), None)
