"""Weight averaging of fine-tuned checkpoints ("model soups", Wortsman et al. 2022): students of one architecture,
trained from the same starting point with different seeds or samplings of the teacher's pairs, averaged weight by
weight into one model that costs what one student costs.

Measured on the short reproduction's recipe (README, "Averaging students"), a soup of three students is within noise of
the three students' mean: it smooths out an unlucky sampling, but it is not by itself a gain."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer

from ..data.writers import check_output_folder
from ..files import atomic_folder
from ..jobs import model_files_fingerprint, output_lock

__all__ = ["AVERAGE_RECORD", "average_checkpoints"]

AVERAGE_RECORD = "checkpoint_average.json"
# config entries that name or date a checkpoint, not its architecture
_BOOKKEEPING = {"_name_or_path", "transformers_version", "backbone_name_or_path", "dtype", "torch_dtype"}


def _architecture(folder: Path) -> dict:
    config = AutoConfig.from_pretrained(folder).to_dict()
    return {key: value for key, value in config.items() if key not in _BOOKKEEPING}


def _check_same_architecture(folders: list[Path]) -> None:
    first = _architecture(folders[0])
    for folder in folders[1:]:
        other = _architecture(folder)
        if other.get("model_type") != first.get("model_type"):
            raise ValueError(
                f"{folder} is a {other.get('model_type')} checkpoint, {folders[0]} a {first.get('model_type')} one: "
                "only like models average"
            )
        differing = sorted(key for key in first.keys() | other.keys() if first.get(key) != other.get(key))
        if differing:
            shown = ", ".join(f"{key}: {first.get(key)!r} vs {other.get(key)!r}" for key in differing[:3])
            raise ValueError(f"{folder} is not the architecture of {folders[0]} ({shown}): only like models average")


def average_checkpoints(
    folders: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    weights: Sequence[float] | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Averages the weights of checkpoints of one architecture into a new checkpoint folder.

    `theta_out = sum_i w_i * theta_i / sum_i w_i` for every floating-point tensor; every other tensor (integer
    buffers such as position ids) must be equal in all checkpoints and is copied. The output is a complete
    checkpoint of the same kind as the first (config with `auto_map`, modeling code, tokenizer, the
    sentence-transformers or CrossEncoder files of its architecture), with `checkpoint_average.json` naming the
    averaged folders, their weights and their files' fingerprints. The folder is written whole or not at all.

    Args:
        folders (`Sequence[str | os.PathLike]`): two or more checkpoint folders with equal configs (apart from names
            and versions), e.g. students trained from one backbone with different seeds or samplings.
        out (`str | os.PathLike`): the folder to create.
        weights (`Sequence[float]`, *optional*): one non-negative weight per folder (default: uniform).
        overwrite (`bool`, *optional*, defaults to `False`): replace an existing `out`.

    Returns:
        `Path`: `out`.

    Raises:
        ValueError: fewer than two folders, weights that do not match them, or checkpoints that differ in
            architecture, tensor names or shapes (the message names the folder and what differs).
    """
    paths = [Path(folder) for folder in folders]
    if len(paths) < 2:
        raise ValueError(f"averaging needs two or more checkpoints, got {len(paths)}")
    for path in paths:
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path}: not a checkpoint folder (no config.json)")
    if weights is None:
        weights = [1.0] * len(paths)
    if len(weights) != len(paths) or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"expected {len(paths)} non-negative weights with a positive sum, got {list(weights)}")
    out = Path(out)
    check_output_folder(out, overwrite)
    _check_same_architecture(paths)

    total = float(sum(weights))
    model = AutoModel.from_pretrained(paths[0])
    averaged = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    for tensor in averaged.values():
        if tensor.is_floating_point():
            tensor.mul_(weights[0] / total)
    for path, weight in zip(paths[1:], weights[1:]):
        state = AutoModel.from_pretrained(path).state_dict()
        if state.keys() != averaged.keys():
            missing = sorted(averaged.keys() ^ state.keys())[:3]
            raise ValueError(f"{path} does not have the tensors of {paths[0]} (differing: {missing})")
        for name, tensor in averaged.items():
            other = state[name]
            if other.shape != tensor.shape:
                raise ValueError(f"{path}: {name} has shape {tuple(other.shape)}, {paths[0]} {tuple(tensor.shape)}")
            if tensor.is_floating_point():
                tensor.add_(other.to(tensor.dtype), alpha=weight / total)
            elif not torch.equal(other, tensor):
                raise ValueError(f"{path}: {name} (not a weight) differs from {paths[0]}'s")
    model.load_state_dict(averaged)

    record = {
        "method": "weighted mean of every floating-point tensor (model soup)",
        "checkpoints": [
            {"path": str(path.resolve()), "weight": weight / total, "files": model_files_fingerprint(path)}
            for path, weight in zip(paths, weights)
        ],
    }
    with output_lock(out), atomic_folder(out) as staging:
        model.save_pretrained(staging, tokenizer=AutoTokenizer.from_pretrained(paths[0]))
        (staging / AVERAGE_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return out
