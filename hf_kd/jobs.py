"""What makes a long job safe to kill and rerun: a lock on its output, and fingerprints of what it computes.

- [`output_lock`]: one job at a time per output folder. The lock is an OS file lock on `OUT.lock` (released by the
  kernel when its holder dies, so a stale lock of a dead process is simply taken over), with the holder's pid, host,
  command and start time in `OUT.lock.json`, so that a second job fails with one line naming the holder.
- [`file_fingerprint`], [`hash_files`]: identities of input files and of model weights, recorded in a job's
  manifest; [`fingerprint_changes`] says, in words, what differs between a recorded manifest and the current one,
  so that a resume never mixes the work of two different inputs.
- [`open_work_folder`]: the work folder of a resumable job (`OUT.partial/` with its `manifest.json`), resumed only
  when the recorded manifest equals the current one.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import logging
import os
import shutil
import socket
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from .files import create_temp_folder, write_json_atomic

__all__ = [
    "MANIFEST_FILENAME",
    "MODEL_FILE_SUFFIXES",
    "JobLockedError",
    "file_fingerprint",
    "fingerprint_changes",
    "hash_files",
    "model_files_fingerprint",
    "open_work_folder",
    "output_lock",
    "sha256_file",
]

MANIFEST_FILENAME = "manifest.json"
MODEL_FILE_SUFFIXES = (".safetensors", ".bin", ".json", ".txt", ".model", ".py")
"""The files whose contents decide what a local model computes: weights, configs, tokenizer, remote code."""
_MODEL_RECORD_FILES = ("hf_kd_evaluations.json",)  # written into a model folder by `hf-kd evaluate`

logger = logging.getLogger(__name__)


class JobLockedError(RuntimeError):
    """Another job holds the lock of an output folder."""


def _lock_paths(out: Path) -> tuple[Path, Path]:
    return out.with_name(f"{out.name}.lock"), out.with_name(f"{out.name}.lock.json")


def _holder_text(holder_path: Path) -> str:
    try:
        holder = json.loads(holder_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "another process (no holder recorded yet)"
    return f"pid {holder.get('pid')} on {holder.get('host')} ({holder.get('command')!r}, since {holder.get('since')})"


@contextlib.contextmanager
def output_lock(out: str | os.PathLike) -> Iterator[None]:
    """Holds the lock of the output folder `out` for the duration of the block.

    Raises:
        JobLockedError: another live process holds it; the message names its pid, host, command and start time.
    """
    out = Path(out)
    lock_path, holder_path = _lock_paths(out)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(lock_path, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise JobLockedError(
            f"{out} is being written by {_holder_text(holder_path)}; wait for that job to end or stop it "
            f"(the lock is {lock_path})"
        ) from None
    try:
        write_json_atomic(
            holder_path,
            {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "",
                "since": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            },
        )
        yield
    finally:
        holder_path.unlink(missing_ok=True)
        lock.release()


def sha256_file(path: str | os.PathLike, limit: int | None = None) -> str:
    """SHA-256 of a file's bytes (of its first `limit` bytes when given)."""
    digest = hashlib.sha256()
    remaining = limit
    with open(path, "rb") as f:
        while remaining is None or remaining > 0:
            chunk = f.read(1 << 22 if remaining is None else min(1 << 22, remaining))
            if not chunk:
                break
            digest.update(chunk)
            if remaining is not None:
                remaining -= len(chunk)
    return digest.hexdigest()


def file_fingerprint(path: str | os.PathLike) -> dict:
    """The identity of an input file: its resolved path, size and the SHA-256 of its content. A file changed in
    place (or replaced by another one) gets another fingerprint; the same bytes copied to another machine, or
    touched, keep theirs (a modification time would not survive a copy)."""
    path = Path(path).resolve()
    stat = path.stat()
    return {"path": str(path), "size": stat.st_size, "sha256": _content_sha256(path, stat)}


def _content_sha256(path: Path, stat: os.stat_result) -> str:
    # a job fingerprints its inputs more than once (start, resume checks); hash each file once per process
    key = (str(path), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    if key not in _CONTENT_HASHES:
        _CONTENT_HASHES[key] = sha256_file(path)
    return _CONTENT_HASHES[key]


_CONTENT_HASHES: dict[tuple, str] = {}


def hash_files(folder: str | os.PathLike, suffixes: Iterable[str], exclude: Iterable[str] = ()) -> str:
    """One SHA-256 over the names and full contents of the files under `folder` whose name ends with one of
    `suffixes` (sorted by relative path; hidden files and folders, and the relative paths in `exclude`, are
    skipped)."""
    folder = Path(folder)
    suffixes = tuple(suffixes)
    exclude = set(exclude)
    digest = hashlib.sha256()
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.name.endswith(suffixes)
        and p.relative_to(folder).as_posix() not in exclude
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    for path in files:
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        digest.update(bytes.fromhex(sha256_file(path)))
    return digest.hexdigest()


def model_files_fingerprint(folder: str | os.PathLike) -> str:
    """`sha256:<hex>`: the identity of what the local model in `folder` computes, one SHA-256 over its weight,
    config, tokenizer and code files ([`MODEL_FILE_SUFFIXES`]); the record of its evaluations is left out, so that
    evaluating a model does not change its fingerprint."""
    return "sha256:" + hash_files(folder, MODEL_FILE_SUFFIXES, exclude=_MODEL_RECORD_FILES)


def _flatten(value, prefix: str = "") -> dict[str, object]:
    if isinstance(value, dict):
        items = {}
        for key, item in value.items():
            items.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return items
    if isinstance(value, list):
        items = {}
        for index, item in enumerate(value):
            items.update(_flatten(item, f"{prefix}[{index}]"))
        return items or {prefix: []}
    return {prefix: value}


def _short(value) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
    return text if len(text) <= 24 else text[:12] + "…" + text[-8:]


def fingerprint_changes(recorded: dict, current: dict) -> list[str]:
    """What differs between two manifests, one `key: old -> new` entry per changed value (nested keys dotted).

    Example:
        ```python
        >>> fingerprint_changes({"shard_size": 10, "teachers": [{"weights": "aa"}]},
        ...                     {"shard_size": 10, "teachers": [{"weights": "bb"}]})
        ['teachers[0].weights: aa -> bb']
        ```
    """
    old, new = _flatten(recorded), _flatten(current)
    missing = object()
    return [
        f"{key}: {'(none)' if old.get(key, missing) is missing else _short(old[key])} -> "
        f"{'(none)' if new.get(key, missing) is missing else _short(new[key])}"
        for key in sorted(set(old) | set(new))
        if old.get(key, missing) != new.get(key, missing)
    ]


def open_work_folder(work: Path, manifest: dict, overwrite: bool, job: str, inputs: str) -> bool:
    """Creates the work folder `work` with its manifest, or checks that the unfinished job in it computes the same
    thing; returns whether it resumes one.

    A folder without a manifest (left by an older version, or tampered with) is removed, never resumed from; a
    folder of other work fails the call with what changed, or is removed with `overwrite`.

    Args:
        work (`Path`): the work folder, conventionally `OUT.partial`.
        manifest (`dict`): the fingerprint of the work (JSON-serialisable).
        overwrite (`bool`): remove a work folder of other work instead of failing.
        job (`str`): what the job is, for the message (`"scoring run"`).
        inputs (`str`): what must be the same to resume, for the message (`"triples, teachers and options"`).

    Raises:
        ValueError: `work` holds other work and `overwrite` is not set; the message lists what changed.
    """
    manifest_path = work / MANIFEST_FILENAME
    if work.exists() and not manifest_path.is_file():
        logger.warning("%s has no %s: its work cannot be trusted; starting over", work, MANIFEST_FILENAME)
        shutil.rmtree(work)
    elif work.exists():
        changes = fingerprint_changes(json.loads(manifest_path.read_text(encoding="utf-8")), manifest)
        if not changes:
            return True
        if not overwrite:
            raise ValueError(
                f"{work} holds an unfinished {job} of other work ({'; '.join(changes)}); rerun with the same "
                f"{inputs} to resume it, or pass overwrite=True (--overwrite) to start over"
            )
        shutil.rmtree(work)
    tmp = create_temp_folder(work.parent, prefix=f".{work.name}.tmp-")
    write_json_atomic(tmp / MANIFEST_FILENAME, manifest)
    os.replace(tmp, work)  # the work folder never exists without its manifest
    return False


def record_timings(out: Path, stage_seconds: dict[str, float], wall_time_s: float) -> dict[str, Any]:
    """The time a job folder's results cost (`hf-kd reproduce`, `hf-kd adapt`): each finished run of the command
    into it (`invocations`, oldest first:
    a run that adds evaluation sets to a finished folder is one more), and their sums per stage and in all."""
    previous: list[dict[str, Any]] = []
    path = out / "results.json"
    if path.is_file():
        earlier = json.loads(path.read_text(encoding="utf-8"))
        previous = earlier.get("invocations") or [
            {"stage_seconds": earlier["stage_seconds"], "wall_time_s": earlier["wall_time_s"]}
        ]
    invocations = [*previous, {"stage_seconds": stage_seconds, "wall_time_s": wall_time_s}]
    totals: dict[str, float] = {}
    for invocation in invocations:
        for name, seconds in invocation["stage_seconds"].items():
            totals[name] = round(totals.get(name, 0.0) + seconds, 2)
    return {
        "stage_seconds": totals,
        "wall_time_s": round(sum(i["wall_time_s"] for i in invocations), 2),
        "invocations": invocations,
    }


def parse_overrides(items: Iterable[str] | None) -> dict[str, Any]:
    """A job's `--set KEY=VALUE` options as budget overrides, each value read as YAML (`steps=200`,
    `"seeds=[1,2,3]"`, `bf16=false`)."""
    import yaml

    overrides = {}
    for item in items or []:
        key, separator, value = item.partition("=")
        if not separator or not key.strip():
            raise ValueError(f"--set {item!r}: expected KEY=VALUE")
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides
