"""The `hf-kd train` subcommand: the same code as `train_scripts/train.py`."""

from __future__ import annotations

import argparse
from typing import Any

from .arguments import _value_to_argv, build_parser, field_names
from .run import main

__all__ = ["add_subcommands"]


def _explicit_argv(namespace: argparse.Namespace) -> list[str]:
    """The command line's own values (defaults were suppressed) as `--key value` arguments."""
    argv: list[str] = []
    for key, value in vars(namespace).items():
        if key == "config" or key in field_names():
            argv += [f"--{key}", *_value_to_argv(value)]
    return argv


def _run_train(namespace: argparse.Namespace) -> int:
    return main(_explicit_argv(namespace))


def add_subcommands(subparsers: Any) -> None:
    """Registers `train` on an `argparse` subparsers object; the parsed namespace's `func(namespace)` runs it.

    `hf-kd train --config file.yaml [--key value ...]` accepts every field of `HfKdArguments` and
    `TrainingArguments`; values given on the command line override the file's.
    """
    fields_parser = build_parser(add_help=False)
    # only values given on the command line reach the namespace; the YAML file supplies the rest
    for action in fields_parser._actions:
        action.default = argparse.SUPPRESS
    train = subparsers.add_parser(
        "train",
        parents=[fields_parser],
        help="train a ranking model from teacher scores (Margin-MSE and baseline losses)",
        description="Train a ranking model: --config file.yaml plus --key value overrides.",
    )
    train.set_defaults(func=_run_train)
