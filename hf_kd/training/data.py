"""Training data for the trainer: loading teacher-score files and checking them against the loss.

The trainer reads the text forms of the teacher-score schemas (see `hf_kd.data.schemas`):

| schema           | columns                                             | labels given to the loss     |
|------------------|-----------------------------------------------------|------------------------------|
| `scored_triples` | query, positive, negative, pos_score, neg_score     | (batch, 2) raw scores        |
| `margin_triples` | query, positive, negative, margin                   | (batch,) margins             |
| `nway`           | query, passages (first is the positive), scores     | (batch, 1+N) raw scores      |
| `triples`        | query, positive, negative                           | none (losses without teacher)|
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from datasets import Dataset, concatenate_datasets, load_from_disk
from datasets.exceptions import DatasetGenerationError

from ..data.errors import DataFormatError
from ..data.provenance import PROVENANCE_FILENAME
from ..data.schemas import TEXT_SCHEMAS, per_teacher_columns
from ..data.writers import load_scores
from ..losses import LOSSES
from .arguments import ConfigError

__all__ = ["TRAINABLE_SCHEMAS", "add_length_column", "check_dataset_for_loss", "load_train_dataset", "train_schema"]

TRAINABLE_SCHEMAS = ("scored_triples", "margin_triples", "nway", "triples")

_TSV_LAYOUTS = {
    3: ["query", "positive", "negative"],
    5: ["pos_score", "neg_score", "query", "positive", "negative"],
}


def _read_tsv_rows(path: str, size: int, mtime: float) -> Iterator[dict]:
    """Rows of a headerless TSV: `query pos neg`, or the paper's `pos_score neg_score query pos neg`.

    `size` and `mtime` only make the `datasets` cache key change when the file does.
    """
    columns = None
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            line = line.rstrip("\n").rstrip("\r")
            if not line:
                continue
            fields = line.split("\t")
            if columns is None:
                if len(fields) not in _TSV_LAYOUTS:
                    raise DataFormatError(
                        path,
                        line_number,
                        f"expected 3 tab-separated columns 'query pos neg' or 5 'pos_score neg_score query pos neg', "
                        f"got {len(fields)}",
                    )
                columns = _TSV_LAYOUTS[len(fields)]
            if len(fields) != len(columns):
                raise DataFormatError(
                    path, line_number, f"expected {len(columns)} tab-separated columns like line 1, got {len(fields)}"
                )
            row = dict(zip(columns, fields))
            for name in ("pos_score", "neg_score"):
                if name in row:
                    try:
                        row[name] = float(row[name])
                    except ValueError:
                        raise DataFormatError(
                            path, line_number, f"{name} must be a number, got {row[name]!r}"
                        ) from None
            yield row


def select_teacher_columns(dataset: Dataset, renames: dict[str, str]) -> Dataset:
    """Puts the chosen teacher's columns under the schema's names (e.g. `pos_score_teacher_1` -> `pos_score`,
    replacing an ensemble's `pos_score`) and drops the other teachers' columns."""
    for source, target in renames.items():
        if source != target and source in dataset.column_names:
            if target in dataset.column_names:
                dataset = dataset.remove_columns(target)
            dataset = dataset.rename_column(source, target)
    extra = per_teacher_columns(dataset.column_names)
    return dataset.remove_columns(extra) if extra else dataset


def _load_one(path: str) -> Dataset:
    if os.path.isdir(path) and (Path(path) / PROVENANCE_FILENAME).is_file():
        return load_scores(path)  # a teacher-score dataset folder of hf_kd.data
    if os.path.isdir(path):
        return load_from_disk(path)
    suffix = Path(path).suffix.lower()
    if suffix == ".parquet":
        return Dataset.from_parquet(path)
    if suffix in (".jsonl", ".json"):
        return Dataset.from_json(path)
    if suffix in (".tsv", ".txt"):
        stat = os.stat(path)
        try:
            return Dataset.from_generator(
                _read_tsv_rows, gen_kwargs={"path": path, "size": stat.st_size, "mtime": stat.st_mtime}
            )
        except DatasetGenerationError as error:
            if isinstance(error.__cause__, DataFormatError):
                raise error.__cause__ from None
            raise
    raise ConfigError(f"train_files: {path}: unknown format; use .parquet, .jsonl, .tsv or a `save_to_disk` folder")


def train_schema(dataset: Dataset, source: str = "the training data") -> str:
    """The text schema (`scored_triples`, `margin_triples`, `nway` or `triples`) matching the columns."""
    columns = set(dataset.column_names)
    for name in TRAINABLE_SCHEMAS:
        if columns == set(TEXT_SCHEMAS[name]):
            return name
    expected = {name: list(TEXT_SCHEMAS[name]) for name in TRAINABLE_SCHEMAS}
    raise ConfigError(f"{source}: columns {sorted(columns)} match no training schema; expected one of {expected}")


def load_train_dataset(
    paths: Sequence[str],
    pos_score_column: str = "pos_score",
    neg_score_column: str = "neg_score",
    margin_column: str = "margin",
    scores_column: str = "scores",
) -> Dataset:
    """Loads teacher-score training files into one text-form dataset with the declared schema's features.

    This is the single entry point the trainer uses for training data; readers of further formats plug in here.

    Args:
        paths: teacher-score dataset folders of `hf_kd.data` (`hf-kd data convert`, `hf-kd score`), Parquet,
            JSON-lines, TSV files or `save_to_disk` folders (concatenated in order).
        pos_score_column, neg_score_column, margin_column, scores_column: the teacher columns' names in the
            files (e.g. `pos_score_<teacher>` to train from one teacher of an ensemble dataset); they are
            renamed to the schema's names, and other teachers' columns are dropped.

    Returns:
        `datasets.Dataset` in one of `TRAINABLE_SCHEMAS`, cast to its `datasets.Features`.

    Raises:
        ConfigError: unknown file type, or columns that match no schema, or files of different schemas.
        DataFormatError: a malformed TSV line (names the file and the line).
    """
    renames = {
        pos_score_column: "pos_score",
        neg_score_column: "neg_score",
        margin_column: "margin",
        scores_column: "scores",
    }
    datasets_, schemas = [], []
    for path in paths:
        dataset = select_teacher_columns(_load_one(str(path)), renames)
        schema = train_schema(dataset, source=str(path))
        datasets_.append(dataset.cast(TEXT_SCHEMAS[schema]))
        schemas.append(schema)
    if not datasets_:
        raise ConfigError("train_files: no training data given")
    if len(set(schemas)) > 1:
        raise ConfigError(f"train_files have different schemas {dict(zip(map(str, paths), schemas))}")
    return datasets_[0] if len(datasets_) == 1 else concatenate_datasets(datasets_)


def check_dataset_for_loss(dataset: Dataset, loss_name: str) -> str:
    """Checks that the loss can train on the dataset; returns the schema name.

    Raises:
        ConfigError: the loss needs teacher scores the data lacks, needs raw scores but the data has margins, or is
            pairwise only but the data has several negatives per query.
    """
    schema = train_schema(dataset)
    loss_class = LOSSES[loss_name]
    if schema == "triples" and loss_class.requires_teacher:
        raise ConfigError(
            f"loss {loss_name!r} needs teacher scores but the training data are unscored triples "
            "(query, positive, negative); score them with a teacher first, or train with loss 'ranknet'"
        )
    if schema == "margin_triples" and not loss_class.accepts_margins:
        raise ConfigError(
            f"loss {loss_name!r} needs raw teacher scores (pos_score, neg_score) but the training data only have "
            "margins; use 'margin_mse', 'weighted_ranknet' or 'listwise_kl'"
        )
    if schema == "nway" and not loss_class.supports_n_way:
        n_way = [name for name, cls in LOSSES.items() if cls.supports_n_way and cls.requires_teacher]
        raise ConfigError(
            f"loss {loss_name!r} is pairwise only but the training data are n-way (query, passages, scores); "
            f"use one of {', '.join(sorted(n_way))}, or triples with pos_score and neg_score"
        )
    return schema


def add_length_column(dataset: Dataset, column: str = "length") -> Dataset:
    """Adds the length `group_by_length` batches by: characters of the query plus those of the row's longest
    passage (the longest passage sets the padded width of a batch, for every architecture)."""

    def lengths(batch: dict) -> dict:
        passages = batch["passages"] if "passages" in batch else list(zip(batch["positive"], batch["negative"]))
        return {column: [len(q) + max(len(p) for p in ps) for q, ps in zip(batch["query"], passages)]}

    return dataset.map(lengths, batched=True, desc="Measuring lengths")
