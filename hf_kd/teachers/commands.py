"""`hf-kd score`, `hf-kd ensemble` and `hf-kd analyze-scores`: thin command-line wrappers of `hf_kd.teachers`."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..data.writers import check_output_folder
from ..evaluation.loading import INFERENCE_DTYPES
from ..files import naming_weight_files
from ..processes import job_processes
from .analysis import SUMMARY_FILENAME, analyze_scores
from .bm25_teacher import BM25_PREFIX
from .ensemble import NORMALIZATIONS, ensemble_score_datasets
from .loading import load_teacher
from .run_teacher import RUN_PREFIX
from .scoring import DEFAULT_BATCH_SIZE, DEFAULT_SHARD_SIZE, MISSING_POLICIES, score_triples

__all__ = ["add_subcommands"]


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return number


def _non_negative_int(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return number


def _looks_like_a_path(name_or_path: str) -> bool:
    """A folder path rather than a Hub id (`name` or `namespace/name`)."""
    return (
        name_or_path.startswith(("/", ".", "~"))
        or name_or_path.count("/") > 1
        or os.sep != "/"
        and os.sep in name_or_path
    )


def _load_teachers(args: argparse.Namespace, device: str | None) -> list:
    teachers = []
    for name_or_path in args.teacher:
        if not name_or_path.startswith((RUN_PREFIX, BM25_PREFIX)) and not Path(name_or_path).exists():
            if _looks_like_a_path(name_or_path):
                raise FileNotFoundError(f"teacher folder not found: {name_or_path}")
        with naming_weight_files(name_or_path):
            teachers.append(
                load_teacher(
                    name_or_path,
                    device=device,
                    dtype=getattr(args, "dtype", None),
                    max_length=args.max_length,
                    queries=args.queries,
                    collection=args.collection,
                )
            )
    return teachers


def run_score(args: argparse.Namespace) -> int:
    check_output_folder(args.out, args.overwrite)  # before the teachers load
    processes = job_processes(args.device)  # under `accelerate launch`: each process on its own GPU, or the CPU
    device = args.device if args.device is not None or processes is None else str(processes.device)
    teachers = _load_teachers(args, device)
    result = score_triples(
        teachers,
        args.triples,
        args.out,
        batch_size=args.batch_size,
        max_batch_tokens=args.max_batch_tokens,
        bf16=args.bf16,
        shard_size=args.shard_size,
        normalize=args.normalize,
        rescale_to=args.rescale_to,
        missing=args.missing,
        overwrite=args.overwrite,
    )
    if processes is not None and not processes.is_main_process:
        return 0  # the main process reports
    resumed = f", {result.resumed_pairs:,} resumed from an earlier run" if result.resumed_pairs else ""
    print(
        f"{result.triples:,} triples, {result.distinct_pairs:,} distinct pairs x {len(teachers)} teacher(s): "
        f"{result.scored_pairs:,} pairs scored{resumed}{_split(result)} in {result.seconds:.1f} s -> {result.out}"
    )
    if result.dropped_triples:
        lacking = ", ".join(f"{name} {count:,}" for name, count in result.missing_by_teacher.items() if count)
        print(
            f"{result.dropped_triples:,} triples left out: a teacher has no score for one of their pairs "
            f"(triples lacking a score by teacher: {lacking}); recorded in the dataset's provenance"
        )
    elif result.missing_by_teacher and any(result.missing_by_teacher.values()):
        lacking = ", ".join(f"{name} {count:,}" for name, count in result.missing_by_teacher.items() if count)
        print(
            f"kept triples some teachers have no score for, their ensemble is the mean of the others (triples "
            f"lacking a score by teacher: {lacking}); recorded in the dataset's provenance"
        )
    return 0


def _split(result) -> str:
    if len(result.processes) < 2:
        return ""
    return " (" + ", ".join(f"{p['pairs']:,} by process {p['rank']}" for p in result.processes) + ")"


def run_ensemble(args: argparse.Namespace) -> int:
    rows = ensemble_score_datasets(
        args.scores, args.out, normalize=args.normalize, rescale_to=args.rescale_to, overwrite=args.overwrite
    )
    print(f"{rows:,} triples, mean of the teachers of {len(args.scores)} dataset(s) -> {args.out}")
    return 0


def run_analyze_scores(args: argparse.Namespace) -> int:
    summary = analyze_scores(
        args.scores,
        args.out,
        models=args.model,
        batch_size=args.batch_size,
        bf16=args.bf16,
        device=args.device,
        max_triples=args.max_triples,
    )
    for name, stats in summary["scorers"].items():
        pos, neg, margin = stats["pos"], stats["neg"], stats["margin"]
        print(
            f"{name:>24}  pos {pos['mean']:8.3f} +- {pos['std']:6.3f}  neg {neg['mean']:8.3f} +- {neg['std']:6.3f}  "
            f"margin {margin['mean']:8.3f}  positive first {stats['positive_ranked_first']:.1%}"
        )
    print(f"{', '.join(summary['plots'])} and {SUMMARY_FILENAME} written to {args.out}")
    return 0


_RESCALE_HELP = (
    "give the normalised ensemble the units of this teacher (its name: the folder or run file name), e.g. a "
    "cosine teacher for a cosine student"
)


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    """Registers `score`, `ensemble` and `analyze-scores` on the `hf-kd` parser's subparsers."""
    _add_score_parser(subparsers)
    _add_ensemble_parser(subparsers)
    _add_analyze_scores_parser(subparsers)


def _add_score_parser(subparsers: argparse._SubParsersAction) -> None:
    """Registers `hf-kd score`."""
    score = subparsers.add_parser(
        "score",
        help="score triples with one or several teachers into a teacher-score dataset",
        description="Scores every distinct (query, passage) pair of the triples once per teacher, in length-sorted "
        "batches, and writes the teacher-score dataset (Parquet shards + provenance). A killed run resumes from its "
        "finished shards when started again with the same arguments. Under `accelerate launch --num_processes N` the "
        "N processes share the shards and the main process writes the dataset.",
    )
    score.add_argument(
        "--teacher",
        action="append",
        required=True,
        metavar="PATH_OR_HUB_ID",
        help="a teacher: an hf-kd checkpoint, a sentence-transformers CrossEncoder or SentenceTransformer "
        "(bi-encoder, scored with its own similarity), an AutoModelForSequenceClassification with one logit, or "
        "run:PATH, a TREC run file with scores (needs --queries and --collection), or bm25:CORPUS, BM25 over a BEIR "
        "folder or collection TSV for any pair of its passages; repeat for an ensemble",
    )
    score.add_argument("--queries", default=None, help="qid<TAB>text file of the queries of run: teachers")
    score.add_argument("--collection", default=None, help="pid<TAB>text file of the passages of run: teachers")
    score.add_argument(
        "--missing",
        choices=MISSING_POLICIES,
        default="drop",
        help="a triple a teacher has no score for (a pair its run lacks): drop it and count it (default), fail, or "
        "keep it when another teacher scores it (partial: the ensemble is the mean of the teachers that do)",
    )
    score.add_argument(
        "--triples",
        required=True,
        help="query<TAB>positive<TAB>negative TSV, Parquet file, or triples dataset folder",
    )
    score.add_argument("--out", required=True, help="the teacher-score dataset folder to create")
    score.add_argument("--batch-size", type=_positive_int, default=DEFAULT_BATCH_SIZE, help="pairs per forward pass")
    score.add_argument(
        "--max-batch-tokens",
        type=_non_negative_int,
        default=None,
        help="tokens per forward pass at most, pairs x the batch's longest (default: 2048 on a CPU, where bigger "
        "batches only spill the caches, no cap on a GPU; 0: no cap)",
    )
    score.add_argument(
        "--shard-size", type=_positive_int, default=DEFAULT_SHARD_SIZE, help="distinct pairs per resumable shard"
    )
    score.add_argument("--bf16", action="store_true", help="run the teachers under bfloat16 autocast")
    score.add_argument(
        "--dtype",
        choices=INFERENCE_DTYPES,
        default=None,
        help="the precision of the teachers' weights (default: each checkpoint's): bfloat16, or int8 (torchao, the "
        "int8 extra; faster only on a CPU with VNNI or AMX) or onnx-int8 (the encoder's int8 export run by ONNX "
        "Runtime, the onnx extra; on a CPU); scores come back in float32 and the provenance records the precision",
    )
    score.add_argument(
        "--max-length",
        type=_positive_int,
        default=None,
        help="the most tokens of a cross-encoder's or classification model's pair input, of a bi-encoder's query and "
        "passage each (default: the model's own limit); hf-kd checkpoints keep their config's lengths",
    )
    score.add_argument(
        "--normalize",
        choices=NORMALIZATIONS,
        default="none",
        help="per-teacher normalisation before averaging several teachers, over the dataset or per query "
        "(default: none, the paper's T2; teachers of different kinds need one)",
    )
    score.add_argument("--rescale-to", default=None, metavar="TEACHER", help=_RESCALE_HELP)
    score.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    score.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    score.set_defaults(func=run_score)


def _add_ensemble_parser(subparsers: argparse._SubParsersAction) -> None:
    """Registers `hf-kd ensemble`."""
    ensemble = subparsers.add_parser(
        "ensemble",
        help="average the teachers of teacher-score datasets of the same triples",
        description="Builds the mean ensemble (the paper's T2) of the teachers of one or several teacher-score "
        "datasets of the same triples; each teacher's raw scores stay in pos_score_<teacher>/neg_score_<teacher>.",
    )
    ensemble.add_argument(
        "--scores", action="append", required=True, help="a teacher-score dataset folder; repeat for each input"
    )
    ensemble.add_argument("--out", required=True, help="the ensemble dataset folder to create")
    ensemble.add_argument(
        "--normalize", choices=NORMALIZATIONS, default="none", help="per-teacher normalisation before averaging"
    )
    ensemble.add_argument("--rescale-to", default=None, metavar="TEACHER", help=_RESCALE_HELP)
    ensemble.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    ensemble.set_defaults(func=run_ensemble)


def _add_analyze_scores_parser(subparsers: argparse._SubParsersAction) -> None:
    """Registers `hf-kd analyze-scores`."""
    analyze = subparsers.add_parser(
        "analyze-scores",
        help="plot score and margin distributions of teachers and students",
        description="Draws the score distributions on positives and negatives, and the margin distributions, of "
        "each teacher of a teacher-score dataset and of each --model, as PNG files with summary statistics in JSON.",
    )
    analyze.add_argument("--scores", required=True, help="a teacher-score dataset folder")
    analyze.add_argument("--out", required=True, help="folder for the PNG files and score_summary.json")
    analyze.add_argument(
        "--model", action="append", default=[], help="a student (or other) checkpoint to score the same triples"
    )
    analyze.add_argument("--max-triples", type=_positive_int, default=None, help="analyse only the first N triples")
    analyze.add_argument("--batch-size", type=_positive_int, default=DEFAULT_BATCH_SIZE, help="pairs per forward pass")
    analyze.add_argument("--bf16", action="store_true", help="run the models under bfloat16 autocast")
    analyze.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    analyze.set_defaults(func=run_analyze_scores)
