"""Train-ready rows: every training source a user names, read into the one dataset the trainer reads.

Folders of `hf_kd.data` (`hf-kd data convert`, `hf-kd score`), Parquet, JSON-lines and TSV files, `save_to_disk`
folders and Hub datasets, in text or id form, with the teacher column a user chooses, as a map-style or streamed
dataset. Every check that concerns the data is made here, before a step is trained: the schema, ids without text,
NaN teacher scores, the files' lines; and, for `group_by_length`, each row's length. The rows come in the text
forms of the teacher-score schemas (see `hf_kd.data.schemas`):

| schema           | columns                                             | labels given to the loss     |
|------------------|-----------------------------------------------------|------------------------------|
| `scored_triples` | query, positive, negative, pos_score, neg_score     | (batch, 2) raw scores        |
| `margin_triples` | query, positive, negative, margin                   | (batch,) margins             |
| `nway`           | query, passages (first is the positive), scores     | (batch, 1+N) raw scores      |
| `triples`        | query, positive, negative                           | none (losses without teacher)|
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
from datasets import Dataset, IterableDataset, concatenate_datasets, load_from_disk
from datasets.exceptions import DatasetGenerationError

from .errors import ConfigError, DataFormatError
from .schemas import ID_SCHEMAS, TEXT_SCHEMAS, select_teacher_columns
from .score_dataset import ScoreDataset
from .sources import TEXT_SUBSETS, DataSourceError, is_hub_id, load_hub_rows, load_hub_texts, subsets
from .text_join import join_texts, joined_columns
from .texts import MissingIdRows, TextStore, check_ids

__all__ = ["TRAINABLE_SCHEMAS", "add_length_column", "load_train_dataset", "train_schema"]

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


@dataclass
class _Source:
    """Training rows as read (ids or texts), with the texts their own folder or Hub dataset provides, and their
    schema once the teacher's columns are chosen (a key of `hf_kd.data.SCHEMAS`)."""

    rows: Dataset | IterableDataset
    name: str
    own_texts: Callable[[str], TextStore | None] = lambda kind: None
    schema: str | None = None

    @property
    def is_id_form(self) -> bool:
        return self.schema in ID_SCHEMAS


def _read_rows(path: str, streaming: bool) -> Dataset | IterableDataset:
    if os.path.isdir(path):
        dataset = load_from_disk(path)
    else:
        suffix = Path(path).suffix.lower()
        empty = os.path.getsize(path) == 0 or (suffix == ".parquet" and pq.ParquetFile(path).metadata.num_rows == 0)
        if empty:
            raise ConfigError(f"train_files: {path} holds no training rows")
        if suffix == ".parquet":
            dataset = Dataset.from_parquet(path)
        elif suffix in (".jsonl", ".json"):
            dataset = Dataset.from_json(path)
        elif suffix in (".tsv", ".txt"):
            stat = os.stat(path)
            try:
                dataset = Dataset.from_generator(
                    _read_tsv_rows, gen_kwargs={"path": path, "size": stat.st_size, "mtime": stat.st_mtime}
                )
            except DatasetGenerationError as error:
                if isinstance(error.__cause__, DataFormatError):
                    raise error.__cause__ from None
                raise
        else:
            raise ConfigError(
                f"train_files: {path}: unknown format; use .parquet, .jsonl, .tsv, a `save_to_disk` folder, an hf-kd "
                "teacher-score folder or hf://datasets/ORG/NAME[@REVISION][/SUBSET]"
            )
    return dataset.to_iterable_dataset() if streaming else dataset


def _open_source(path: str, streaming: bool) -> _Source:
    if is_hub_id(path):
        rows, _, hub_id = load_hub_rows(path, streaming=streaming)
        available = subsets(hub_id)
        return _Source(
            rows, str(hub_id), lambda kind: load_hub_texts(hub_id.with_subset(None), kind, available=available)
        )
    if ScoreDataset.is_score_dataset(path):
        scores = ScoreDataset.open(path)
        return _Source(scores.load(streaming=streaming, with_texts=False), path, lambda kind: scores.texts().get(kind))
    return _Source(_read_rows(path, streaming), path)


def _open_texts(value: str | None, kind: str) -> TextStore | None:
    if value is None:
        return None
    if is_hub_id(value):
        store = load_hub_texts(value, kind)
        if store is None:
            raise DataSourceError(f"{value}: no {kind} subset ({', '.join(TEXT_SUBSETS[kind])}); name it")
        return store
    return TextStore.open(value, kind)


def _is_empty(dataset: Dataset | IterableDataset) -> bool:
    if isinstance(dataset, IterableDataset):
        return next(iter(dataset.take(1)), None) is None
    return len(dataset) == 0


def train_schema(
    dataset: Dataset | IterableDataset, source: str = "the training data", length_column: str | None = None
) -> str:
    """The text schema (`scored_triples`, `margin_triples`, `nway` or `triples`) of the rows as they are read
    (an id form joined to its texts has the text form's columns); `length_column`, added by
    `load_train_dataset(length_column=...)`, is no part of it."""
    columns = set(joined_columns(dataset)) - {length_column}
    for name in TRAINABLE_SCHEMAS:
        if columns == set(TEXT_SCHEMAS[name]):
            return name
    raise _no_training_schema(source, columns)


def _no_training_schema(source: str, columns: set[str]) -> ConfigError:
    expected = {name: list(TEXT_SCHEMAS[name]) for name in TRAINABLE_SCHEMAS}
    id_forms = {f"{name}_ids": list(ID_SCHEMAS[f"{name}_ids"]) for name in TRAINABLE_SCHEMAS}
    return ConfigError(
        f"{source}: columns {sorted(columns)} match no training schema; expected one of {expected}, or an id form "
        f"{id_forms} with its queries and collection"
    )


def load_train_dataset(
    paths: Sequence[str],
    pos_score_column: str = "pos_score",
    neg_score_column: str = "neg_score",
    margin_column: str = "margin",
    scores_column: str = "scores",
    queries: str | None = None,
    collection: str | None = None,
    streaming: bool = False,
    missing_ids: MissingIdRows | None = None,
    length_column: str | None = None,
    refuse: Mapping[str, str] | None = None,
) -> Dataset | IterableDataset:
    """Loads teacher-score training data into one text-form dataset, checked for training.

    This is the single entry point of training data (the trainer's, and anyone's who wants the rows it trains
    on); readers of further formats plug in here.
    Id forms (`query_id`, `positive_id`, ... with scores) stay ids on disk: every id is checked against the
    texts up front (map-style) and the texts are joined per batch when rows are read, from memory-mapped Arrow.

    Args:
        paths: teacher-score dataset folders of `hf_kd.data` (`hf-kd data convert`, `hf-kd score`), Parquet,
            JSON-lines, TSV files, `save_to_disk` folders or Hub datasets `hf://datasets/ORG/NAME[@REV][/SUBSET]`
            in the hf-kd, sentence-transformers or PyLate layout (concatenated in order).
        pos_score_column, neg_score_column, margin_column, scores_column: the teacher columns' names in the
            files (e.g. `pos_score_<teacher>` to train from one teacher of an ensemble dataset); they are
            renamed to the schema's names, and other teachers' columns are dropped.
        queries, collection (*optional*): the texts of id forms: TSV `id<TAB>text`, Parquet, or a Hub dataset
            (subset); by default those stored with the rows (the folder's `texts/`, the Hub dataset's
            `queries` and `collection` / `corpus` / `documents` subsets).
        streaming (`bool`, *optional*): read the rows as an `IterableDataset` (ids are then checked as read).
        missing_ids ([`MissingIdRows`], *optional*): leave out rows whose ids have no text, recording them
            there, instead of stopping at the first.
        length_column (`str`, *optional*): add each row's length under this name (what `group_by_length`
            batches by, see [`add_length_column`]); map-style text rows only.
        refuse (`Mapping[str, str]`, *optional*): the schemas of `TRAINABLE_SCHEMAS` the caller cannot train on,
            each with the reason raised as a `ConfigError` when the rows have it (the trainer's loss, see
            `hf_kd.training.loss_refusals`), before any id is checked or text joined.

    Returns:
        `Dataset` or `IterableDataset` whose rows are in one of `TRAINABLE_SCHEMAS`.

    Raises:
        ConfigError: unknown file type, columns that match no schema, files of different schemas, a schema in
            `refuse`, no texts for an id form, no rows, NaN teacher scores, or lengths asked of rows that are not
            texts in memory.
        DataFormatError: a malformed TSV line (names the file and the line).
        DataSourceError: a Hub dataset, subset or revision that does not exist.
        MissingIdError: an id without text (names the id, the texts, the rows' source and row).
    """
    renames = {
        pos_score_column: "pos_score",
        neg_score_column: "neg_score",
        margin_column: "margin",
        scores_column: "scores",
    }
    if not paths:
        raise ConfigError("train_files: no training data given")
    sources = _open_sources(paths, streaming, renames)
    schemas = {source.name: source.schema for source in sources}
    if len({schema.removesuffix("_ids") for schema in schemas.values()}) > 1:
        raise ConfigError(f"train_files have different schemas {schemas}")
    schema = sources[0].schema.removesuffix("_ids")
    if refuse and schema in refuse:
        raise ConfigError(refuse[schema])
    explicit = {"queries": _open_texts(queries, "queries"), "collection": _open_texts(collection, "collection")}
    id_sources = [source for source in sources if source.is_id_form]
    if id_sources and len(sources) > 1 and (len(id_sources) < len(sources) or None in explicit.values()):
        raise ConfigError(
            "train_files: several sources of which some hold ids: give them all as ids with one --train_queries and "
            "--train_collection, or convert them into one dataset"
        )
    if id_sources:
        dataset = _join_id_sources(sources, explicit, missing_ids)
    else:
        dataset = _concatenate_text_sources(sources)
    _check_scores_present(dataset)
    if length_column is not None:
        if not isinstance(dataset, Dataset) or id_sources:
            raise ConfigError(
                "group_by_length measures every row's texts; with streamed or id-form data (joined per batch) leave "
                "it off"
            )
        dataset = add_length_column(dataset, length_column)
    return dataset


def _open_sources(paths: Sequence[str], streaming: bool, renames: dict[str, str]) -> list[_Source]:
    """The sources of `paths`, with the chosen teacher's columns under the schema's names and their schema; none
    may be empty or of a schema training cannot read."""
    sources = [_open_source(str(path), streaming) for path in paths]
    for source in sources:
        source.rows, source.schema = select_teacher_columns(source.rows, renames)
        if source.schema is None or source.schema.removesuffix("_ids") not in TRAINABLE_SCHEMAS:
            raise _no_training_schema(source.name, set(source.rows.column_names))
        if _is_empty(source.rows):
            raise ConfigError(f"train_files: {source.name} holds no training rows")
    return sources


def _join_id_sources(
    sources: list[_Source], explicit: dict[str, TextStore | None], missing_ids: MissingIdRows | None
) -> Dataset | IterableDataset:
    """Id-form sources as one dataset joined to their texts: those given (`explicit`), else the first source's own.

    Map-style rows are checked against the texts up front; streamed rows as they are read.
    """
    rows = _concatenate([s.rows for s in sources], sources[0].schema)
    name = sources[0].name if len(sources) == 1 else f"{sources[0].name} (+{len(sources) - 1})"
    texts = {kind: store or sources[0].own_texts(kind) for kind, store in explicit.items()}
    missing = [kind for kind, store in texts.items() if store is None]
    if missing:
        id_columns = ", ".join(c for c in rows.column_names if c.endswith(("_id", "_ids")))
        raise ConfigError(
            f"train_files: {name} holds ids ({id_columns})"
            f" but no {' and '.join(missing)} texts were found beside it; give --train_queries and "
            "--train_collection (TSV id<TAB>text, Parquet, or hf://datasets/ORG/NAME/SUBSET)"
        )
    if isinstance(rows, Dataset):
        rows = check_ids(rows, texts["queries"], texts["collection"], name, rejected=missing_ids)
        if len(rows) == 0:
            raise ConfigError(f"train_files: no training rows of {name} are left once rows with missing ids are out")
        return join_texts(rows, texts["queries"], texts["collection"], name)
    return join_texts(rows, texts["queries"], texts["collection"], name, rejected=missing_ids)


def _concatenate_text_sources(sources: list[_Source]) -> Dataset | IterableDataset:
    """Text-form sources (all of one schema) cast to their schema's features and concatenated."""
    parts = [source.rows.cast(TEXT_SCHEMAS[source.schema]) for source in sources]
    return parts[0] if len(parts) == 1 else concatenate_datasets(parts)


def _concatenate(parts: list[Dataset | IterableDataset], schema: str) -> Dataset | IterableDataset:
    if len(parts) == 1:
        return parts[0]
    return concatenate_datasets([part.cast(ID_SCHEMAS[schema]) for part in parts])


def _check_scores_present(dataset: Dataset) -> None:
    """Rejects teacher scores that are NaN: a run teacher's columns of a partial ensemble (`--missing partial`)."""
    if not isinstance(dataset, Dataset):
        return  # a stream is checked as it is read by nothing cheaper than the loss itself
    for column in ("pos_score", "neg_score", "margin"):
        if column not in dataset.column_names:
            continue
        missing = pc.is_nan(pc.cast(dataset.data.column(column), "float64"))
        count = pc.sum(missing).as_py() or 0
        if count:
            row = pc.index(missing, True).as_py()
            raise ConfigError(
                f"train_files: {count:,} of {len(dataset):,} rows have no teacher score in {column}, the first at row "
                f"{row + 1}: the teacher chosen by pos_score_column / neg_score_column lacks scores there (a run "
                "file scores only its own pairs); train on the ensemble (pos_score, neg_score) or score with "
                "--missing drop"
            )


def add_length_column(dataset: Dataset, column: str = "length") -> Dataset:
    """Adds the length `group_by_length` batches by: characters of the query plus those of the row's longest
    passage (the longest passage sets the padded width of a batch, for every architecture)."""

    def lengths(batch: dict) -> dict:
        passages = batch["passages"] if "passages" in batch else list(zip(batch["positive"], batch["negative"]))
        return {column: [len(q) + max(len(p) for p in ps) for q, ps in zip(batch["query"], passages)]}

    return dataset.map(lengths, batched=True, desc="Measuring lengths")
