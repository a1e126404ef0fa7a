"""Readers and writers of the standard IR files: MS MARCO TSV, TREC qrels and runs, BEIR folders.

This is the one place that parses these files. All ids are `str`. Every malformed line raises
[`DataFormatError`] naming the file, the 1-based line number and what was expected; duplicate ids and
empty texts are errors too. Text is read as strict UTF-8 and kept as it is (MS MARCO's mojibake such as
``Â°F`` included).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..files import atomic_path, skip_bom
from .errors import DataFormatError

__all__ = [
    "BeirData",
    "read_beir",
    "read_collection_tsv",
    "read_qrels",
    "read_queries_tsv",
    "read_run",
    "write_run",
]

BEIR_QRELS_HEADER = ("query-id", "corpus-id", "score")


def _iter_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """Yields `(line_number, line)` with the line ending removed, decoding each line as strict UTF-8."""
    with open(path, "rb") as f:
        skip_bom(f)
        for line_number, raw in enumerate(f, start=1):
            raw = raw.rstrip(b"\n").rstrip(b"\r")
            try:
                yield line_number, raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataFormatError(
                    path, line_number, f"expected UTF-8 text, got invalid byte {raw[e.start : e.start + 1]!r}"
                ) from None


def _read_id_text_tsv(path: str | os.PathLike, kind: str) -> dict[str, str]:
    texts: dict[str, str] = {}
    for line_number, line in _iter_lines(path):
        columns = line.split("\t")
        if len(columns) != 2:
            raise DataFormatError(
                path, line_number, f"expected 2 tab-separated columns '{kind}<TAB>text', got {len(columns)}"
            )
        item_id, text = columns
        if not item_id.strip():
            raise DataFormatError(path, line_number, f"expected a non-empty {kind}")
        if not text.strip():
            raise DataFormatError(path, line_number, f"expected a non-empty text for {kind} {item_id!r}")
        if item_id in texts:
            raise DataFormatError(path, line_number, f"duplicate {kind} {item_id!r}")
        texts[item_id] = text
    return texts


def read_queries_tsv(path: str | os.PathLike) -> dict[str, str]:
    """Reads an MS MARCO queries file, one `qid<TAB>text` per line.

    Args:
        path (`str` or `os.PathLike`): the file.

    Returns:
        `dict[str, str]`: query id -> query text, in file order.

    Raises:
        DataFormatError: on a malformed line, a duplicate id or an empty text.
    """
    return _read_id_text_tsv(path, "qid")


def read_collection_tsv(path: str | os.PathLike) -> dict[str, str]:
    """Reads an MS MARCO collection file, one `pid<TAB>text` per line.

    Args:
        path (`str` or `os.PathLike`): the file.

    Returns:
        `dict[str, str]`: passage id -> passage text, in file order.

    Raises:
        DataFormatError: on a malformed line, a duplicate id or an empty text.
    """
    return _read_id_text_tsv(path, "pid")


def _parse_grade(path: str | os.PathLike, line_number: int, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise DataFormatError(path, line_number, f"expected an integer relevance grade, got {value!r}") from None


def read_qrels(path: str | os.PathLike) -> dict[str, dict[str, int]]:
    """Reads relevance judgements in TREC or BEIR format, detected from the first line.

    - TREC: `qid 0 pid grade`, separated by spaces or tabs, no header.
    - BEIR: tab-separated `query-id corpus-id score` with that header on the first line.

    Args:
        path (`str` or `os.PathLike`): the file.

    Returns:
        `dict[str, dict[str, int]]`: query id -> {passage id -> grade}.

    Raises:
        DataFormatError: on a malformed line, a misplaced header, a non-integer grade or a pair judged twice.
    """
    qrels: dict[str, dict[str, int]] = {}
    beir = False
    for line_number, line in _iter_lines(path):
        columns = line.split()
        if tuple(columns) == BEIR_QRELS_HEADER:
            if line_number != 1:
                raise DataFormatError(
                    path, line_number, "header 'query-id corpus-id score' where a judgement was expected"
                )
            beir = True
            continue
        if beir:
            if len(columns) != 3:
                raise DataFormatError(
                    path, line_number, f"expected 3 columns 'query-id corpus-id score', got {len(columns)}"
                )
            qid, pid, grade = columns
        else:
            if len(columns) != 4:
                raise DataFormatError(
                    path,
                    line_number,
                    f"expected 4 whitespace-separated columns 'qid 0 pid grade', got {len(columns)}",
                )
            qid, _, pid, grade = columns
        judged = qrels.setdefault(qid, {})
        if pid in judged:
            raise DataFormatError(path, line_number, f"duplicate judgement for query {qid!r}, passage {pid!r}")
        judged[pid] = _parse_grade(path, line_number, grade)
    return qrels


def read_run(path: str | os.PathLike) -> dict[str, dict[str, float]]:
    """Reads a TREC run, one `qid Q0 pid rank score tag` per line (spaces or tabs).

    Args:
        path (`str` or `os.PathLike`): the file.

    Returns:
        `dict[str, dict[str, float]]`: query id -> {passage id -> score}. The rank column is checked to be
        an integer but otherwise ignored: the score orders the candidates.

    Raises:
        DataFormatError: on a malformed line, a non-numeric or non-finite score, or a passage listed twice
        for the same query.
    """
    run: dict[str, dict[str, float]] = {}
    for line_number, line in _iter_lines(path):
        columns = line.split()
        if len(columns) != 6:
            raise DataFormatError(
                path,
                line_number,
                f"expected 6 whitespace-separated columns 'qid Q0 pid rank score tag', got {len(columns)}",
            )
        qid, _, pid, rank, score, _ = columns
        try:
            int(rank)
        except ValueError:
            raise DataFormatError(path, line_number, f"expected an integer rank, got {rank!r}") from None
        try:
            value = float(score)
        except ValueError:
            raise DataFormatError(path, line_number, f"expected a numeric score, got {score!r}") from None
        if not math.isfinite(value):
            raise DataFormatError(path, line_number, f"expected a finite score, got {score!r}")
        candidates = run.setdefault(qid, {})
        if pid in candidates:
            raise DataFormatError(path, line_number, f"duplicate passage {pid!r} for query {qid!r}")
        candidates[pid] = value
    return run


def write_run(run: dict[str, dict[str, float]], path: str | os.PathLike, tag: str = "hf-kd") -> None:
    """Writes a TREC run atomically: per query, passages by descending score, ranks from 1.

    Ties are broken by passage id so that the file is deterministic.

    Args:
        run (`dict[str, dict[str, float]]`): query id -> {passage id -> score}.
        path (`str` or `os.PathLike`): the file to write (replaced atomically).
        tag (`str`, *optional*, defaults to `"hf-kd"`): the run tag of the last column.
    """
    if not tag or any(c.isspace() for c in tag):
        raise ValueError(f"tag must be a non-empty string without whitespace, got {tag!r}")
    with atomic_path(path) as tmp_path, open(tmp_path, "w", encoding="utf-8") as f:
        for qid, candidates in run.items():
            ranked = sorted(candidates.items(), key=lambda item: (-item[1], item[0]))
            f.writelines(
                f"{qid} Q0 {pid} {rank} {float(score)!r} {tag}\n" for rank, (pid, score) in enumerate(ranked, 1)
            )


@dataclass
class BeirData:
    """A BEIR dataset split.

    Attributes:
        corpus (`dict[str, str]`): document id -> text (`"title text"` when the document has a title).
        queries (`dict[str, str]`): query id -> text, only the queries judged in the split.
        qrels (`dict[str, dict[str, int]]`): query id -> {document id -> grade} for the split.
    """

    corpus: dict[str, str] = field(default_factory=dict)
    queries: dict[str, str] = field(default_factory=dict)
    qrels: dict[str, dict[str, int]] = field(default_factory=dict)


def _iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    for line_number, line in _iter_lines(path):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataFormatError(path, line_number, f"expected a JSON object, got invalid JSON ({e.msg})") from None
        if not isinstance(record, dict):
            raise DataFormatError(path, line_number, f"expected a JSON object, got {type(record).__name__}")
        yield line_number, record


def _read_beir_texts(path: Path, with_title: bool) -> dict[str, str]:
    texts: dict[str, str] = {}
    for line_number, record in _iter_jsonl(path):
        item_id, text = record.get("_id"), record.get("text")
        if not isinstance(item_id, (str, int)) or str(item_id) == "":
            raise DataFormatError(path, line_number, "expected a non-empty '_id'")
        if not isinstance(text, str):
            raise DataFormatError(path, line_number, f"expected a string 'text' for '_id' {item_id!r}")
        title = record.get("title") if with_title else None
        if isinstance(title, str) and title.strip():
            text = f"{title} {text}" if text.strip() else title
        if not text.strip():
            raise DataFormatError(path, line_number, f"expected a non-empty text for '_id' {item_id!r}")
        item_id = str(item_id)
        if item_id in texts:
            raise DataFormatError(path, line_number, f"duplicate '_id' {item_id!r}")
        texts[item_id] = text
    return texts


def read_beir(folder: str | os.PathLike, split: str = "test") -> BeirData:
    """Reads one split of a BEIR-format folder (`corpus.jsonl`, `queries.jsonl`, `qrels/<split>.tsv`).

    Like BEIR's own loader, only the queries judged in the split are kept.

    Args:
        folder (`str` or `os.PathLike`): the dataset folder.
        split (`str`, *optional*, defaults to `"test"`): the qrels file to read.

    Returns:
        [`BeirData`]: corpus, queries and qrels of the split.

    Raises:
        DataFormatError: on a malformed line, or when the qrels name a query absent from `queries.jsonl`.
    """
    folder = Path(folder)
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        available = sorted(p.stem for p in (folder / "qrels").glob("*.tsv"))
        raise FileNotFoundError(f"{qrels_path} not found; splits available in {folder}: {available}")
    qrels = read_qrels(qrels_path)
    all_queries = _read_beir_texts(folder / "queries.jsonl", with_title=False)
    missing = [qid for qid in qrels if qid not in all_queries]
    if missing:
        raise DataFormatError(
            qrels_path,
            None,
            f"{len(missing)} judged queries are missing from queries.jsonl, e.g. {missing[:5]}",
        )
    corpus = _read_beir_texts(folder / "corpus.jsonl", with_title=True)
    queries = {qid: all_queries[qid] for qid in qrels}
    return BeirData(corpus=corpus, queries=queries, qrels=qrels)
