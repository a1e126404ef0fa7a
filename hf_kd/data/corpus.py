"""A corpus to adapt to or to label: a BEIR folder (`corpus.jsonl`) or a collection TSV (`pid<TAB>text`), read into
documents that keep their title apart from their text."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import DataFormatError
from .ir_files import _iter_jsonl, read_collection_tsv

__all__ = ["Document", "corpus_texts", "read_corpus"]


@dataclass(frozen=True)
class Document:
    """One document: its title (empty where the corpus has none) and its text."""

    title: str
    text: str

    @property
    def full_text(self) -> str:
        """What rankers read: `"title text"` (as `read_beir` gives it), or the text alone."""
        if self.title.strip() and self.text.strip():
            return f"{self.title} {self.text}"
        return self.title if self.title.strip() else self.text


def corpus_file(path: str | os.PathLike) -> Path:
    """The file a corpus path names: `corpus.jsonl` inside a BEIR folder, or the file itself."""
    path = Path(path)
    if path.is_dir():
        jsonl = path / "corpus.jsonl"
        if not jsonl.is_file():
            raise FileNotFoundError(f"{path} is a folder without corpus.jsonl: expected a BEIR folder")
        return jsonl
    if not path.is_file():
        raise FileNotFoundError(f"no corpus at {path}: expected a BEIR folder or a collection TSV (pid<TAB>text)")
    return path


def read_corpus(path: str | os.PathLike) -> dict[str, Document]:
    """Reads a corpus: a BEIR folder (or its `corpus.jsonl`: `_id`, `title`, `text`) or a collection TSV.

    Raises:
        DataFormatError: on a malformed line, a duplicate id, a document with neither title nor text (named by file
            and line), or a corpus without any document.
    """
    source = corpus_file(path)
    documents: dict[str, Document] = {}
    if source.suffix == ".jsonl":
        for line_number, record in _iter_jsonl(source):
            doc_id, text, title = record.get("_id"), record.get("text"), record.get("title") or ""
            if not isinstance(doc_id, (str, int)) or str(doc_id) == "":
                raise DataFormatError(source, line_number, "expected a non-empty '_id'")
            if not isinstance(text, str) or not isinstance(title, str):
                raise DataFormatError(source, line_number, f"expected string 'title' and 'text' for '_id' {doc_id!r}")
            if not (text.strip() or title.strip()):
                raise DataFormatError(source, line_number, f"document {doc_id!r} has neither a title nor a text")
            if str(doc_id) in documents:
                raise DataFormatError(source, line_number, f"duplicate '_id' {doc_id!r}")
            documents[str(doc_id)] = Document(title=title.strip(), text=text.strip())
    else:
        documents = {pid: Document(title="", text=text.strip()) for pid, text in read_collection_tsv(source).items()}
    if not documents:
        raise DataFormatError(source, None, "the corpus holds no document")
    return documents


def corpus_texts(documents: dict[str, Document]) -> dict[str, str]:
    """Document id -> the text rankers read (see [`Document.full_text`])."""
    return {doc_id: document.full_text for doc_id, document in documents.items()}
