"""File helpers for the whole package.

Atomic writes: write a temporary file in the target's folder, then `os.replace` it, so a crash never leaves a
half-written file under the final name. (`hf_kd/models` keeps its own small copy, because that folder travels alone
inside checkpoints.) [`atomic_folder`] does the same for a whole output folder. Readers of text files call
[`skip_bom`] so that a UTF-8 byte order mark is not read as data. [`naming_weight_files`] turns a truncated or corrupt
`.safetensors` file into a one-line error that names it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import traceback
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

__all__ = [
    "UTF8_BOM",
    "WeightFileError",
    "atomic_folder",
    "atomic_path",
    "naming_weight_files",
    "read_json_file",
    "remove_staging_leftovers",
    "skip_bom",
    "unreadable_weights_message",
    "write_json_atomic",
    "write_text_atomic",
]

UTF8_BOM = b"\xef\xbb\xbf"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside `path`; when the block succeeds it replaces `path`, otherwise it is removed."""
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp_name)
        with open(tmp_name, "rb") as written:
            os.fsync(written.fileno())  # the data is on disk before the name points at it
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def _staging_prefixes(path: Path) -> tuple[str, str]:
    return f".{path.name}.tmp-", f".{path.name}.old-"


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Yields an empty staging folder beside `path`; when the block succeeds the staging folder becomes `path`,
    otherwise it is removed.

    An existing `path` is renamed aside before the staging folder takes its name and is removed afterwards, so
    `path` is at every moment either the previous folder, absent for the instant between two renames, or the
    complete new one; a crash leaves at most hidden `.NAME.tmp-*` / `.NAME.old-*` folders (see
    [`remove_staging_leftovers`]), never a half-written `path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging_prefix, old_prefix = _staging_prefixes(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=staging_prefix))
    try:
        yield tmp
        old = None
        if path.is_dir():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=old_prefix))
            os.replace(path, old)  # onto an empty folder: allowed
        elif path.exists():
            path.unlink()
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def remove_staging_leftovers(path: str | os.PathLike) -> list[Path]:
    """Removes the staging folders that a killed [`atomic_folder`] block left beside `path`; returns them.

    Call it only while holding the output lock of `path` (`hf_kd.jobs.output_lock`), so that no live job's staging
    folder is taken for a leftover.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    prefixes = _staging_prefixes(path)
    leftovers = [p for p in path.parent.iterdir() if p.is_dir() and p.name.startswith(prefixes)]
    for leftover in leftovers:
        shutil.rmtree(leftover, ignore_errors=True)
    return leftovers


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp_path:
        tmp_path.write_text(text, encoding="utf-8")


def read_json_file(path: str | os.PathLike) -> Any:
    """Parses a JSON file; a syntax error names the file, the line and the column."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}:{error.lineno}:{error.colno}: invalid JSON ({error.msg})") from error


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    """Writes `obj` as indented UTF-8 JSON, atomically."""
    write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def skip_bom(f: BinaryIO) -> bool:
    """Moves a binary file opened at its start past a UTF-8 byte order mark; returns whether there was one.

    Line numbers are unchanged: the mark belongs to line 1.
    """
    if f.read(len(UTF8_BOM)) == UTF8_BOM:
        return True
    f.seek(0)
    return False


class WeightFileError(ValueError):
    """A weight file that cannot be read: truncated or corrupt."""


def _invalid_safetensors(paths: Iterable[Path]) -> dict[Path, str]:
    """The files among `paths` that safetensors cannot open, with the reason of each."""
    from safetensors import SafetensorError, safe_open

    invalid = {}
    for path in paths:
        try:
            with safe_open(str(path), framework="np"):
                pass
        except SafetensorError as error:
            invalid[path] = str(error)
    return invalid


def _safetensors_files_in_traceback(error: BaseException) -> list[Path]:
    """The `.safetensors` files named by the local variables of the frames an error went through (the loaders keep
    the path they open in one)."""
    files = []
    for frame, _ in traceback.walk_tb(error.__traceback__):
        for value in frame.f_locals.values():
            if isinstance(value, (str, os.PathLike)) and str(value).endswith(".safetensors") and Path(value).is_file():
                files.append(Path(value))
    return files


def unreadable_weights_message(error: BaseException, name_or_path: str | os.PathLike | None = None) -> str:
    """One line naming the weight files that a safetensors error `error` came from: the `.safetensors` files of the
    local folder `name_or_path` and those the error's traceback names, each checked again."""
    folder = Path(name_or_path) if name_or_path is not None else None
    candidates = sorted(folder.rglob("*.safetensors")) if folder is not None and folder.is_dir() else []
    candidates += [p for p in _safetensors_files_in_traceback(error) if p not in candidates]
    invalid = _invalid_safetensors(candidates)
    if len(invalid) == 1:
        (path, reason), *_ = invalid.items()
        return f"{path} is not a valid safetensors file (truncated?): {reason}; copy or download it again"
    if invalid:
        names = ", ".join(str(path) for path in invalid)
        return f"{names} are not valid safetensors files (truncated?); copy or download them again"
    where = f" of {name_or_path}" if name_or_path is not None else ""
    return f"a weight file{where} is not a valid safetensors file (truncated?): {error}; copy or download it again"


@contextlib.contextmanager
def naming_weight_files(name_or_path: str | os.PathLike | None) -> Iterator[None]:
    """Turns an unreadable-weights error raised in the block (a truncated or corrupt `.safetensors` file) into a
    [`WeightFileError`] whose one-line message names the file, e.g. `m/model.safetensors is not a valid
    safetensors file (truncated?): ...`."""
    from safetensors import SafetensorError

    try:
        yield
    except SafetensorError as error:
        raise WeightFileError(unreadable_weights_message(error, name_or_path)) from error
