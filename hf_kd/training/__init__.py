"""Training ranking models from teacher scores: arguments, collator, trainer and the `train` entry point."""

from .arguments import ConfigError, HfKdArguments, parse_train_args
from .checkpoints import is_complete_checkpoint, last_complete_checkpoint
from .collator import CachingTokenizer, RankingCollator
from .data import check_dataset_for_loss, loss_refusals
from .evaluation import RerankDevSet, evaluate_reranking
from .run import run_training
from .trainer import DistillationTrainer

__all__ = [
    "CachingTokenizer",
    "ConfigError",
    "DistillationTrainer",
    "HfKdArguments",
    "RankingCollator",
    "RerankDevSet",
    "check_dataset_for_loss",
    "evaluate_reranking",
    "is_complete_checkpoint",
    "last_complete_checkpoint",
    "loss_refusals",
    "parse_train_args",
    "run_training",
]
