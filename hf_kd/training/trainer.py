"""`DistillationTrainer`: `transformers.Trainer` for ranking models trained from teacher scores."""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import ExportableState

from ..losses import RankingLoss
from .checkpoints import CheckpointCommitCallback, resolve_resume_checkpoint
from .collator import RankingCollator
from .evaluation import RerankDevSet, evaluate_reranking

__all__ = ["DistillationTrainer", "ExamplesSeenCallback", "split_backbone_parameters"]


class ExamplesSeenCallback(TrainerCallback, ExportableState):
    """Counts the training examples (queries with their passages) consumed, saved in and restored from checkpoints.

    Also notes `start_step`, the global step training (re)started from.
    """

    def __init__(self, examples_seen: int = 0):
        self.examples_seen = examples_seen
        self.start_step = 0

    def state(self) -> dict[str, Any]:
        return {"args": {"examples_seen": self.examples_seen}, "attributes": {}}

    def on_train_begin(self, args, state, control, **kwargs):
        saved = state.stateful_callbacks.get(type(self).__name__)
        if isinstance(saved, list):
            saved = saved[-1] if saved else None
        self.examples_seen = saved["args"]["examples_seen"] if saved else 0
        self.start_step = state.global_step
        return control


def split_backbone_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(pretrained-encoder parameters, the others: heads, projections, TK's kernels and layers)."""
    if hasattr(model, "parameter_groups"):
        return model.parameter_groups()
    prefix = f"{getattr(model, 'base_model_prefix', 'backbone')}."
    backbone = [p for name, p in model.named_parameters() if name.startswith(prefix)]
    backbone_ids = {id(p) for p in backbone}
    return backbone, [p for p in model.parameters() if id(p) not in backbone_ids]


class DistillationTrainer(Trainer):
    """Trains a ranking model with a loss of `hf_kd.losses` on teacher-score batches.

    `compute_loss` scores each query's 1+N passages with the model and applies the loss; devices, mixed precision,
    gradient accumulation and data parallelism are left to `Trainer` and accelerate. Validation re-ranks a dev run
    (`RerankDevSet`) and reports its metrics as `eval_nDCG@10`, `eval_MRR@10`, ... (so `metric_for_best_model`
    can be `nDCG@10`); every process evaluates the whole dev set, so all take the same best-model decisions.

    Checkpoints are committed with a completion marker and only complete ones are resumed from (see
    `hf_kd.training.checkpoints`); `train(resume_from_checkpoint=True)` picks the last complete checkpoint.

    Args:
        model: a ranking model (`prepare_inputs`, forward returning `scores`).
        args (`TrainingArguments`): as for `Trainer`. `remove_unused_columns` is turned off (the collator reads the
            text columns), and `save_total_limit` moves from `args` to the checkpoint commit callback, which deletes
            old checkpoints only once the new one is complete.
        loss (`RankingLoss`): e.g. `hf_kd.losses.MarginMSELoss()`.
        train_dataset: text-form teacher-score rows (see `hf_kd.training.data`).
        dev_set (`RerankDevSet`, *optional*): the validation set.
        processing_class: the model's tokenizer.
        data_collator (*optional*): defaults to `RankingCollator(model, processing_class)`.
        non_backbone_learning_rate (`float`, *optional*): learning rate of the parameters outside the pretrained
            encoder; defaults to `args.learning_rate`.
        callbacks (*optional*): further `TrainerCallback`s.
        **kwargs: passed to `Trainer`.
    """

    # the losses return per-batch means: Trainer divides them by the gradient accumulation steps
    loss_is_scaled_for_ga = False
    # the complete checkpoint the last `train` call resumed from
    resumed_from_checkpoint: str | None = None

    def __init__(
        self,
        model: nn.Module,
        args: TrainingArguments,
        loss: RankingLoss,
        train_dataset=None,
        dev_set: RerankDevSet | None = None,
        processing_class=None,
        data_collator=None,
        non_backbone_learning_rate: float | None = None,
        callbacks: list[TrainerCallback] | None = None,
        **kwargs: Any,
    ):
        args.remove_unused_columns = False
        # old checkpoints are rotated by CheckpointCommitCallback once the new one is complete
        save_total_limit, args.save_total_limit = args.save_total_limit, None
        self.loss = loss
        self.non_backbone_learning_rate = non_backbone_learning_rate
        if data_collator is None:
            data_collator = RankingCollator(model, processing_class)
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=dev_set,
            processing_class=processing_class,
            callbacks=[CheckpointCommitCallback(save_total_limit), ExamplesSeenCallback(), *(callbacks or [])],
            **kwargs,
        )
        # the losses take no `num_items_in_batch`: do not count label tokens for them
        self.model_accepts_loss_kwargs = False

    @property
    def examples_seen_callback(self) -> ExamplesSeenCallback:
        # looked up each time: restoring callback states from a checkpoint replaces the instance
        return next(cb for cb in self.callback_handler.callbacks if isinstance(cb, ExamplesSeenCallback))

    @property
    def examples_seen(self) -> int:
        """Training examples (queries with their passages) consumed so far, over all processes."""
        return self.examples_seen_callback.examples_seen

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ):
        inputs = dict(inputs)
        labels = inputs.pop("labels", None)
        group_size = inputs.pop("group_size")
        outputs = model(**inputs)
        scores = outputs.scores.view(-1, group_size)
        loss = self.loss(scores, labels)
        if model.training:
            self.examples_seen_callback.examples_seen += scores.shape[0] * self.args.world_size
        return (loss, outputs) if return_outputs else loss

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        """Trainer's optimizer with two learning rates: `args.learning_rate` for the pretrained encoder and
        `non_backbone_learning_rate` for the rest (weight decay as in `Trainer`: not on biases and norms)."""
        if self.non_backbone_learning_rate is None or self.optimizer is not None:
            return super().create_optimizer(model)
        opt_model = self.model if model is None else model
        decay_names = set(self.get_decay_parameter_names(opt_model))
        backbone_ids = {id(p) for p in split_backbone_parameters(opt_model)[0]}
        groups = []
        for in_backbone, learning_rate in ((True, self.args.learning_rate), (False, self.non_backbone_learning_rate)):
            for decay in (True, False):
                params = [
                    p
                    for name, p in opt_model.named_parameters()
                    if p.requires_grad and (id(p) in backbone_ids) == in_backbone and (name in decay_names) == decay
                ]
                if params:
                    weight_decay = self.args.weight_decay if decay else 0.0
                    groups.append({"params": params, "lr": learning_rate, "weight_decay": weight_decay})
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    def evaluate(
        self,
        eval_dataset: RerankDevSet | None = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
    ) -> dict[str, float]:
        """Re-ranks the dev run and returns `{prefix}_nDCG@10`, `{prefix}_MRR@10`, ... and `{prefix}_runtime`."""
        dev_set = eval_dataset if eval_dataset is not None else self.eval_dataset
        if dev_set is None:
            raise ValueError("evaluate needs a dev set: pass dev_set to DistillationTrainer or eval_dataset here")
        start = time.perf_counter()
        metrics = evaluate_reranking(
            self.model, self.processing_class, dev_set, batch_size=self.args.per_device_eval_batch_size
        )
        metrics = {f"{metric_key_prefix}_{name}": value for name, value in metrics.items()}
        metrics[f"{metric_key_prefix}_runtime"] = round(time.perf_counter() - start, 4)
        self.log(dict(metrics))
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs: Any):
        """`Trainer.train`, resuming only from complete checkpoints (True: the last one; "auto": the last one if
        any, else from scratch)."""
        self.resumed_from_checkpoint = resolve_resume_checkpoint(resume_from_checkpoint, self.args.output_dir)
        return super().train(resume_from_checkpoint=self.resumed_from_checkpoint, **kwargs)
