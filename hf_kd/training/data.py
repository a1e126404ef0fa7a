"""The training side of the training data: whether the chosen loss can learn from the rows the data package
reads (`hf_kd.data.train_rows`)."""

from __future__ import annotations

from datasets import Dataset

from ..data.train_rows import train_schema
from ..losses import LOSSES
from .arguments import ConfigError

__all__ = ["check_dataset_for_loss"]


def check_dataset_for_loss(dataset: Dataset, loss_name: str, length_column: str | None = None) -> str:
    """Checks that the loss can train on the dataset (with `length_column`, the lengths `group_by_length` batches
    by); returns the schema name.

    Raises:
        ConfigError: the loss needs teacher scores the data lacks, needs raw scores but the data has margins, or is
            pairwise only but the data has several negatives per query.
    """
    schema = train_schema(dataset, length_column=length_column)
    loss_class = LOSSES[loss_name]
    if schema == "triples" and loss_class.requires_teacher:
        raise ConfigError(
            f"loss {loss_name!r} needs teacher scores but the training data are unscored triples "
            "(query, positive, negative); score them with a teacher first, or train with loss 'ranknet'"
        )
    if schema == "margin_triples" and not loss_class.accepts_margins:
        raise ConfigError(
            f"loss {loss_name!r} needs raw teacher scores (pos_score, neg_score) but the training data only have "
            "margins; use 'margin_mse', 'weighted_ranknet' or 'listwise_kl'"
        )
    if schema == "nway" and not loss_class.supports_n_way:
        n_way = [name for name, cls in LOSSES.items() if cls.supports_n_way and cls.requires_teacher]
        raise ConfigError(
            f"loss {loss_name!r} is pairwise only but the training data are n-way (query, passages, scores); "
            f"use one of {', '.join(sorted(n_way))}, or triples with pos_score and neg_score"
        )
    return schema
