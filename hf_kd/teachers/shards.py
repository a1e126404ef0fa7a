"""The resumable work folder of a scoring run: its manifest, and each teacher's shards of pair scores, every shard
stamped with the work it was scored for and merged only when every shard is there and belongs to this work."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..jobs import model_files_fingerprint, open_work_folder
from .base import Teacher

_WORK_KEY, _TEACHER_KEY, _TEACHER_NAME_KEY = b"hf_kd.work", b"hf_kd.teacher", b"hf_kd.teacher_name_or_path"


def _teacher_weights(teacher: Teacher) -> str | None:
    """The identity of what a teacher computes: the SHA-256 of a run file, of a local folder's weight, config and
    tokenizer files, or the Hub commit; `None` when none is known."""
    sha256 = getattr(teacher, "sha256", None)
    if sha256:
        return f"sha256:{sha256}"
    if Path(teacher.name_or_path).is_dir():
        return model_files_fingerprint(teacher.name_or_path)
    return f"commit:{teacher.revision}" if teacher.revision else None


def _manifest(source, triples, pairs, shard_size, bf16, teachers, descriptions) -> dict:
    return {
        "source": source,
        "triples": triples.num_rows,
        "distinct_pairs": len(pairs),
        "pairs_sha256": pairs.fingerprint(),
        "shard_size": shard_size,
        "bf16": bf16,
        "teachers": [
            {
                "name_or_path": d["name_or_path"],
                "weights": _teacher_weights(teacher),
                "max_length": d.get("max_length"),
                "dtype": d.get("dtype"),
            }
            for teacher, d in zip(teachers, descriptions)
        ],
    }


def _open_work(work: Path, manifest: dict, overwrite: bool, shards: list, teacher_count: int) -> list:
    """Creates or resumes the work folder (main process); returns the shards left to score, by teacher."""
    open_work_folder(work, manifest, overwrite, "scoring run", "triples, teachers and options")
    return [(t, shard) for t in range(teacher_count) for shard in shards if not _shard_path(work, t, shard[0]).exists()]


def _work_id(manifest: dict) -> str:
    """The identity of the work a manifest describes, recorded in each of its shards."""
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode("utf-8")).hexdigest()


def _shard_stamp(work_id: str, teacher_index: int, teacher: Teacher) -> dict[bytes, bytes]:
    """What a shard records of the work and teacher it was scored for (Parquet schema metadata)."""
    return {
        _WORK_KEY: work_id.encode(),
        _TEACHER_KEY: str(teacher_index).encode(),
        _TEACHER_NAME_KEY: str(teacher.name_or_path).encode(),
    }


def _shard_path(work: Path, teacher_index: int, shard: int) -> Path:
    return work / f"teacher-{teacher_index}" / f"pairs-{shard:05d}.parquet"


def _write_shard(path: Path, start: int, scores: np.ndarray, stamp: dict[bytes, bytes]) -> None:
    table = pa.table(
        {
            "pair": pa.array(np.arange(start, start + len(scores)), pa.int64()),
            "score": pa.array(scores, pa.float32()),
        }
    ).replace_schema_metadata(stamp)
    path.parent.mkdir(exist_ok=True)  # never the work folder itself: the main process made it, with its manifest
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        pq.write_table(table, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _check_shard(path: Path, table: pa.Table, stamp: dict[bytes, bytes]) -> None:
    """Refuses a shard not written for this work and teacher (copied from another work folder, or scored by a
    process with other triples, weights or options)."""
    found = table.schema.metadata or {}
    if found.get(_WORK_KEY) == stamp[_WORK_KEY] and found.get(_TEACHER_KEY) == stamp[_TEACHER_KEY]:
        return
    if _WORK_KEY not in found:
        origin = "it records no scoring run"
    else:
        work = "this run" if found[_WORK_KEY] == stamp[_WORK_KEY] else "another scoring run"
        origin = f"it holds scores of teacher {found.get(_TEACHER_NAME_KEY, b'?').decode()!r} of {work}"
    raise ValueError(
        f"{path} is not a shard of teacher {stamp[_TEACHER_NAME_KEY].decode()!r} of this scoring run: {origin}; "
        "nothing was merged: delete the file to score that shard again"
    )


def _read_shards(
    work: Path, teacher_index: int, num_pairs: int, shard_size: int, stamp: dict[bytes, bytes]
) -> np.ndarray:
    scores = np.empty(num_pairs, dtype=np.float32)
    for shard, start in enumerate(range(0, num_pairs, shard_size)):
        path = _shard_path(work, teacher_index, shard)
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing: no process wrote that shard; nothing was merged, rerun with the same arguments "
                "to score it"
            )
        table = pq.read_table(path)
        _check_shard(path, table, stamp)
        expected = np.arange(start, min(start + shard_size, num_pairs))
        pairs = table.column("pair").to_numpy()
        if not np.array_equal(pairs, expected):
            raise ValueError(
                f"{path} holds pairs {pairs[:1].tolist()}..{pairs[-1:].tolist()} ({len(pairs)} rows), expected "
                f"{start}..{expected[-1]}; delete it to score that shard again"
            )
        scores[start : start + len(pairs)] = table.column("score").to_numpy()
    return scores


def _pairs_in(todo: list) -> int:
    return sum(stop - start for _, (_, start, stop) in todo)


def _merge_shards(work, stamps, names, num_pairs, shard_size, triple_pairs) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every teacher's (positive, negative) scores of the triples, from the shards of every process (main process)."""
    teacher_scores = {}
    for teacher_index, name in enumerate(names):
        pair_scores = _read_shards(work, teacher_index, num_pairs, shard_size, stamps[teacher_index])
        teacher_scores[name] = (pair_scores[triple_pairs[:, 0]], pair_scores[triple_pairs[:, 1]])
    return teacher_scores
