"""The `hf-kd` command line: thin wrappers over the package's modules."""

from __future__ import annotations

import argparse
import importlib
import sys

# Each module registers its subcommands on the shared parser with `add_subcommands(subparsers)`.
COMMAND_MODULES = (
    "hf_kd.data.commands",
    "hf_kd.training.commands",
    "hf_kd.teachers.commands",
    "hf_kd.evaluation.commands",
    "hf_kd.hub.commands",
    "hf_kd.reproduce.commands",
)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="hf-kd",
        description="Cross-architecture knowledge distillation for passage ranking: data, training, teachers, "
        "evaluation and Hub publishing.",
    )
    parser.add_argument("--version", action="version", version=f"hf-kd {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).add_subcommands(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
