"""The `hf-kd train` subcommand (the same code as `train_scripts/train.py`) and `hf-kd average-checkpoints`."""

from __future__ import annotations

import argparse
from typing import Any

from .arguments import explicit_parser, field_names
from .run import main

__all__ = ["add_subcommands"]


def _run_train(namespace: argparse.Namespace) -> int:
    names = field_names() | {"config"}
    return main(explicit_values={key: value for key, value in vars(namespace).items() if key in names})


def _run_average(namespace: argparse.Namespace) -> int:
    from .averaging import average_checkpoints

    out = average_checkpoints(namespace.checkpoints, namespace.out, namespace.weights, overwrite=namespace.overwrite)
    print(f"{len(namespace.checkpoints)} checkpoints averaged -> {out}")
    return 0


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
    average = subparsers.add_parser(
        "average-checkpoints",
        help="average the weights of students of one architecture (a model soup) into a new checkpoint",
        description="Averages every weight of two or more checkpoints of one architecture (e.g. students distilled "
        "from the same backbone on different samplings of the teacher's pairs) into a complete new checkpoint.",
    )
    average.add_argument("checkpoints", nargs="+", help="checkpoint folders with equal configs")
    average.add_argument("--out", required=True, help="the checkpoint folder to create")
    average.add_argument("--weights", type=float, nargs="+", default=None, help="one weight per checkpoint")
    average.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    average.set_defaults(func=_run_average)
