"""Where a teacher-score dataset came from, kept beside it (`hf_kd_provenance.json`) and in its metadata."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ..files import write_text_atomic

__all__ = ["PROVENANCE_FILENAME", "Provenance", "read_provenance"]

PROVENANCE_FILENAME = "hf_kd_provenance.json"


def _hf_kd_version() -> str:
    from .. import __version__

    return __version__


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Provenance:
    """The record of how a teacher-score dataset was made.

    Args:
        format (`str`): the input format, e.g. `"paper-ids"` or `"build-triples"`.
        schema (`str`): the stored schema, a key of `hf_kd.data.SCHEMAS` (e.g. `"scored_triples_ids"`).
        source_files (`list[str]`): absolute paths of the inputs (scores, queries, collection, qrels, runs).
        teachers (`list[str]`, *optional*): the teacher models whose scores the dataset holds.
        rows (`int`, *optional*): rows written.
        rejected_rows (`int`, *optional*, defaults to 0): input lines rejected in `skip_bad_rows` mode.
        created (`str`, *optional*): UTC time of creation, ISO 8601.
        hf_kd_version (`str`, *optional*): the version of hf-kd that wrote it.
        parameters (`dict`, *optional*): format-specific settings (seed, grades, negatives per positive...).
    """

    format: str
    schema: str
    source_files: list[str]
    teachers: list[str] = field(default_factory=list)
    rows: int | None = None
    rejected_rows: int = 0
    created: str = field(default_factory=_now)
    hf_kd_version: str = field(default_factory=_hf_kd_version)
    parameters: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Provenance:
        return cls(**json.loads(text))

    def save(self, folder: str | os.PathLike) -> None:
        """Writes `hf_kd_provenance.json` into `folder`, atomically."""
        write_text_atomic(Path(folder) / PROVENANCE_FILENAME, self.to_json() + "\n")


def read_provenance(folder: str | os.PathLike) -> Provenance:
    """Reads the `hf_kd_provenance.json` of a dataset folder written by hf-kd."""
    path = Path(folder) / PROVENANCE_FILENAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {folder} is not a teacher-score dataset written by hf-kd")
    return Provenance.from_json(path.read_text(encoding="utf-8"))
