"""`hf-kd` subcommands of the Hub package: `push` (a checkpoint) and `push-scores` (a teacher-score dataset)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

__all__ = ["add_subcommands"]


def _report_errors(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Prints the errors a user can fix (bad folder, no token, refused or failed upload) instead of a traceback:
    exit status 2 for the input, 1 for the Hub."""

    def run(args: argparse.Namespace) -> int:
        from huggingface_hub.errors import HfHubHTTPError

        from .push import HubTokenError, HubUploadError

        try:
            return command(args)
        except (FileNotFoundError, ValueError, HubTokenError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        except (HubUploadError, HfHubHTTPError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 1

    return run


def run_push(args: argparse.Namespace) -> int:
    from .push import push_model

    card_fields = {
        key: value
        for key, value in {
            "license": args.license,
            "base_model": args.base_model,
            "datasets": args.dataset,
            "teacher": args.teacher,
        }.items()
        if value
    }
    commit = push_model(
        args.folder,
        args.repo_id,
        private=args.private,
        revision=args.revision,
        token=args.token,
        commit_message=args.commit_message,
        **card_fields,
    )
    print(f"pushed {args.folder} to {commit.commit_url} (revision {commit.oid})")
    return 0


def run_push_scores(args: argparse.Namespace) -> int:
    from .push import push_scores

    card_fields = {
        key: value
        for key, value in {"license": args.license, "pretty_name": args.pretty_name, "teachers": args.teacher}.items()
        if value
    }
    commit = push_scores(
        args.dataset,
        args.repo_id,
        private=args.private,
        revision=args.revision,
        token=args.token,
        commit_message=args.commit_message,
        max_shard_rows=args.max_shard_rows,
        **card_fields,
    )
    print(f"pushed {args.dataset} to {commit.commit_url} (revision {commit.oid})")
    return 0


def _add_common_arguments(parser: argparse.ArgumentParser, commit_message: str) -> None:
    parser.add_argument("--repo-id", required=True, help="Hub repository ORG/NAME (created if missing)")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--revision", help="branch to commit to (created from main if missing; default: main)")
    parser.add_argument("--token", help="write token (default: HF_TOKEN or the stored `hf auth login`)")
    parser.add_argument(
        "--commit-message", default=commit_message, help=f"commit summary (default: {commit_message!r})"
    )
    parser.add_argument("--license", help="license identifier for the card")


def add_subcommands(subparsers) -> None:
    push = subparsers.add_parser(
        "push",
        help="upload a checkpoint folder with its model card to the Hub",
        description="Uploads DIR (safetensors weights, tokenizer, config with auto_map, modeling code) and a "
        "model card rendered from model_cards/<architecture>.md, with metrics.json, latency.json and "
        "train_summary.json of the folder, in one commit. The folder is only read.",
    )
    push.add_argument("folder", metavar="DIR", help="checkpoint folder saved by an hf-kd model's save_pretrained")
    _add_common_arguments(push, "Upload hf-kd checkpoint")
    push.add_argument("--base-model", help="Hub id of the backbone (default: the config's backbone, if a Hub id)")
    push.add_argument(
        "--dataset", action="append", help="Hub id of a teacher-score dataset it was trained on (repeatable)"
    )
    push.add_argument("--teacher", help="the teacher, e.g. 'BERT-Base_CAT' (default: from the training data)")
    push.set_defaults(func=_report_errors(run_push))

    scores = subparsers.add_parser(
        "push-scores",
        help="upload a teacher-score dataset as Parquet shards with a dataset card to the Hub",
        description="Uploads DATASET (written by hf-kd: Parquet shards or save_to_disk) as "
        "data/train-XXXXX-of-YYYYY.parquet with a dataset card, so that datasets.load_dataset(REPO_ID) returns "
        "its rows.",
    )
    scores.add_argument("dataset", metavar="DATASET", help="teacher-score dataset folder")
    _add_common_arguments(scores, "Upload hf-kd teacher scores")
    scores.add_argument("--pretty-name", help="human-readable name of the dataset")
    scores.add_argument("--teacher", action="append", help="teacher model, overriding the provenance (repeatable)")
    scores.add_argument("--max-shard-rows", type=int, default=1_000_000, help="rows per Parquet shard")
    scores.set_defaults(func=_report_errors(run_push_scores))
