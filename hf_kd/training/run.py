"""The training entry point shared by `train_scripts/train.py` and `hf-kd train`."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from accelerate import PartialState
from datasets import Dataset, IterableDataset
from transformers import AutoModel, AutoTokenizer, EarlyStoppingCallback, TrainingArguments, set_seed

from ..data.errors import DataFormatError
from ..data.sources import DataSourceError
from ..data.texts import MissingIdError, MissingIdRows
from ..data.train_rows import load_train_dataset
from ..files import naming_weight_files, write_json_atomic
from ..jobs import JobLockedError, file_fingerprint, fingerprint_changes, output_lock
from ..losses import get_loss
from ..models import model_class_for
from ..processes import end_job_processes
from .arguments import ConfigError, HfKdArguments, parse_train_args, resolve_train_args
from .checkpoints import (
    RUN_FINGERPRINT,
    delete_checkpoints,
    last_complete_checkpoint,
    resolve_resume_checkpoint,
)
from .collator import RankingCollator
from .data import loss_refusals
from .evaluation import RerankDevSet
from .summary import TrainSummary
from .trainer import DistillationTrainer

__all__ = [
    "build_model",
    "build_trainer",
    "main",
    "resolve_run_resume",
    "run_fingerprint",
    "run_training",
    "save_final_model",
]

logger = logging.getLogger(__name__)

MISSING_IDS_FILE = "missing_ids.tsv"
# training arguments that change where and how a run reports, not what it computes
_UNFINGERPRINTED = frozenset(
    {
        "output_dir", "logging_dir", "resume_from_checkpoint", "report_to", "disable_tqdm", "logging_steps",
        "logging_strategy", "logging_first_step", "save_total_limit", "run_name", "dataloader_num_workers",
        "local_rank", "overwrite_output_dir",
    }
)  # fmt: skip


def _data_fingerprint(path: str) -> dict | str:
    """The identity of a data file, folder (every file's size and content hash) or Hub id."""
    if os.path.isfile(path):
        return file_fingerprint(path)
    if os.path.isdir(path):
        return {
            str(p.relative_to(path)): [p.stat().st_size, file_fingerprint(p)["sha256"]]
            for p in sorted(Path(path).rglob("*"))
            if p.is_file()
        }
    return path


def run_fingerprint(hf_kd_args: HfKdArguments, training_args: TrainingArguments) -> dict:
    """What a training run computes: its configuration and the identity of its data files."""
    training = {k: v for k, v in json.loads(training_args.to_json_string()).items() if k not in _UNFINGERPRINTED}
    hf_kd = {k: v for k, v in dataclasses.asdict(hf_kd_args).items() if k not in _UNFINGERPRINTED}
    data = [hf_kd_args.train_queries, hf_kd_args.train_collection, *hf_kd_args.train_files]
    return {"hf_kd": hf_kd, "training": training, "data": {p: _data_fingerprint(p) for p in data if p}}


def resolve_run_resume(hf_kd_args: HfKdArguments, training_args: TrainingArguments) -> str | None:
    """The checkpoint the run resumes from, and the run fingerprint recorded in `output_dir`.

    By default (no `resume_from_checkpoint`) a run resumes from the last complete checkpoint in `output_dir` when
    that folder's recorded fingerprint equals this run's, says so in one line, and refuses checkpoints of another
    run with what changed; `overwrite_output_dir` deletes the checkpoints and starts over. An explicit
    `resume_from_checkpoint` is honoured as given (see `resolve_resume_checkpoint`).

    Raises:
        ConfigError: `output_dir` holds checkpoints of another run, or the named checkpoint cannot be resumed.
    """
    output_dir = Path(training_args.output_dir)
    fingerprint = run_fingerprint(hf_kd_args, training_args)
    value = training_args.resume_from_checkpoint
    if hf_kd_args.overwrite_output_dir:
        if value not in (None, False, "false"):
            raise ConfigError("overwrite_output_dir starts over: it does not combine with resume_from_checkpoint")
        if training_args.process_index == 0:
            delete_checkpoints(output_dir)
        checkpoint = None
    elif value is None:
        checkpoint = last_complete_checkpoint(output_dir)
        if checkpoint is not None:
            recorded_path = output_dir / RUN_FINGERPRINT
            recorded = json.loads(recorded_path.read_text(encoding="utf-8")) if recorded_path.is_file() else None
            changes = fingerprint_changes(recorded, fingerprint) if recorded is not None else ["no record of its run"]
            if changes:
                raise ConfigError(
                    f"{output_dir} holds checkpoints of another run ({'; '.join(changes[:5])}"
                    f"{f'; {len(changes) - 5} more' if len(changes) > 5 else ''}); pass --overwrite_output_dir true "
                    "to start over, or choose another output_dir"
                )
            if training_args.process_index == 0:
                print(
                    f"resuming from {checkpoint}, the last complete checkpoint of the same run "
                    "(--overwrite_output_dir true starts over)",
                    file=sys.stderr,
                )
    else:
        try:
            checkpoint = resolve_resume_checkpoint(value, str(output_dir))
        except ValueError as error:
            raise ConfigError(str(error)) from error
    if training_args.process_index == 0:
        output_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(output_dir / RUN_FINGERPRINT, fingerprint)
    training_args.resume_from_checkpoint = checkpoint
    return checkpoint


def build_model(hf_kd_args: HfKdArguments):
    """The student (or teacher) model and its tokenizer, from a backbone checkpoint, a backbone config or an hf-kd
    checkpoint."""
    model_class = model_class_for(hf_kd_args.architecture)
    lengths = {
        name: getattr(hf_kd_args, name)
        for name in ("max_query_length", "max_passage_length")
        if getattr(hf_kd_args, name) is not None
    }
    overrides = {**hf_kd_args.model_config, **lengths}
    try:
        with naming_weight_files(hf_kd_args.backbone or hf_kd_args.model_name_or_path):
            if hf_kd_args.backbone:
                model = model_class.from_backbone(hf_kd_args.backbone, **overrides)
            elif hf_kd_args.backbone_config:
                model = model_class(model_class.config_class(backbone_config=hf_kd_args.backbone_config, **overrides))
            else:
                model = AutoModel.from_pretrained(hf_kd_args.model_name_or_path, **overrides)
    except TypeError as error:
        raise ConfigError(f"model_config: {error}") from error
    if hf_kd_args.backbone_dropout is not None:
        set_backbone_dropout(model, hf_kd_args.backbone_dropout)
    if model.config.architecture != hf_kd_args.architecture:
        raise ConfigError(
            f"architecture is {hf_kd_args.architecture!r} but {hf_kd_args.model_name_or_path} holds a "
            f"{model.config.architecture!r} model"
        )
    tokenizer_source = hf_kd_args.tokenizer_name_or_path or hf_kd_args.backbone or hf_kd_args.model_name_or_path
    return model, AutoTokenizer.from_pretrained(tokenizer_source)


def set_backbone_dropout(model, probability: float) -> None:
    """Sets every dropout of the model's pretrained encoder to `probability` (dropout modules, and the attention
    dropout rates that attention layers keep as numbers), and records it in the encoder's config."""
    import torch.nn as nn

    for module in model.backbone.modules():
        if isinstance(module, nn.Dropout):
            module.p = probability
        for name in ("dropout_prob", "attention_dropout"):
            if isinstance(getattr(module, name, None), float):
                setattr(module, name, probability)
    for backbone_config in {id(c): c for c in (model.config.backbone_config, model.backbone.config)}.values():
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout"):
            if isinstance(getattr(backbone_config, name, None), float):
                setattr(backbone_config, name, probability)


def training_passages(train_dataset: Dataset | IterableDataset, max_rows: int = 50_000) -> list[str]:
    """The distinct passage texts of the first `max_rows` training rows (what TK's query term weights count
    document frequencies in)."""
    if isinstance(train_dataset, IterableDataset):
        rows = list(itertools.islice(train_dataset, max_rows))
        columns = {name: [row[name] for row in rows] for name in rows[0]} if rows else {}
    else:
        columns = train_dataset[: min(max_rows, len(train_dataset))]
    if "passages" in columns:
        texts = [text for passages in columns["passages"] for text in passages]
    else:
        texts = [*columns.get("positive", []), *columns.get("negative", [])]
    return list(dict.fromkeys(texts))


def _evaluation_callbacks(hf_kd_args: HfKdArguments, training_args: TrainingArguments, has_dev_set: bool) -> list:
    """Checks the evaluation settings against the dev set; returns the callbacks they ask for (early stopping)."""
    if training_args.eval_strategy != "no" and not has_dev_set:
        raise ConfigError(
            f"eval_strategy is {training_args.eval_strategy.value!r} but no dev set is given: set dev_queries, "
            "dev_collection, dev_run and dev_qrels, or eval_strategy: 'no'"
        )
    if training_args.load_best_model_at_end and not has_dev_set:
        raise ConfigError("load_best_model_at_end needs a dev set (dev_queries, dev_collection, dev_run, dev_qrels)")
    callbacks = []
    if hf_kd_args.early_stopping_patience is not None:
        if not (has_dev_set and training_args.load_best_model_at_end and training_args.metric_for_best_model):
            raise ConfigError(
                "early_stopping_patience needs a dev set, load_best_model_at_end: true and metric_for_best_model"
            )
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=hf_kd_args.early_stopping_patience))
    return callbacks


def _configure_streaming(hf_kd_args: HfKdArguments, training_args: TrainingArguments) -> None:
    """Checks that a streamed run can train (`max_steps`, no `group_by_length`) and sets up reading the stream."""
    if not hf_kd_args.streaming:
        return
    if training_args.max_steps <= 0:
        raise ConfigError("streaming: a stream has no length, so set max_steps")
    if hf_kd_args.group_by_length:
        raise ConfigError("group_by_length needs the whole dataset's lengths; it does not combine with streaming")
    # each process reads its own shards of the stream instead of the main process reading for all
    training_args.accelerator_config.dispatch_batches = False


def _missing_id_rows(hf_kd_args: HfKdArguments, training_args: TrainingArguments) -> MissingIdRows | None:
    """Where this process records the training rows left out for ids without text (`skip_missing_ids`), or None."""
    if not hf_kd_args.skip_missing_ids:
        return None
    side_file = Path(training_args.output_dir) / MISSING_IDS_FILE
    if training_args.process_index == 0:
        side_file.unlink(missing_ok=True)
    elif not hf_kd_args.streaming:
        side_file = None  # map-style rows are checked by every process alike: the main one writes the list
    else:
        side_file = side_file.with_name(f"missing_ids.process{training_args.process_index}.tsv")
    return MissingIdRows(side_file)


def _training_dataset(
    hf_kd_args: HfKdArguments, training_args: TrainingArguments, missing_ids: MissingIdRows | None
) -> Dataset | IterableDataset:
    """Loads the training data (main process first), refusing rows the loss cannot learn from, with the lengths
    `group_by_length` batches by."""
    length_column = training_args.length_column_name if hf_kd_args.group_by_length else None
    with training_args.main_process_first(desc="loading the training data"):
        train_dataset = load_train_dataset(
            hf_kd_args.train_files,
            pos_score_column=hf_kd_args.pos_score_column,
            neg_score_column=hf_kd_args.neg_score_column,
            margin_column=hf_kd_args.margin_column,
            scores_column=hf_kd_args.scores_column,
            queries=hf_kd_args.train_queries,
            collection=hf_kd_args.train_collection,
            streaming=hf_kd_args.streaming,
            missing_ids=missing_ids,
            length_column=length_column,
            refuse=loss_refusals(hf_kd_args.loss),
        )
        if missing_ids is not None and missing_ids.count:
            logger.warning(
                f"left out {missing_ids.count:,} training rows with ids that have no text; see {missing_ids.path}"
            )
        if hf_kd_args.group_by_length:
            training_args.train_sampling_strategy = "group_by_length"
    return train_dataset


def _dev_set(hf_kd_args: HfKdArguments) -> RerankDevSet | None:
    """The re-ranking dev set of the `dev_*` arguments, or None without `dev_queries`."""
    if not hf_kd_args.dev_queries:
        return None
    return RerankDevSet.from_files(
        hf_kd_args.dev_queries,
        hf_kd_args.dev_collection,
        hf_kd_args.dev_run,
        hf_kd_args.dev_qrels,
        top_k=hf_kd_args.dev_top_k,
        rel_threshold=hf_kd_args.dev_rel_threshold,
    )


def build_trainer(hf_kd_args: HfKdArguments, training_args: TrainingArguments) -> DistillationTrainer:
    """Checks the configuration and the data against each other, then builds model, data and trainer.

    Every configuration error (unknown loss, missing file, data the loss cannot use, no dev set while evaluation
    is on) is raised as `ConfigError` here, before any training step.
    """
    hf_kd_args.validate()
    try:
        loss = get_loss(hf_kd_args.loss, **hf_kd_args.loss_kwargs)
    except ValueError as error:
        raise ConfigError(f"loss_kwargs: {error}") from error
    callbacks = _evaluation_callbacks(hf_kd_args, training_args, has_dev_set=bool(hf_kd_args.dev_queries))
    _configure_streaming(hf_kd_args, training_args)
    missing_ids = _missing_id_rows(hf_kd_args, training_args)
    train_dataset = _training_dataset(hf_kd_args, training_args, missing_ids)
    dev_set = _dev_set(hf_kd_args)
    resolve_run_resume(hf_kd_args, training_args)  # checked here so that a wrong value fails before the model

    set_seed(training_args.seed)
    model, tokenizer = build_model(hf_kd_args)
    if hf_kd_args.backbone and getattr(model.config, "query_term_weights", False):
        model.init_query_term_weights(tokenizer, training_passages(train_dataset))
    trainer = DistillationTrainer(
        model=model,
        args=training_args,
        loss=loss,
        train_dataset=train_dataset,
        dev_set=dev_set,
        processing_class=tokenizer,
        data_collator=RankingCollator(model, tokenizer, cache_size=hf_kd_args.tokenization_cache_size),
        non_backbone_learning_rate=hf_kd_args.non_backbone_learning_rate,
        callbacks=callbacks,
    )
    trainer.rows_left_out_for_missing_ids = missing_ids.count if missing_ids is not None else 0
    return trainer


def save_final_model(trainer: DistillationTrainer, output_dir: str) -> None:
    """Saves model and tokenizer into `output_dir` (loadable with `AutoModel.from_pretrained`), file by file
    atomically: they are written to a temporary folder beside, then each is renamed into place."""
    staging = Path(output_dir) / ".final-model.tmp"
    trainer.save_model(str(staging))
    if trainer.args.should_save:
        for path in sorted(staging.rglob("*")):
            if path.is_file():
                target = Path(output_dir) / path.relative_to(staging)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, target)
        shutil.rmtree(staging, ignore_errors=True)
    PartialState().wait_for_everyone()


def run_training(hf_kd_args: HfKdArguments, training_args: TrainingArguments) -> TrainSummary:
    """Trains, saves the final model and tokenizer in `output_dir`, writes `train_summary.json`; returns it."""
    # the main process alone holds the output folder's lock: the other processes of the same run share the folder
    lock = output_lock(training_args.output_dir) if training_args.process_index == 0 else contextlib.nullcontext()
    with lock:
        return _train_and_save(hf_kd_args, training_args)


def _train_and_save(hf_kd_args: HfKdArguments, training_args: TrainingArguments) -> TrainSummary:
    start = time.perf_counter()
    trainer = build_trainer(hf_kd_args, training_args)
    resume = training_args.resume_from_checkpoint
    train_output = trainer.train(resume_from_checkpoint=resume)
    save_final_model(trainer, training_args.output_dir)
    dev_metrics = trainer.evaluate() if trainer.eval_dataset is not None else {}
    summary = TrainSummary(
        architecture=hf_kd_args.architecture,
        loss=hf_kd_args.loss,
        loss_config=trainer.loss.get_config_dict(),
        global_step=trainer.state.global_step,
        resumed_from_checkpoint=trainer.resumed_from_checkpoint,
        steps_this_run=trainer.state.global_step - trainer.examples_seen_callback.start_step,
        examples_seen=trainer.examples_seen,
        rows_left_out_for_missing_ids=getattr(trainer, "rows_left_out_for_missing_ids", 0),
        train_loss=train_output.training_loss,
        train_samples_per_second=train_output.metrics.get("train_samples_per_second"),
        train_runtime_s=train_output.metrics.get("train_runtime"),
        wall_time_s=round(time.perf_counter() - start, 3),
        final_dev_metrics=dev_metrics,
        best_metric=trainer.state.best_metric,
        best_model_checkpoint=trainer.state.best_model_checkpoint,
        world_size=training_args.world_size,
        log_history=trainer.state.log_history,
        arguments={"hf_kd": dataclasses.asdict(hf_kd_args), "training": json.loads(training_args.to_json_string())},
    )
    if training_args.should_save:
        summary.save(training_args.output_dir)
    return summary


def _warn_single_cpu_process() -> None:
    """`accelerate launch --cpu --num_processes N` starts one process unless it is given an MPI hostfile."""
    env = os.environ
    launched_for_several = env.get("ACCELERATE_USE_CPU", "").lower() == "true" and "MASTER_ADDR" in env
    if launched_for_several and not any(k in env for k in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE")):
        logger.warning(
            "`accelerate launch --cpu --num_processes N` started a single process (accelerate runs several CPU "
            "processes only through MPI, `--mpirun_hostfile`). For N processes with gloo use "
            "`accelerate launch --multi_gpu --num_processes N train_scripts/train.py ... --use_cpu true` or "
            "`torchrun --nproc_per_node N train_scripts/train.py ... --use_cpu true`."
        )


def main(argv: Sequence[str] | None = None, explicit_values: dict[str, Any] | None = None) -> int:
    """`[--config file.yaml] [--key value ...]` (or those values already parsed, `explicit_values`): parse, train,
    save. Configuration errors exit with status 2."""
    _warn_single_cpu_process()
    try:
        if explicit_values is not None:
            hf_kd_args, training_args = resolve_train_args(explicit_values)
        else:
            hf_kd_args, training_args = parse_train_args(argv)
        run_training(hf_kd_args, training_args)
    except (ConfigError, DataFormatError, DataSourceError, MissingIdError, JobLockedError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        end_job_processes()
    return 0
