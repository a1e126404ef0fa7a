"""File helpers for the whole package.

Atomic writes: write a temporary file in the target's folder, then `os.replace` it, so a crash never leaves a
half-written file under the final name. (`hf_kd/models` keeps its own small copy, because that folder travels alone
inside checkpoints.) [`atomic_folder`] does the same for a whole output folder. Their temporary files and folders
([`create_temp_file`], [`create_temp_folder`]) are created with the modes a plain `open()` / `mkdir` asks for, 0o666
and 0o777, so the user's umask (or a folder's default ACL) decides what the finished files get, as for any other
file the jobs write; `tempfile`'s private 0o600 / 0o700 would survive the rename. Readers of text files call
[`skip_bom`] so that a UTF-8 byte order mark is not read as data. [`naming_weight_files`] turns a truncated or corrupt
`.safetensors` file into a one-line error that names it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import traceback
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

__all__ = [
    "UTF8_BOM",
    "WeightFileError",
    "atomic_folder",
    "atomic_path",
    "create_temp_file",
    "create_temp_folder",
    "naming_weight_files",
    "read_json_file",
    "remove_staging_leftovers",
    "skip_bom",
    "unreadable_weights_message",
    "write_json_atomic",
    "write_text_atomic",
]

UTF8_BOM = b"\xef\xbb\xbf"

_TEMP_NAME_TRIES = 10_000  # as many as `tempfile` tries
_TEMP_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)


def _create_unique(folder: str | os.PathLike, prefix: str, suffix: str, create) -> Path:
    """`create(path)` for a new random name `folder/PREFIX<random>SUFFIX`, retried while the name is taken."""
    for _ in range(_TEMP_NAME_TRIES):
        path = Path(folder) / f"{prefix}{secrets.token_hex(6)}{suffix}"
        try:
            create(path)
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"no free temporary name {prefix}*{suffix} in {folder}")


def create_temp_file(folder: str | os.PathLike, prefix: str = ".", suffix: str = ".tmp") -> Path:
    """Creates a new empty file `folder/PREFIX<random>SUFFIX` and returns its path.

    Unlike `tempfile.mkstemp` (always 0o600), the file gets the mode a plain `open(path, "w")` gives: 0o666 less the
    umask (e.g. 0o644 under umask 022), so that a file renamed from it into place is as readable as any other output.
    """
    return _create_unique(folder, prefix, suffix, lambda path: os.close(os.open(path, _TEMP_FILE_FLAGS, 0o666)))


def create_temp_folder(folder: str | os.PathLike, prefix: str = ".") -> Path:
    """Creates a new empty folder `folder/PREFIX<random>` and returns its path.

    Unlike `tempfile.mkdtemp` (always 0o700), the folder gets the mode a plain `mkdir` gives: 0o777 less the umask
    (e.g. 0o755 under umask 022), so that a staging folder renamed into place is as open as any other output folder.
    """
    return _create_unique(folder, prefix, "", lambda path: os.mkdir(path, 0o777))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside `path`; when the block succeeds it replaces `path`, otherwise it is removed.

    The temporary file exists (empty) when the block starts, with the mode a plain `open()` gives under the current
    umask; writers that open it for writing keep that mode, and `path` ends with it.
    """
    path = Path(path)
    tmp_name = create_temp_file(path.parent, prefix=f".{path.name}.", suffix=".tmp")
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
    otherwise it is removed. The staging folder has the mode a plain `mkdir` gives under the current umask.

    An existing `path` is renamed aside before the staging folder takes its name and is removed afterwards, so
    `path` is at every moment either the previous folder, absent for the instant between two renames, or the
    complete new one; a crash leaves at most hidden `.NAME.tmp-*` / `.NAME.old-*` folders (see
    [`remove_staging_leftovers`]), never a half-written `path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging_prefix, old_prefix = _staging_prefixes(path)
    tmp = create_temp_folder(path.parent, prefix=staging_prefix)
    try:
        yield tmp
        old = None
        if path.is_dir():
            old = create_temp_folder(path.parent, prefix=old_prefix)
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
