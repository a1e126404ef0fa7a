"""Training arguments: `HfKdArguments` (the hf-kd fields) next to `transformers.TrainingArguments`.

Both are parsed by one `transformers.HfArgumentParser`, from a YAML file (`--config file.yaml`) and from
`--key value` pairs on the command line; command-line values override the file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser, TrainingArguments

from ..data.errors import ConfigError
from ..losses import LOSSES
from ..models import MODEL_CLASSES

__all__ = [
    "ConfigError",
    "HfKdArguments",
    "build_parser",
    "explicit_parser",
    "field_names",
    "load_yaml_config",
    "resolve_train_args",
    "parse_train_args",
]


@dataclass
class HfKdArguments:
    """The hf-kd fields of a training run; everything else is a `transformers.TrainingArguments` field."""

    architecture: str = field(
        default="bert_dot",
        metadata={"help": "Student architecture.", "choices": list(MODEL_CLASSES)},
    )
    backbone: str | None = field(
        default=None,
        metadata={
            "help": "BERT-family checkpoint (folder or Hub id) whose weights initialise the model's encoder "
            "(`Model.from_backbone`). Exactly one of backbone, backbone_config and model_name_or_path is needed."
        },
    )
    backbone_config: dict | str | None = field(
        default=None,
        metadata={
            "help": "Backbone configuration (mapping or JSON string with a `model_type`) for a randomly "
            "initialised encoder; needs tokenizer_name_or_path."
        },
    )
    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "An hf-kd checkpoint to continue training (loaded with `AutoModel.from_pretrained`)."},
    )
    tokenizer_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Tokenizer folder or Hub id; defaults to backbone or model_name_or_path."},
    )
    model_config: dict | str | None = field(
        default=None,
        metadata={
            "help": "Overrides of the architecture's config (mapping or JSON string), e.g. "
            '{"compression_dim": 128} for ColBERT.'
        },
    )
    max_query_length: int | None = field(
        default=None,
        metadata={
            "help": "Maximum query length in word pieces, special tokens excluded; sets the model config's value "
            "(default: the checkpoint's own, 30 for a new model)."
        },
    )
    max_passage_length: int | None = field(
        default=None,
        metadata={
            "help": "Maximum passage length in word pieces, special tokens excluded; sets the model config's value "
            "(default: the checkpoint's own, 200 for a new model)."
        },
    )
    loss: str = field(
        default="margin_mse",
        metadata={"help": "Training loss (a key of hf_kd.losses.LOSSES).", "choices": list(LOSSES)},
    )
    loss_kwargs: dict | str | None = field(
        default=None,
        metadata={"help": 'Hyper-parameters of the loss (mapping or JSON string), e.g. {"temperature": 2.0}.'},
    )
    train_files: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Teacher-score training data: hf-kd dataset folders, Parquet, JSON lines, `save_to_disk` folders, "
            "TSV (`query pos neg` or `pos_score neg_score query pos neg`) or Hub datasets "
            "hf://datasets/ORG/NAME[@REVISION][/SUBSET]; several are concatenated. Id forms are joined to their "
            "texts per batch."
        },
    )
    train_queries: str | None = field(
        default=None,
        metadata={
            "help": "Query texts of id-form training data (`query_id`, ...): TSV `qid<TAB>text`, Parquet, or "
            "hf://datasets/ORG/NAME[@REVISION]/SUBSET; defaults to those stored with the data."
        },
    )
    train_collection: str | None = field(
        default=None,
        metadata={
            "help": "Passage texts of id-form training data: TSV `pid<TAB>text`, Parquet, or "
            "hf://datasets/ORG/NAME[@REVISION]/SUBSET; defaults to those stored with the data."
        },
    )
    skip_missing_ids: bool = field(
        default=False,
        metadata={
            "help": "Leave out training rows whose ids have no text, listing them in OUTPUT_DIR/missing_ids.tsv, "
            "instead of stopping at the first."
        },
    )
    streaming: bool = field(
        default=False,
        metadata={
            "help": "Stream the training rows (an IterableDataset, needs max_steps); texts are joined per batch."
        },
    )
    pos_score_column: str = field(default="pos_score", metadata={"help": "Column of the positive's teacher score."})
    neg_score_column: str = field(default="neg_score", metadata={"help": "Column of the negative's teacher score."})
    margin_column: str = field(default="margin", metadata={"help": "Column of the teacher margin (pos - neg)."})
    scores_column: str = field(
        default="scores", metadata={"help": "Column of the n-way teacher scores (list, first is the positive)."}
    )
    dev_queries: str | None = field(default=None, metadata={"help": "Dev queries TSV `qid<TAB>text`."})
    dev_collection: str | None = field(default=None, metadata={"help": "Dev passages TSV `pid<TAB>text`."})
    dev_run: str | None = field(
        default=None, metadata={"help": "Dev candidates, TREC run `qid Q0 pid rank score tag`."}
    )
    dev_qrels: str | None = field(default=None, metadata={"help": "Dev judgements, TREC qrels `qid 0 pid grade`."})
    dev_top_k: int = field(default=100, metadata={"help": "Candidates re-ranked per dev query."})
    dev_rel_threshold: int = field(
        default=2, metadata={"help": "Smallest grade counted as relevant by MRR@10 (2 for TREC-DL, 1 for binary)."}
    )
    non_backbone_learning_rate: float | None = field(
        default=None,
        metadata={
            "help": "Learning rate of the parameters outside the pretrained encoder (heads, projections, TK's "
            "kernels and layers; the paper uses 1e-4 for TK). Defaults to learning_rate."
        },
    )
    backbone_dropout: float | None = field(
        default=None,
        metadata={
            "help": "Dropout of the pretrained encoder while training (its hidden and attention dropout; 0 turns it "
            "off, so that the student's margins carry no dropout noise). Defaults to the backbone's own (0.1 for "
            "BERT and MiniLM)."
        },
    )
    early_stopping_patience: int | None = field(
        default=None,
        metadata={
            "help": "Stop after this many evaluations without improvement of metric_for_best_model (needs a dev set "
            "and load_best_model_at_end)."
        },
    )
    group_by_length: bool = field(
        default=False,
        metadata={"help": "Batch examples of similar length together (less padding); sets the length sampler."},
    )
    tokenization_cache_size: int = field(
        default=1_000_000,
        metadata={"help": "Token-id lists kept per text so later epochs skip tokenisation; 0 disables the cache."},
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Start over, deleting the checkpoints in output_dir. By default a run resumes from the last "
            "complete checkpoint in output_dir when it is of the same run (same config and data)."
        },
    )

    def __post_init__(self) -> None:
        for name in ("backbone_config", "model_config", "loss_kwargs"):
            value = getattr(self, name)
            if isinstance(value, str):
                try:
                    value = json.loads(value)
                except json.JSONDecodeError as error:
                    raise ConfigError(f"{name}: expected a JSON object, got {value!r} ({error})") from None
            if value is not None and not isinstance(value, dict):
                raise ConfigError(f"{name}: expected a mapping, got {type(value).__name__}")
            setattr(self, name, value)
        self.model_config = self.model_config or {}
        self.loss_kwargs = self.loss_kwargs or {}

    @property
    def dev_files(self) -> dict[str, str | None]:
        return {
            "dev_queries": self.dev_queries,
            "dev_collection": self.dev_collection,
            "dev_run": self.dev_run,
            "dev_qrels": self.dev_qrels,
        }

    def validate(self) -> None:
        """Checks everything that can be checked without reading data; raises `ConfigError` naming the field."""
        sources = {
            "backbone": self.backbone,
            "backbone_config": self.backbone_config,
            "model_name_or_path": self.model_name_or_path,
        }
        given = [name for name, value in sources.items() if value]
        if len(given) != 1:
            raise ConfigError(
                f"give exactly one of backbone, backbone_config and model_name_or_path, got {given or 'none'}"
            )
        if self.backbone_config and not self.tokenizer_name_or_path:
            raise ConfigError("backbone_config builds a random encoder: also set tokenizer_name_or_path")
        if self.architecture not in MODEL_CLASSES:
            raise ConfigError(f"architecture: unknown {self.architecture!r}; choose one of {', '.join(MODEL_CLASSES)}")
        known_config_keys = set(MODEL_CLASSES[self.architecture].config_class().to_dict())
        unknown_config_keys = sorted(set(self.model_config) - known_config_keys)
        if unknown_config_keys:
            raise ConfigError(
                f"model_config: {unknown_config_keys} are not fields of the {self.architecture} config; "
                f"see {MODEL_CLASSES[self.architecture].config_class.__name__}"
            )
        for name in ("max_query_length", "max_passage_length"):
            value, in_config = getattr(self, name), self.model_config.get(name)
            if value is not None and in_config is not None and value != in_config:
                raise ConfigError(f"{name} is given twice: {value} as {name} and {in_config} in model_config")
        if self.loss not in LOSSES:
            raise ConfigError(f"loss: unknown {self.loss!r}; choose one of {', '.join(sorted(LOSSES))}")
        if not self.train_files:
            raise ConfigError("train_files: no training data given")
        for path in self.train_files:
            if not path.startswith("hf://") and not os.path.exists(path):
                raise ConfigError(f"train_files: {path} does not exist")
        for name in ("train_queries", "train_collection"):
            path = getattr(self, name)
            if path and not path.startswith("hf://") and not os.path.exists(path):
                raise ConfigError(f"{name}: {path} does not exist")
        dev_given = {name: path for name, path in self.dev_files.items() if path}
        if dev_given and len(dev_given) != len(self.dev_files):
            missing = sorted(set(self.dev_files) - set(dev_given))
            raise ConfigError(f"a dev set needs dev_queries, dev_collection, dev_run and dev_qrels; missing {missing}")
        for name, path in dev_given.items():
            if not os.path.isfile(path):
                raise ConfigError(f"{name}: {path} does not exist")
        for name in ("max_query_length", "max_passage_length", "dev_top_k"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.backbone_dropout is not None and not 0.0 <= self.backbone_dropout < 1.0:
            raise ConfigError(f"backbone_dropout must be in [0, 1), got {self.backbone_dropout}")
        if self.non_backbone_learning_rate is not None and self.non_backbone_learning_rate < 0:
            raise ConfigError(f"non_backbone_learning_rate must be >= 0, got {self.non_backbone_learning_rate}")


def build_parser(**kwargs: Any) -> HfArgumentParser:
    """The parser of `--config` plus the fields of `HfKdArguments` and `TrainingArguments`.

    Keyword arguments go to `argparse.ArgumentParser` (e.g. `add_help=False` for a parent parser).
    """
    parser = HfArgumentParser((HfKdArguments, TrainingArguments), **kwargs)
    parser.add_argument(
        "--config", default=None, help="YAML file of field values; command-line values override the file's."
    )
    return parser


def _typed_config_values(config: dict[str, Any], parser: HfArgumentParser, source: str) -> dict[str, Any]:
    """The config file's values with the types the command line would give them (YAML 1.1 reads `7e-6` as a
    string). `None` values and empty lists keep the field's default. Unknown keys raise `ConfigError` naming
    `source`."""
    names = field_names()
    actions = {action.dest: action for action in parser._actions if action.dest in names}
    values: dict[str, Any] = {}
    for key, value in config.items():
        if key not in actions:
            raise ConfigError(f"{source}: unknown key {key!r}; see `--help` for the fields")
        if value is None or value == []:
            continue
        convert = actions[key].type
        try:
            if callable(convert) and isinstance(value, str):
                value = convert(value)
            elif callable(convert) and isinstance(value, list):
                value = [convert(item) if isinstance(item, str) else item for item in value]
        except (TypeError, ValueError) as error:
            raise ConfigError(f"{source}: {key}: {error}") from None
        values[key] = value
    return values


def explicit_parser(**kwargs: Any) -> HfArgumentParser:
    """`build_parser` whose namespace holds only the values given on the command line (no defaults, nothing
    required): the config file supplies the rest."""
    parser = build_parser(**kwargs)
    for action in parser._actions:
        action.default = argparse.SUPPRESS
        action.required = False
    return parser


def resolve_train_args(explicit: dict[str, Any]) -> tuple[HfKdArguments, TrainingArguments]:
    """`(HfKdArguments, TrainingArguments)` from the command line's own values (converted by argparse; `config`
    names the YAML file), which override the file's, through `HfArgumentParser.parse_dict`.

    Where neither gives `bf16` (nor `fp16: true`), the precision is the processor's (see
    `hf_kd.training.precision.default_bf16`): bfloat16 autocast on a CPU with AMX or AVX-512 BF16, float32 elsewhere.

    Raises:
        ConfigError: a missing or malformed config file, or an unknown key in it.
    """
    parser = build_parser()
    explicit = dict(explicit)
    config_path = explicit.pop("config", None)
    values = _typed_config_values(load_yaml_config(config_path), parser, config_path) if config_path else {}
    names = field_names()
    values.update({key: value for key, value in explicit.items() if key in names})
    if not values.get("bf16") and not values.get("fp16") and "bf16" not in values:
        import torch

        from .precision import default_bf16

        on_cuda = torch.cuda.is_available() and not values.get("use_cpu")
        values["bf16"], _ = default_bf16(on_cuda)
        if values["bf16"] and not on_cuda:
            values["use_cpu"] = True  # the Trainer's bfloat16 autocast on a CPU
    hf_kd_args, training_args = parser.parse_dict(values)
    return hf_kd_args, training_args


def load_yaml_config(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config: {path} does not exist")
    with open(path, encoding="utf-8") as handle:
        try:
            config = yaml.safe_load(handle) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: expected a mapping of field names to values, got {type(config).__name__}")
    return config


def field_names() -> set[str]:
    """Every key a config file may set."""
    return {f.name for dataclass_type in (HfKdArguments, TrainingArguments) for f in fields(dataclass_type) if f.init}


def parse_train_args(argv: Sequence[str] | None = None) -> tuple[HfKdArguments, TrainingArguments]:
    """Parses `[--config file.yaml] [--key value ...]` into `(HfKdArguments, TrainingArguments)`; the command
    line's values override the file's.

    Raises:
        ConfigError: a missing or malformed config file, or an unknown key in it.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    return resolve_train_args(vars(explicit_parser().parse_args(argv)))
