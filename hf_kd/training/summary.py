"""The record of a finished training run, `train_summary.json` in its output folder.

`run_training` writes it; model cards, the Hub push and the reproduction read it through [`TrainSummary`].
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..files import read_json_file, write_json_atomic

__all__ = ["SUMMARY_FILE", "TrainSummary"]

SUMMARY_FILE = "train_summary.json"


@dataclass
class TrainSummary:
    """What a training run did and everything needed to run it again.

    Every field is optional when read, so summaries written by older versions (or by hand) load as they are; keys
    this version does not know are ignored.
    """

    architecture: str | None = None
    loss: str | None = None
    loss_config: dict[str, Any] = field(default_factory=dict)
    global_step: int | None = None
    resumed_from_checkpoint: str | None = None
    steps_this_run: int | None = None
    examples_seen: int | None = None
    rows_left_out_for_missing_ids: int = 0
    train_loss: float | None = None
    train_samples_per_second: float | None = None
    train_runtime_s: float | None = None
    wall_time_s: float | None = None
    final_dev_metrics: dict[str, float] = field(default_factory=dict)
    best_metric: float | None = None
    best_model_checkpoint: str | None = None
    world_size: int | None = None
    log_history: list[dict[str, Any]] = field(default_factory=list)
    # {"hf_kd": HfKdArguments as a dict, "training": TrainingArguments as a dict}
    arguments: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainSummary:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in known and value is not None})

    def save(self, folder: str | os.PathLike) -> Path:
        path = Path(folder) / SUMMARY_FILE
        write_json_atomic(path, self.to_dict())
        return path

    @classmethod
    def load(cls, folder: str | os.PathLike) -> TrainSummary | None:
        """The summary in `folder`, or `None` when no run finished there."""
        path = Path(folder) / SUMMARY_FILE
        if not path.is_file():
            return None
        values = read_json_file(path)
        if not isinstance(values, dict):
            raise ValueError(f"{path}: expected a JSON object, got {type(values).__name__}")
        return cls.from_dict(values)
