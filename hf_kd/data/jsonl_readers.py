"""Reader of N-way teacher scores in JSON Lines: the `nway-jsonl` format."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator

import pyarrow as pa

from ..files import skip_bom
from .reader_base import _FLOAT32_MAX, ColumnKind, ScoreReader, _BadRow
from .schemas import NWAY_ID_FEATURES

__all__ = ["NwayJsonlReader"]


class NwayJsonlReader(ScoreReader):
    """N-way teacher scores, one JSON value per line, in either common shape:

    - `{"query_id": "q1", "document_ids": ["p1", "p2", ...], "scores": [12.1, 3.4, ...]}`
    - `["q1", ["p1", 12.1], ["p2", 3.4], ...]`

    The first passage of a line is the positive. Ids may be strings or integers; they are stored as strings.
    """

    format = "nway-jsonl"
    features = NWAY_ID_FEATURES
    expected = (
        'expected {"query_id": ..., "document_ids": [...], "scores": [...]} or [qid, [pid, score], ...] '
        "with at least 2 passages"
    )

    def __init__(self, path: str | os.PathLike, *, batch_rows: int = 16_384, **kwargs):
        super().__init__(path, **kwargs)
        self.batch_rows = batch_rows

    def _batches(self) -> Iterator[pa.RecordBatch]:
        rows: dict[str, list] = {"query_id": [], "passage_ids": [], "scores": []}
        with open(self.path, "rb") as f:
            skip_bom(f)
            for line_number, raw in enumerate(f, start=1):
                self.lines_read += 1
                terminated = raw.endswith(b"\n")
                raw = raw.rstrip(b"\n").rstrip(b"\r")
                try:
                    qid, pids, scores = self._parse_line(raw, terminated)
                except _BadRow as bad:
                    self._reject(line_number, bad, raw)
                    continue
                rows["query_id"].append(qid)
                rows["passage_ids"].append(pids)
                rows["scores"].append(scores)
                if len(rows["query_id"]) >= self.batch_rows:
                    yield pa.RecordBatch.from_pydict(rows, schema=self.schema)
                    rows = {name: [] for name in rows}
        if rows["query_id"]:
            yield pa.RecordBatch.from_pydict(rows, schema=self.schema)

    def _id(self, value, kind: ColumnKind, name: str) -> str:
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise _BadRow("bad-value", f"expected a string or integer {name}, got {value!r}")
        return self._check_id(str(value), kind, name)

    def _parse_line(self, raw: bytes, terminated: bool) -> tuple[str, list[str], list[float]]:
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise _BadRow(
                "bad-encoding", f"expected UTF-8 text, got invalid byte {raw[e.start : e.start + 1]!r}"
            ) from None
        if not line.strip():
            raise _BadRow("empty-line", f"{self.expected}, got an empty line")
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            if not terminated:
                raise _BadRow(
                    "truncated-line",
                    f"truncated last line: {self.expected}, got incomplete JSON and no newline at end of file",
                ) from None
            raise _BadRow("bad-json", f"{self.expected}, got invalid JSON ({e.msg} at column {e.colno})") from None
        if isinstance(record, dict):
            missing = [k for k in ("query_id", "document_ids", "scores") if k not in record]
            if missing:
                raise _BadRow("bad-value", f"{self.expected}, missing keys {missing}")
            qid, pids, scores = record["query_id"], record["document_ids"], record["scores"]
            if not isinstance(pids, list) or not isinstance(scores, list) or len(pids) != len(scores):
                raise _BadRow("bad-value", f"{self.expected}: document_ids and scores must be lists of equal length")
        elif isinstance(record, list) and record:
            qid, pairs = record[0], record[1:]
            if not all(isinstance(p, list) and len(p) == 2 for p in pairs):
                raise _BadRow("bad-value", f"{self.expected}: every item after the query id must be [pid, score]")
            pids, scores = [p[0] for p in pairs], [p[1] for p in pairs]
        else:
            raise _BadRow("bad-value", f"{self.expected}, got a JSON {type(record).__name__}")
        if len(pids) < 2:
            raise _BadRow("bad-value", f"{self.expected}, got {len(pids)} passages")
        qid = self._id(qid, "query_id", "query id")
        pids = [self._id(p, "passage_id", "passage id") for p in pids]
        if len(set(pids)) != len(pids):
            raise _BadRow("duplicate-id", "expected distinct passage ids, got a passage listed twice")
        for score in scores:
            if isinstance(score, bool) or not isinstance(score, (int, float)):
                raise _BadRow("non-numeric-score", f"expected numeric scores, got {score!r}")
            if not math.isfinite(score) or abs(score) > _FLOAT32_MAX:
                raise _BadRow("non-finite-score", f"expected finite float32 scores, got {score!r}")
        return qid, pids, [float(s) for s in scores]
