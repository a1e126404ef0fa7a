"""The `hf-kd train` subcommand: the same code as `train_scripts/train.py`."""

from __future__ import annotations

import argparse
from typing import Any

from .arguments import explicit_parser, field_names
from .run import main

__all__ = ["add_subcommands"]


def _run_train(namespace: argparse.Namespace) -> int:
    names = field_names() | {"config"}
    return main(explicit_values={key: value for key, value in vars(namespace).items() if key in names})


def add_subcommands(subparsers: Any) -> None:
    """Registers `train` on an `argparse` subparsers object; the parsed namespace's `func(namespace)` runs it.

    `hf-kd train --config file.yaml [--key value ...]` accepts every field of `HfKdArguments` and
    `TrainingArguments`; values given on the command line override the file's.
    """
    # only values given on the command line reach the namespace; the YAML file supplies the rest
    fields_parser = explicit_parser(add_help=False)
    train = subparsers.add_parser(
        "train",
        parents=[fields_parser],
        help="train a ranking model from teacher scores (Margin-MSE and baseline losses)",
        description="Train a ranking model: --config file.yaml plus --key value overrides.",
    )
    train.set_defaults(func=_run_train)
