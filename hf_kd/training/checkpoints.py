"""Crash-safe checkpoints: a checkpoint counts only once it is complete.

`transformers.Trainer` writes `checkpoint-<step>/` file by file. After the last file (model, optimizer, scheduler,
RNG states, trainer state) is written by every process, `CheckpointCommitCallback` flushes the files to disk and
writes a marker file, itself atomically (temporary file in the same folder, then `os.replace`). A run killed while
saving leaves a folder without the marker; resuming only ever picks folders with it.

Old checkpoints are deleted only after the new one is complete (the callback does the `save_total_limit` rotation,
which `Trainer` would do before the marker exists), so a crash never leaves a run without a complete checkpoint.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from accelerate import PartialState
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..files import write_json_atomic

__all__ = [
    "COMPLETE_MARKER",
    "RUN_FINGERPRINT",
    "CheckpointCommitCallback",
    "complete_checkpoints",
    "delete_checkpoints",
    "is_complete_checkpoint",
    "last_complete_checkpoint",
    "resolve_resume_checkpoint",
    "rotate_checkpoints",
]

COMPLETE_MARKER = "checkpoint_complete.json"
RUN_FINGERPRINT = "run_fingerprint.json"
"""The config and data fingerprint of the run whose checkpoints `output_dir` holds (see `hf_kd.training.run`)."""
_CHECKPOINT_PATTERN = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())


def mark_checkpoint_complete(checkpoint: str | os.PathLike, global_step: int) -> None:
    """Flushes every file of `checkpoint` to disk, then writes its completion marker atomically."""
    checkpoint = Path(checkpoint)
    _fsync_tree(checkpoint)
    write_json_atomic(checkpoint / COMPLETE_MARKER, {"global_step": global_step})


def is_complete_checkpoint(checkpoint: str | os.PathLike) -> bool:
    return (Path(checkpoint) / COMPLETE_MARKER).is_file()


def complete_checkpoints(output_dir: str | os.PathLike) -> list[tuple[int, str]]:
    """(step, folder) of every complete `checkpoint-<step>` of `output_dir`, by step."""
    return [(step, str(path)) for step, path in _checkpoints(Path(output_dir)) if is_complete_checkpoint(path)]


def last_complete_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The complete `checkpoint-<step>` folder of `output_dir` with the highest step, or None."""
    complete = complete_checkpoints(output_dir)
    return complete[-1][1] if complete else None


def resolve_resume_checkpoint(resume_from_checkpoint: str | bool | None, output_dir: str) -> str | None:
    """Turns a `resume_from_checkpoint` value into a complete checkpoint folder (or None: start from scratch).

    Args:
        resume_from_checkpoint: None/False/"false": start from scratch. True/"true": the last complete checkpoint of
            `output_dir` (an error if there is none). "auto": the last complete checkpoint if there is one, else
            start from scratch. A path: that checkpoint, which must be complete.
        output_dir: the run's output folder.

    Raises:
        ValueError: no complete checkpoint where one is required, or the named checkpoint is incomplete.
    """
    value = resume_from_checkpoint
    if isinstance(value, str) and value.lower() in ("true", "false", "auto", "none", ""):
        value = {"true": True, "false": None, "none": None, "": None, "auto": "auto"}[value.lower()]
    if value is None or value is False:
        return None
    if value is True or value == "auto":
        checkpoint = last_complete_checkpoint(output_dir)
        if checkpoint is None and value is True:
            raise ValueError(f"resume_from_checkpoint: no complete checkpoint in {output_dir}")
        return checkpoint
    if not os.path.isdir(value):
        raise ValueError(f"resume_from_checkpoint: {value} is not a folder")
    if not is_complete_checkpoint(value):
        last = last_complete_checkpoint(Path(value).parent)
        raise ValueError(
            f"resume_from_checkpoint: {value} is incomplete (no {COMPLETE_MARKER}; the run stopped while saving it)"
            + (f"; the last complete checkpoint is {last}" if last else "")
        )
    return str(value)


def delete_checkpoints(output_dir: str | os.PathLike) -> None:
    """Removes every `checkpoint-<step>` folder of `output_dir` and its run fingerprint: the run starts over."""
    for _, path in _checkpoints(Path(output_dir)):
        shutil.rmtree(path)
    (Path(output_dir) / RUN_FINGERPRINT).unlink(missing_ok=True)


def _checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    found = []
    for child in output_dir.iterdir() if output_dir.is_dir() else []:
        match = _CHECKPOINT_PATTERN.match(child.name)
        if match and child.is_dir():
            found.append((int(match.group(1)), child))
    return sorted(found)


def rotate_checkpoints(
    output_dir: str | os.PathLike, save_total_limit: int | None, best_checkpoint: str | None, current_step: int
) -> list[str]:
    """Deletes complete checkpoints beyond the newest `save_total_limit` (never the best one), and incomplete
    leftovers of earlier crashes older than `current_step`. Returns the deleted folders.

    A checkpoint's marker is removed before its files, so a deletion cut short never looks complete.
    """
    output_dir = Path(output_dir)
    best = Path(best_checkpoint).resolve() if best_checkpoint else None
    checkpoints = _checkpoints(output_dir)
    complete = [path for _, path in checkpoints if is_complete_checkpoint(path)]
    doomed = [path for step, path in checkpoints if step < current_step and not is_complete_checkpoint(path)]
    if save_total_limit is not None and save_total_limit > 0:
        doomed += [path for path in complete[:-save_total_limit] if path.resolve() != best]
    for path in doomed:
        (path / COMPLETE_MARKER).unlink(missing_ok=True)
        shutil.rmtree(path, ignore_errors=True)
    return [str(path) for path in doomed]


class CheckpointCommitCallback(TrainerCallback):
    """Marks each checkpoint complete once every process has written it, then rotates old checkpoints.

    Args:
        save_total_limit (`int`, *optional*): complete checkpoints to keep besides the best one (None keeps all).
    """

    def __init__(self, save_total_limit: int | None = None):
        self.save_total_limit = save_total_limit

    def on_save(self, args, state, control, **kwargs):
        checkpoint = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        # every process writes its own RNG state into the checkpoint: wait for all of them
        PartialState().wait_for_everyone()
        if args.should_save and checkpoint.is_dir():
            mark_checkpoint_complete(checkpoint, state.global_step)
            rotate_checkpoints(args.output_dir, self.save_total_limit, state.best_model_checkpoint, state.global_step)
        PartialState().wait_for_everyone()
        return control
