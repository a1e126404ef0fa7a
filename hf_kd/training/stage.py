"""Training as a stage of a job (`hf-kd reproduce`, `hf-kd adapt`): one call that trains a ranker into a folder with
the project's Trainer and is skipped when the folder holds a finished run, and the model settings a student keeps
of the backbone it starts from. Both jobs train through these two functions and nothing else."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch
from transformers import AutoConfig, TrainingArguments

from .arguments import HfKdArguments
from .run import run_training
from .summary import TrainSummary


class TrainingSizes(Protocol):
    """What a job's budget fixes for every model it trains (a reproduction's and an adaptation's budgets have it)."""

    batch_size: int
    max_passage_length: int
    non_backbone_learning_rate: float


def train_model(
    sizes: TrainingSizes,
    out: Path,
    *,
    architecture: str,
    backbone: str,
    loss: str,
    train_file: str,
    steps: int,
    seed: int,
    learning_rate: float,
    model_config: dict | None = None,
    pos_score_column: str = "pos_score",
    neg_score_column: str = "neg_score",
    bf16: bool = False,
    backbone_dropout: float | None = None,
    max_query_length: int | None = None,
    save_steps: int | None = None,
) -> TrainSummary:
    """Trains one model with the project's Trainer into `out` (skipped when `out` holds a finished run).

    `sizes` (a job's budget) gives the batch size, the passages' word pieces and the learning rate of heads,
    projections and TK; the schedule is linear with 10% warm-up, no weight decay; `bf16` trains under bfloat16
    autocast (float32 master weights and loss); `max_query_length` replaces the architecture's default (30 word
    pieces) in training and in the saved model; `save_steps` keeps a complete checkpoint every that many steps (all of
    them: a killed run resumes from the last, and each is a point of a learning curve)."""
    finished = TrainSummary.load(out)
    if finished is not None:
        return finished
    hf_kd_args = HfKdArguments(
        architecture=architecture,
        backbone=backbone,
        model_config=model_config or {},
        loss=loss,
        train_files=[train_file],
        max_passage_length=sizes.max_passage_length,
        max_query_length=max_query_length,
        pos_score_column=pos_score_column,
        neg_score_column=neg_score_column,
        non_backbone_learning_rate=sizes.non_backbone_learning_rate,
        backbone_dropout=backbone_dropout,
    )
    training_args = TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=sizes.batch_size,
        max_steps=steps,
        learning_rate=learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=max(1, steps // 10),
        weight_decay=0.0,
        logging_steps=max(1, steps // 10),
        save_strategy="steps" if save_steps else "no",
        save_steps=save_steps or 500,
        save_total_limit=None,
        eval_strategy="no",
        report_to="none",
        seed=seed,
        data_seed=seed,
        disable_tqdm=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),  # pinned memory only speeds up copies to a CUDA device
        bf16=bf16,
        use_cpu=bf16 and not torch.cuda.is_available(),  # bfloat16 autocast on the CPU
    )
    return run_training(hf_kd_args, training_args)


def student_config(architecture: str, backbone: str, sentence_transformers: bool) -> dict:
    """The model settings of a student of `architecture` that starts from `backbone`; `sentence_transformers`: the
    backbone is a sentence-transformers bi-encoder (mean pooling, cosine), as all-MiniLM-L6-v2 and its first
    layers are."""
    if architecture == "bert_dot" and sentence_transformers:
        # the backbone was trained with mean pooling and cosine similarity: the student keeps both, so that
        # distillation starts from the backbone's own ranking instead of re-learning a raw dot product
        return {"pooling": "mean", "normalize_embeddings": True}
    if architecture == "colbert" and sentence_transformers:
        # the backbone's own token vectors (identity projection, no untrained [MASK] tokens) with cosine MaxSim
        # averaged over the query: untrained it already ranks, and its scores have a cosine teacher's scale, so
        # Margin-MSE does not have to squeeze a sum over 32 raw dot products into the teacher's margins
        return {
            "normalize_embeddings": True,
            "mean_maxsim": True,
            "compression_dim": AutoConfig.from_pretrained(backbone).hidden_size,
            "compression_init": "identity",
            "query_augmentation_tokens": 0,
        }
    if architecture == "tk":
        # starts as a term matcher, not at chance, whose query terms weigh by their IDF in the training passages (see
        # TKConfig): trained on the cpu budget's triples, SciFact 0.637 against 0.589 without the weights (p=0.04)
        return {"term_match_init": True, "query_term_weights": True}
    if architecture == "prett" and sentence_transformers:
        # the CLS head of a sentence-transformers backbone starts at chance and does not learn in a few hundred steps;
        # the mean-cosine readout starts from the backbone's own similarity (see BertCatConfig.mean_cosine_score)
        return {"split_layer": 3, "mean_cosine_score": True}
    if architecture == "prett":
        return {"split_layer": 1}
    if architecture == "bert_cat" and sentence_transformers:
        return {"mean_cosine_score": True}
    return {}
