"""`hf-kd` subcommands of the Hub package: `push` (a checkpoint), `push-scores` (a teacher-score dataset) and
`import` (one of the paper's released checkpoints)."""

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
        metrics=args.metrics or (),
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


def run_import(args: argparse.Namespace) -> int:
    import json

    from .released import import_released

    backbone_config = None
    if args.backbone_config:
        from ..files import read_json_file

        backbone_config = read_json_file(args.backbone_config)
        if not isinstance(backbone_config, dict):
            raise ValueError(f"{args.backbone_config}: expected a JSON object of DistilBERT config values")
    model, layout = import_released(
        args.source,
        args.out,
        tokenizer=args.tokenizer,
        revision=args.revision,
        backbone_config=backbone_config,
        split_layer=args.split_layer,
    )
    kept = {key: getattr(model.config, key) for key in IMPORT_SETTINGS[layout.architecture]}
    name = type(model).__name__
    print(f"imported {args.source} ({layout.name} layout) as {name} into {args.out}: {json.dumps(kept)}")
    return 0


# config values of each imported architecture that the import sets (printed after an import)
IMPORT_SETTINGS = {
    "bert_dot": ("pooling", "compression_dim", "max_query_length", "max_passage_length"),
    "bert_cat": ("max_query_length", "max_passage_length"),
    "colbert": ("compression_dim", "query_augmentation_tokens", "max_query_length", "max_passage_length"),
    "prett": ("split_layer", "passage_positions", "max_query_length", "max_passage_length"),
}


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
        "train_summary.json of the folder, in one commit. The folder is only read. The card's model-index holds "
        "every evaluation `hf-kd evaluate --model DIR` recorded, and the --metrics files.",
    )
    push.add_argument("folder", metavar="DIR", help="checkpoint folder saved by an hf-kd model's save_pretrained")
    _add_common_arguments(push, "Upload hf-kd checkpoint")
    push.add_argument("--base-model", help="Hub id of the backbone (default: the config's backbone, if a Hub id)")
    push.add_argument(
        "--dataset", action="append", help="Hub id of a teacher-score dataset it was trained on (repeatable)"
    )
    push.add_argument("--teacher", help="the teacher, e.g. 'BERT-Base_CAT' (default: from the training data)")
    push.add_argument(
        "--metrics",
        action="append",
        metavar="FILE",
        help="metrics.json of `hf-kd evaluate` outside DIR, for the card's model-index (repeatable); evaluations "
        "of DIR are also found in DIR/metrics.json, DIR/*/metrics.json and DIR/hf_kd_evaluations.json",
    )
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

    released = subparsers.add_parser(
        "import",
        help="turn one of the paper's released checkpoints into an hf-kd checkpoint",
        description="Reads SOURCE (a folder or Hub id of sebastian-hofstaetter/distilbert-dot-margin_mse-T2-msmarco, "
        "distilbert-cat-margin_mse-T2-msmarco, colbert-distilbert-margin_mse-T2-msmarco or "
        "prettr-distilbert-split_at_3-margin_mse-T2-msmarco), recognises its layout from the state dict and writes "
        "the matching hf-kd checkpoint (BERT_DOT, BERT_CAT, ColBERT, PreTT) to --out.",
    )
    released.add_argument("source", metavar="SOURCE", help="released checkpoint: a local folder or a Hub model id")
    released.add_argument("--out", required=True, help="folder of the hf-kd checkpoint to write")
    released.add_argument(
        "--tokenizer",
        help="tokenizer folder or Hub id when SOURCE has none (the releases used distilbert-base-uncased)",
    )
    released.add_argument("--revision", help="Hub revision of SOURCE")
    released.add_argument(
        "--backbone-config", help="JSON file of DistilBERT config values, instead of the backbone the config names"
    )
    released.add_argument(
        "--split-layer", type=int, help="PreTTR's join layer, instead of the config's join_layer_idx (default 3)"
    )
    released.set_defaults(func=_report_errors(run_import))
