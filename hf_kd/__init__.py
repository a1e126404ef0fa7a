"""hf-kd: cross-architecture knowledge distillation for neural passage ranking.

Importing the package registers every zoo architecture with `AutoConfig` and `AutoModel`.
"""

from .models import (
    MODEL_CLASSES,
    BertCatConfig,
    BertCatModel,
    BertDotConfig,
    BertDotModel,
    ColBERTConfig,
    ColBERTModel,
    EncodedBatch,
    PreTTConfig,
    PreTTModel,
    RankingOutput,
    TKConfig,
    TKModel,
    model_class_for,
)

__version__ = "0.1.0"

__all__ = [
    "MODEL_CLASSES",
    "BertCatConfig",
    "BertCatModel",
    "BertDotConfig",
    "BertDotModel",
    "ColBERTConfig",
    "ColBERTModel",
    "EncodedBatch",
    "PreTTConfig",
    "PreTTModel",
    "RankingOutput",
    "TKConfig",
    "TKModel",
    "model_class_for",
    "__version__",
]
