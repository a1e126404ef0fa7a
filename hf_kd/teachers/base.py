"""The `Teacher` interface every kind of teacher implements: one raw relevance score per (query, passage) pair."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from ..models.ranking_functions import token_counts

__all__ = ["Teacher"]


class Teacher(ABC):
    """A model that gives one raw relevance score per (query, passage) pair.

    Subclasses implement [`score`] on one batch; [`pair_lengths`] lets the caller sort pairs by input
    length so that batches carry little padding.

    Attributes:
        name_or_path (`str`): the checkpoint, as given (folder or Hub id).
        name (`str`): a short name for score columns (`pos_score_<name>`), by default the checkpoint's last
            path component.
        revision (`str` or `None`): the Hub commit hash of the loaded files, where known.
        tokenizer: the checkpoint's tokenizer.
        max_length (`int`): the most tokens of one pair input, special tokens included.
        device (`torch.device`): where the model runs.
        precision (`str` or `None`): `"onnx-int8"` or `"int8"` once the model runs in int8
            ([`quantize`]); `None` while it runs in the dtype of its weights.
    """

    kind: ClassVar[str]
    covers_every_pair: ClassVar[bool] = True
    """False for teachers that score only some pairs (a run file) and give NaN to the others."""

    def __init__(
        self,
        name_or_path: str,
        tokenizer,
        max_length: int,
        device: torch.device,
        revision: str | None = None,
        name: str | None = None,
    ):
        self.name_or_path = str(name_or_path)
        self.name = name or _short_name(self.name_or_path)
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.device = device
        self.revision = revision
        self.precision: str | None = None

    @abstractmethod
    def score(self, queries: Sequence[str], passages: Sequence[str]) -> torch.Tensor:
        """Scores one batch of aligned pairs.

        Args:
            queries (`Sequence[str]`): n query texts.
            passages (`Sequence[str]`): n passage texts, `passages[i]` belongs to `queries[i]`.

        Returns:
            `torch.Tensor`: (n,) float32 raw scores on the CPU.
        """

    def pair_lengths(self, queries: Sequence[str], passages: Sequence[str]) -> np.ndarray:
        """Tokens in each pair's model input (special tokens included), used to sort pairs into batches.

        Each distinct text is tokenised once, since pairs share queries and passages.
        """
        query_tokens = np.asarray(token_counts(self.tokenizer, queries, self.max_length))
        passage_tokens = np.asarray(token_counts(self.tokenizer, passages, self.max_length))
        return self._pair_length(query_tokens, passage_tokens)

    def _pair_length(self, query_tokens: np.ndarray, passage_tokens: np.ndarray) -> np.ndarray:
        special = self.tokenizer.num_special_tokens_to_add(pair=True)
        return np.minimum(query_tokens + passage_tokens + special, self.max_length)

    def describe(self) -> dict[str, Any]:
        """What the provenance of a teacher-score dataset records about this teacher."""
        local = Path(self.name_or_path).is_dir()
        return {
            "name": self.name,
            "name_or_path": str(Path(self.name_or_path).resolve()) if local else self.name_or_path,
            "kind": self.kind,
            "revision": self.revision,
            "max_length": self.max_length,
            "dtype": self.precision or (None if self.dtype is None else str(self.dtype).removeprefix("torch.")),
        }

    def quantize(self, precision: str) -> None:
        """Runs the teacher's model in int8 from now on: `"onnx-int8"` (its transformer encoder exported to ONNX and
        run by ONNX Runtime in int8, the `onnx` extra; on the CPU) or `"int8"` (every linear layer quantised by
        torchao, the `int8` extra). Heads, pooling and similarity stay in PyTorch and float32."""
        from ..evaluation.loading import quantize_linear_layers_int8

        model = getattr(self, "model", None)
        if not isinstance(model, torch.nn.Module):
            raise ValueError(f"teacher {self.name_or_path!r} ({self.kind}) has no neural model to run in {precision}")
        if precision == "onnx-int8":
            if self.device.type != "cpu":
                raise ValueError(f"onnx-int8 runs on the CPU (ONNX Runtime's CPU kernels), not on {self.device}")
            self._export_onnx_int8()
        elif precision == "int8":
            quantize_linear_layers_int8(model)
        else:
            raise ValueError(f"a teacher is quantised to onnx-int8 or int8, not {precision!r}")
        self.precision = precision

    def _export_onnx_int8(self) -> None:
        raise ValueError(f"onnx-int8 does not cover {self.kind} teachers: use int8")

    @property
    def dtype(self) -> torch.dtype | None:
        """The dtype of the model's weights (`None` for a teacher without a torch model)."""
        model = getattr(self, "model", None)
        parameter = next(model.parameters(), None) if isinstance(model, torch.nn.Module) else None
        return None if parameter is None else parameter.dtype

    def _check_scores(self, scores: torch.Tensor, n: int) -> torch.Tensor:
        if scores.ndim == 2 and scores.shape[1] == 1:
            scores = scores.squeeze(1)
        if tuple(scores.shape) != (n,):
            raise ValueError(
                f"teacher {self.name_or_path!r} returned scores of shape {tuple(scores.shape)} for {n} pairs; "
                f"a teacher must output one logit per (query, passage) pair, shape ({n},) or ({n}, 1)"
            )
        return scores.float().cpu()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name_or_path!r}, device={self.device}, max_length={self.max_length})"


def _short_name(name_or_path: str) -> str:
    name = Path(name_or_path.rstrip("/\\")).name or "teacher"
    return re.sub(r"[^0-9A-Za-z_.-]+", "_", name)
