"""The training side of the training data: which rows the chosen loss can learn from. The data package reads and
checks the rows (`hf_kd.data.load_train_dataset`), refusing those the loss cannot learn from."""

from __future__ import annotations

from datasets import Dataset, IterableDataset

from ..data.train_rows import TRAINABLE_SCHEMAS, train_schema
from ..losses import LOSSES
from .arguments import ConfigError

__all__ = ["check_dataset_for_loss", "loss_refusals"]


def loss_refusals(loss_name: str) -> dict[str, str]:
    """The training schemas (`hf_kd.data.TRAINABLE_SCHEMAS`) the loss cannot learn from, each with the reason:
    teacher scores the data lack, raw scores where the data have margins, or several negatives per query for a
    pairwise loss. Passed as `load_train_dataset(refuse=...)`."""
    loss_class = LOSSES[loss_name]
    reasons = {
        "triples": loss_class.requires_teacher
        and (
            f"loss {loss_name!r} needs teacher scores but the training data are unscored triples "
            "(query, positive, negative); score them with a teacher first, or train with loss 'ranknet'"
        ),
        "margin_triples": not loss_class.accepts_margins
        and (
            f"loss {loss_name!r} needs raw teacher scores (pos_score, neg_score) but the training data only have "
            "margins; use 'margin_mse', 'weighted_ranknet' or 'listwise_kl'"
        ),
        "nway": not loss_class.supports_n_way
        and (
            f"loss {loss_name!r} is pairwise only but the training data are n-way (query, passages, scores); use "
            f"one of {', '.join(sorted(n for n, c in LOSSES.items() if c.supports_n_way and c.requires_teacher))}, "
            "or triples with pos_score and neg_score"
        ),
    }
    return {schema: reason for schema, reason in reasons.items() if reason and schema in TRAINABLE_SCHEMAS}


def check_dataset_for_loss(dataset: Dataset | IterableDataset, loss_name: str, length_column: str | None = None) -> str:
    """Checks that the loss can train on rows read already (with `length_column`, the lengths `group_by_length`
    batches by); returns the schema name.

    Raises:
        ConfigError: the rows have a schema of [`loss_refusals`].
    """
    schema = train_schema(dataset, length_column=length_column)
    reason = loss_refusals(loss_name).get(schema)
    if reason:
        raise ConfigError(reason)
    return schema
