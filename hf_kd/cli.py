"""The `hf-kd` command line: thin wrappers over the package's modules.

Every failure ends in one line on stderr, `hf-kd <command>: error: <what and where>`, and exit status 1; `--debug`
(anywhere on the line) or `HF_KD_DEBUG=1` shows the full traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# Each module registers its subcommands on the shared parser with `add_subcommands(subparsers)`.
COMMAND_MODULES = (
    "hf_kd.data.commands",
    "hf_kd.mining",
    "hf_kd.training.commands",
    "hf_kd.teachers.commands",
    "hf_kd.evaluation.commands",
    "hf_kd.hub.commands",
    "hf_kd.reproduce.commands",
    "hf_kd.adapt.commands",
)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="hf-kd",
        description="Cross-architecture knowledge distillation for passage ranking: data, training, teachers, "
        "evaluation and Hub publishing.",
    )
    parser.add_argument("--version", action="version", version=f"hf-kd {__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        dest="hf_kd_debug",
        help="show the full traceback of an error (also: HF_KD_DEBUG=1; any position)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).add_subcommands(subparsers)
    return parser


def _network_error_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = []
    for module_name in ("httpx2", "httpx"):  # huggingface_hub's HTTP clients, by version
        try:
            types.append(importlib.import_module(module_name).TransportError)
        except ImportError:
            pass
    try:
        import requests

        types.append(requests.ConnectionError)
    except ImportError:
        pass
    return tuple(types)


def error_line(error: BaseException) -> str:
    """One line that says what failed: the error's message with its white space collapsed, prefixed by its type
    unless it is one of the errors the package raises with a complete message."""
    from huggingface_hub.errors import HFValidationError
    from safetensors import SafetensorError

    from .data.errors import DataFormatError
    from .files import unreadable_weights_message
    from .jobs import JobLockedError

    if isinstance(error, SafetensorError):  # raised by a loader that did not name its file: find it
        return " ".join(unreadable_weights_message(error).split())
    message = " ".join(str(error).split())
    if isinstance(error, _network_error_types()):
        request = getattr(error, "request", None)
        url = getattr(request, "url", None) if request is not None else None
        where = f" {url}" if url else ""
        return f"cannot reach{where}: {message or type(error).__name__} (check the network and HF_ENDPOINT)"
    if isinstance(error, HFValidationError):
        return f"not a local folder, and not a Hub repo id: {message}"
    if isinstance(error, OSError) and error.filename and str(error.filename) not in message:
        return f"{message or error.strerror}: {error.filename}"
    if isinstance(error, (DataFormatError, JobLockedError, ValueError, OSError)) and message:
        return message
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # a bare `--debug`, not `hf-kd train --debug underflow_overflow` (a TrainingArguments field with a value)
    flags = [i for i, arg in enumerate(argv) if arg == "--debug" and (i + 1 == len(argv) or argv[i + 1][:1] == "-")]
    debug = bool(flags) or os.environ.get("HF_KD_DEBUG", "") not in ("", "0")
    argv = [arg for i, arg in enumerate(argv) if i not in flags]
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except Exception as error:  # the command line's boundary: one line, the traceback behind --debug
        if debug:
            raise
        print(f"hf-kd {args.command}: error: {error_line(error)} (--debug shows the traceback)", file=sys.stderr)
        return 1
    finally:
        if "torch.distributed" in sys.modules:  # a command that never imported it opened no process group
            from .processes import end_job_processes

            end_job_processes()


if __name__ == "__main__":
    sys.exit(main())
