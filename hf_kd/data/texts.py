"""Id -> text lookup for id-form teacher scores: an index built once, the texts memory-mapped.

A [`TextStore`] holds the queries or the passages an id form refers to. Its texts stay in a memory-mapped
Arrow file (the `datasets` cache of a Parquet file or Hub dataset, or an Arrow file converted once from a
TSV), so the 8.8M passages of MS MARCO cost page cache, not Python objects. The id -> row index is built once
when the store is opened: sorted `int64` ids when every id is the canonical decimal form of an integer
(MS MARCO, most BEIR sets; 16 bytes per text), sorted Python strings otherwise. Lookups are vectorised
(`numpy.searchsorted` over a batch of ids, then one Arrow `take`).

```python
>>> store = TextStore.from_mapping({"7": "a cat", "3": "a dog"}, name="passages")
>>> store.lookup(["3", "7", "3"])
['a dog', 'a cat', 'a dog']

```
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from datasets import Dataset
from datasets.arrow_writer import ArrowWriter

from ..files import create_temp_file
from .errors import DataFormatError
from .reader_base import _canonical_integers
from .schemas import ID_TO_TEXT_COLUMN, TEXTS_FEATURES

__all__ = [
    "ID_COLUMNS",
    "TEXT_COLUMNS",
    "MissingIdError",
    "MissingIdRows",
    "check_ids",
    "TextStore",
    "texts_columns",
]

ID_COLUMNS = ("id", "_id", "query_id", "passage_id", "document_id", "doc_id", "docid", "corpus_id", "qid", "pid")
"""Column names taken as the id of a queries or collection dataset, in order of preference."""
TEXT_COLUMNS = ("text", "passage", "query", "document", "contents")
"""Column names taken as the text, in order of preference."""

_TSV_BLOCK_BYTES = 16 << 20
_CANONICAL_INTEGER = r"^(0|-?[1-9][0-9]{0,17})$"


class MissingIdError(KeyError):
    """An id of the training rows has no text in the queries or the collection.

    Args:
        item_id (`str`): the id.
        kind (`str`): `"queries"` or `"collection"`.
        source (`str`): the file or dataset the texts come from.
        where (`str`, *optional*): the training rows' file or dataset and row, e.g. `"scores, row 17"`.
    """

    def __init__(self, item_id: str, kind: str, source: str, where: str | None = None):
        self.item_id, self.kind, self.source, self.where = item_id, kind, source, where
        prefix = f"{where}: " if where else ""
        super().__init__(f"{prefix}id {item_id!r} not found in the {kind} ({source} has no text for it)")

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]

    def __reduce__(self):
        return (type(self), (self.item_id, self.kind, self.source, self.where))


def texts_columns(column_names: Sequence[str], source: str) -> tuple[str, str]:
    """The (id, text) columns of a queries or collection dataset: `id`/`text`, sentence-transformers'
    `passage_id`/`passage` and `query_id`/`query`, PyLate's `document_id`/`text`, BEIR's `_id`/`text`."""
    id_column = next((c for c in ID_COLUMNS if c in column_names), None)
    text_column = next((c for c in TEXT_COLUMNS if c in column_names), None)
    if id_column is None or text_column is None:
        raise ValueError(
            f"{source}: columns {list(column_names)} hold no texts by id; expected an id column (one of "
            f"{', '.join(ID_COLUMNS)}) and a text column (one of {', '.join(TEXT_COLUMNS)})"
        )
    return id_column, text_column


def _as_string_ids(ids: pa.Array | pa.ChunkedArray | Sequence) -> pa.Array:
    if not isinstance(ids, (pa.Array, pa.ChunkedArray)):
        ids = pa.array(list(ids))
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks() if ids.num_chunks else pa.array([], pa.string())
    if not pa.types.is_string(ids.type) and not pa.types.is_large_string(ids.type):
        ids = ids.cast(pa.string())  # integer ids (PyLate's query_id) are matched by their decimal form
    return ids.cast(pa.string())


class _IdIndex:
    """id -> row position, sorted once; `rows` answers a whole batch with one `searchsorted`."""

    def __init__(self, ids: pa.Array):
        integers = _canonical_integers(ids)
        self.integer = integers is not None
        keys = integers.to_numpy() if self.integer else np.array(ids.to_pylist(), dtype=object)
        order = np.argsort(keys, kind="stable")  # the first of duplicate ids wins
        self._keys = keys[order]
        self._rows = order.astype(np.int64)

    def rows(self, ids: pa.Array) -> np.ndarray:
        """Row of each id, `-1` where it is not indexed."""
        if len(ids) == 0 or len(self._keys) == 0:
            return np.full(len(ids), -1, dtype=np.int64)
        valid = None
        if self.integer:
            integers = _canonical_integers(ids)
            if integers is None:  # ids that are not canonical integers cannot be among the keys
                valid = pc.fill_null(pc.match_substring_regex(ids, _CANONICAL_INTEGER), False)
                integers = _canonical_integers(pc.if_else(valid, ids, "0"))
            queries = integers.to_numpy()
        else:
            queries = np.array(ids.to_pylist(), dtype=object)
        positions = np.searchsorted(self._keys, queries).clip(max=len(self._keys) - 1)
        rows = np.where(self._keys[positions] == queries, self._rows[positions], -1)
        if valid is not None:
            rows[~valid.to_numpy(zero_copy_only=False)] = -1
        return rows

    @property
    def nbytes(self) -> int:
        return self._keys.nbytes + self._rows.nbytes


class TextStore:
    """Texts by id: the queries or the collection an id form refers to.

    Args:
        texts (`datasets.Dataset`): rows of [`TEXTS_FEATURES`] (`id`, `text`), memory-mapped when it comes
            from a file; see the `from_*` constructors for other inputs.
        kind (`str`): `"queries"` or `"collection"`, for messages.
        source (`str`): the file or dataset the texts come from, for messages.
    """

    def __init__(self, texts: Dataset, kind: str, source: str):
        self.kind, self.source = kind, source
        self._dataset = texts
        self._texts = texts.data.column("text")
        self._chunk_starts = np.cumsum([0] + [len(chunk) for chunk in self._texts.chunks[:-1]], dtype=np.int64)
        self._index = _IdIndex(_as_string_ids(texts.data.column("id")))

    def __len__(self) -> int:
        return len(self._texts)

    def __repr__(self) -> str:
        return f"TextStore({self.kind}, {len(self):,} texts from {self.source})"

    @property
    def index_bytes(self) -> int:
        """Memory of the id index (the texts themselves stay memory-mapped)."""
        return self._index.nbytes

    # ---- constructors ------------------------------------------------------------------------------------------

    @classmethod
    def from_mapping(cls, texts: Mapping[str, str], kind: str = "collection", name: str = "the mapping") -> TextStore:
        dataset = Dataset.from_dict({"id": list(texts), "text": list(texts.values())}, features=TEXTS_FEATURES)
        return cls(dataset, kind, name)

    @classmethod
    def from_dataset(cls, dataset: Dataset, kind: str, name: str) -> TextStore:
        """From any dataset with an id and a text column (see [`texts_columns`]); other columns are dropped."""
        id_column, text_column = texts_columns(dataset.column_names, name)
        dataset = dataset.select_columns([id_column, text_column])
        if (id_column, text_column) != ("id", "text"):
            dataset = dataset.rename_columns({id_column: "id", text_column: "text"})
        return cls(dataset, kind, name)

    @classmethod
    def from_parquet(
        cls, files: str | os.PathLike | Sequence[str | os.PathLike], kind: str, cache_dir: str | None = None
    ) -> TextStore:
        files = [str(files)] if isinstance(files, (str, os.PathLike)) else [str(f) for f in files]
        dataset = Dataset.from_parquet(files, cache_dir=cache_dir)
        return cls.from_dataset(dataset, kind, files[0] if len(files) == 1 else f"{files[0]} (+{len(files) - 1})")

    @classmethod
    def from_tsv(cls, path: str | os.PathLike, kind: str, cache_dir: str | os.PathLike | None = None) -> TextStore:
        """From an MS MARCO `id<TAB>text` file, converted once into an Arrow file of the cache and memory-mapped."""
        arrow_path = _tsv_to_arrow(Path(path), kind, cache_dir)
        return cls(Dataset.from_file(str(arrow_path)), kind, str(path))

    @classmethod
    def open(cls, source, kind: str, cache_dir: str | None = None) -> TextStore:
        """From a `TextStore`, a mapping, a dataset, a TSV file, a Parquet file or a folder of Parquet files."""
        if isinstance(source, TextStore):
            return source
        if isinstance(source, Mapping):
            return cls.from_mapping(source, kind)
        if isinstance(source, Dataset):
            return cls.from_dataset(source, kind, f"the {kind} dataset")
        path = Path(source)
        if path.is_dir():
            files = sorted(path.rglob("*.parquet"))
            if not files:
                raise FileNotFoundError(f"{kind}: {path} holds no Parquet files")
            return cls.from_parquet(files, kind, cache_dir)
        if not path.is_file():
            raise FileNotFoundError(f"{kind}: {path} does not exist")
        if path.suffix.lower() == ".parquet":
            return cls.from_parquet(path, kind, cache_dir)
        return cls.from_tsv(path, kind, cache_dir)

    # ---- lookups -----------------------------------------------------------------------------------------------

    def rows(self, ids: pa.Array | Sequence) -> np.ndarray:
        """The row of each id in the store, `-1` for ids it does not hold."""
        return self._index.rows(_as_string_ids(ids))

    def texts_at(self, rows: np.ndarray) -> list[str]:
        """Texts by row, read chunk by chunk (`ChunkedArray.take` would first concatenate every chunk)."""
        rows = np.asarray(rows, dtype=np.int64)
        chunks = np.searchsorted(self._chunk_starts, rows, side="right") - 1
        texts: list = [None] * len(rows)
        for chunk in np.unique(chunks):
            selected = np.flatnonzero(chunks == chunk)
            offsets = pa.array(rows[selected] - self._chunk_starts[chunk], pa.int64())
            for position, text in zip(selected, self._texts.chunk(int(chunk)).take(offsets).to_pylist()):
                texts[position] = text
        return texts

    def lookup(self, ids: pa.Array | Sequence, where: Iterable[str] | None = None) -> list[str]:
        """The texts of `ids`, in order.

        Args:
            ids: the ids (strings, or integers matched by their decimal form).
            where (*optional*): per id, where it was read (file and row), named by the error.

        Raises:
            MissingIdError: naming the first id the store does not hold (and where it was read).
        """
        rows = self.rows(ids)
        missing = np.flatnonzero(rows < 0)
        if len(missing):
            first = int(missing[0])
            item_id = _as_string_ids(ids)[first].as_py()
            location = list(where)[first] if where is not None else None
            raise MissingIdError(item_id, self.kind, self.source, location)
        return self.texts_at(rows)


class MissingIdRows:
    """Training rows dropped because an id has no text, written to a side TSV file as they are found:
    `source<TAB>row<TAB>column<TAB>id<TAB>reason`; `count` says how many.

    Args:
        path (`str` or `os.PathLike`, *optional*): the side file (created on the first dropped row); `None`
            counts without writing.
    """

    def __init__(self, path: str | os.PathLike | None):
        self.path = Path(path) if path is not None else None
        self.count = 0
        self._rows: set[tuple[str, int]] = set()

    def add(self, source: str, row: int, column: str, item_id: str, store: TextStore) -> None:
        first_of_row = (source, row) not in self._rows
        self._rows.add((source, row))
        self.count += first_of_row
        if self.path is None:  # counted only (e.g. by the processes other than the main one)
            return
        new_file = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as side:
            if new_file:
                side.write("source\trow\tcolumn\tid\treason\n")
            side.write(f"{source}\t{row}\t{column}\t{item_id}\tnot in the {store.kind} ({store.source})\n")


def check_ids(
    dataset: Dataset,
    queries: TextStore,
    collection: TextStore,
    source: str,
    rejected: MissingIdRows | None = None,
    batch_rows: int = 1 << 20,
) -> Dataset:
    """Checks every id of a map-style id form against the texts before training, vectorised, at constant memory.

    Args:
        dataset (`Dataset`): id-form rows (not yet joined).
        queries ([`TextStore`]), collection ([`TextStore`]): the texts.
        source (`str`): the rows' file or dataset, named by the error.
        rejected ([`MissingIdRows`], *optional*): record rows with a missing id there and leave them out,
            instead of raising.
        batch_rows (`int`, *optional*): rows checked at a time.

    Returns:
        `dataset`, or without the rejected rows.

    Raises:
        MissingIdError: naming the id, the texts, and `source` with the (0-based) row of its first use.
    """
    stores = {"queries": queries, "collection": collection}
    id_columns = [c for c in dataset.column_names if c in ID_TO_TEXT_COLUMN]
    bad_rows: list[np.ndarray] = []
    offset = 0
    for batch in dataset.data.table.select(id_columns).to_batches(max_chunksize=batch_rows):
        for column in id_columns:
            store = stores[ID_TO_TEXT_COLUMN[column][1]]
            values = batch.column(column)
            if pa.types.is_list(values.type) or pa.types.is_large_list(values.type):
                owner = pc.list_parent_indices(values).to_numpy()
                values = pc.list_flatten(values)
            else:
                owner = np.arange(len(values))
            missing = np.flatnonzero(store.rows(values) < 0)
            if not len(missing):
                continue
            if rejected is None:
                first = int(missing[0])
                row = offset + int(owner[first])
                raise MissingIdError(str(values[first].as_py()), store.kind, store.source, f"{source}, row {row}")
            for position in missing:
                rejected.add(source, offset + int(owner[position]), column, str(values[int(position)].as_py()), store)
            bad_rows.append(offset + owner[missing])
        offset += batch.num_rows
    if not bad_rows:
        return dataset
    keep = np.setdiff1d(np.arange(len(dataset)), np.concatenate(bad_rows), assume_unique=False)
    return dataset.select(keep)


def _tsv_cache_path(path: Path, cache_dir: str | os.PathLike | None) -> Path:
    import datasets.config

    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    folder = Path(cache_dir) if cache_dir is not None else Path(datasets.config.HF_DATASETS_CACHE) / "hf_kd_texts"
    return folder / f"{path.stem}-{key}.arrow"


def _tsv_to_arrow(path: Path, kind: str, cache_dir: str | os.PathLike | None) -> Path:
    """Streams `id<TAB>text` lines into an Arrow file of the cache (once per file version), at constant memory."""
    target = _tsv_cache_path(path, cache_dir)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = str(create_temp_file(target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    line_offset = 0
    try:
        reader = pa_csv.open_csv(
            path,
            read_options=pa_csv.ReadOptions(column_names=["id", "text"], block_size=_TSV_BLOCK_BYTES),
            parse_options=pa_csv.ParseOptions(delimiter="\t", quote_char=False, double_quote=False),
            convert_options=pa_csv.ConvertOptions(column_types={"id": pa.string(), "text": pa.string()}),
        )
        with ArrowWriter(features=TEXTS_FEATURES, path=tmp) as writer:
            for batch in reader:
                line_offset += batch.num_rows
                writer.write_table(pa.Table.from_batches([batch]))
            writer.finalize()
        os.replace(tmp, target)
    except pa.ArrowInvalid as error:
        Path(tmp).unlink(missing_ok=True)
        raise DataFormatError(
            path, None, f"expected 2 tab-separated columns '{kind} id<TAB>text' on every line ({error})"
        ) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
