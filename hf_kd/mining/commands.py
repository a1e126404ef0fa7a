"""`hf-kd mine`: the command line of hard-negative mining."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..data.ir_files import read_beir, read_collection_tsv, read_qrels, read_queries_tsv, read_run
from ..data.writers import check_output_folder
from ..evaluation.commands import add_max_batch_tokens_argument
from .negatives import SAMPLING, find_positives, mine_hard_negatives, parse_rank_range
from .output import OUTPUT_FORMATS, write_mined


def _read_inputs(args: argparse.Namespace) -> tuple[dict, dict, dict, str, dict[str, str], list[Path]]:
    """(queries, collection, qrels, qrels file, sources for errors, source files) of `--beir` or the TSV files."""
    if args.beir is not None:
        if args.queries is not None or args.collection is not None:
            raise ValueError("--beir provides queries and corpus; do not combine it with --queries/--collection")
        data = read_beir(args.beir, args.split)
        qrels_path = args.beir / "qrels" / f"{args.split}.tsv"
        queries, collection, qrels = data.queries, data.corpus, data.qrels
        sources = {"queries": str(args.beir / "queries.jsonl"), "collection": str(args.beir / "corpus.jsonl")}
    else:
        if args.queries is None or args.collection is None or args.qrels is None:
            raise ValueError("give --qrels, --queries and --collection, or a BEIR folder with --beir")
        queries, collection = read_queries_tsv(args.queries), read_collection_tsv(args.collection)
        qrels, qrels_path = None, args.qrels
        sources = {"queries": str(args.queries), "collection": str(args.collection)}
    if args.qrels is not None:
        qrels, qrels_path = read_qrels(args.qrels), args.qrels
    files = [Path(sources["queries"]), Path(sources["collection"]), Path(qrels_path)]
    return queries, collection, qrels, str(qrels_path), sources, files


def _load_teacher(args: argparse.Namespace, queries, collection, device):
    if args.teacher is None:
        return None
    from ..files import naming_weight_files
    from ..teachers.loading import load_teacher
    from ..teachers.run_teacher import RUN_PREFIX

    if (
        not args.teacher.startswith(RUN_PREFIX)
        and not Path(args.teacher).exists()
        and args.teacher.startswith(("/", "."))
    ):
        raise FileNotFoundError(f"teacher folder not found: {args.teacher}")
    with naming_weight_files(args.teacher):
        return load_teacher(args.teacher, device=device, queries=queries, collection=collection)


def run_mine(args: argparse.Namespace) -> int:
    check_output_folder(args.out, args.overwrite)  # before anything is read or loaded
    if args.format == "nway" and args.teacher is None:
        raise ValueError("--format nway carries teacher scores: pass --teacher, or write triples and score them")
    queries, collection, qrels, qrels_path, sources, files = _read_inputs(args)
    run = read_run(args.run) if args.run is not None else None
    check = {"min_grade": args.min_grade, "skip_missing": args.skip_missing, "qrels_path": qrels_path}
    find_positives(qrels, queries, collection, sources=sources, **check)  # bad judgements fail before a model loads
    from ..processes import JobProcesses, job_processes

    processes = JobProcesses(job_processes(args.device))  # under `accelerate launch`: one device per process
    device = processes.device or args.device
    teacher = _load_teacher(args, queries, collection, device)
    result = mine_hard_negatives(
        queries,
        collection,
        qrels,
        retriever=args.retriever,
        candidates=run,
        num_negatives=args.num_negatives,
        rank_range=args.range,
        min_grade=args.min_grade,
        seed=args.seed,
        sampling=args.sampling,
        teacher=teacher,
        margin=args.margin,
        relative_margin=args.relative_margin,
        skip_missing=args.skip_missing,
        qrels_path=qrels_path,
        sources=sources,
        batch_size=args.batch_size,
        max_batch_tokens=args.max_batch_tokens,
        device=device,
        index=args.index,
        show_progress=processes.is_main,
    )
    if not processes.is_main:  # the main process writes the output and reports
        return 0
    extra = [args.run] if args.run is not None else []
    rows, left_out = write_mined(
        result,
        args.out,
        args.format,
        queries=queries,
        collection=collection,
        source_files=[*files, *extra],
        overwrite=args.overwrite,
    )
    stats = result.stats
    what = "n-way rows" if args.format == "nway" else "triples"
    print(f"{rows:,} {what} from {stats.positives:,} positives of {stats.queries:,} queries -> {args.out}")
    shares = stats.parameters.get("scoring", {}).get("processes", [])
    if len(shares) > 1:
        print("  teacher pairs scored: " + ", ".join(f"{s['pairs']:,} by process {s['rank']}" for s in shares))
    searched = stats.parameters.get("retrieval", {}).get("processes", [])
    if len(searched) > 1:
        print(
            "  first stage: "
            + ", ".join(
                f"{s['queries']:,} queries and {s['passages']:,} passages by process {s['rank']}" for s in searched
            )
        )
    filtered = ""
    if teacher is not None:
        filtered = f", within the teacher's margin or unscored {stats.teacher_filtered:,}"
        if stats.positives_without_teacher_score:
            filtered += f" (positives the teacher cannot score: {stats.positives_without_teacher_score:,})"
    print(
        f"  per positive, candidates in ranks {args.range[0]}-{args.range[1]}: {stats.candidates_in_range:,}, judged "
        f"relevant or a copy of the positive {stats.judged_candidates:,}{filtered}; positives without a negative "
        f"{stats.positives_without_negative:,}, short of negatives {stats.short_of_negatives:,}"
        + (f" (left out of the n-way rows: {left_out:,})" if left_out else "")
    )
    skipped = stats.skipped_queries_without_text + stats.skipped_positives_without_text
    if skipped:
        print(
            f"  left out for lack of text: {stats.skipped_queries_without_text:,} queries, "
            f"{stats.skipped_positives_without_text:,} positives"
        )
    return 0


def _rank_range(text: str) -> tuple[int, int]:
    try:
        return parse_rank_range(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    """Registers `mine` on the `hf-kd` parser's subparsers."""
    parser = subparsers.add_parser(
        "mine",
        help="mine hard negatives for judged queries with BM25 or a dense bi-encoder, optionally teacher-filtered",
        description="For each positive (judged grade >= --min-grade), draws --num-negatives negatives from the "
        "first stage's ranks --range MIN:MAX, never a passage judged above grade 0; with --teacher, only candidates "
        "the teacher scores below the positive by --margin / --relative-margin. Writes triples (a dataset folder or "
        "TSV) for `hf-kd score`, or n-way rows with the teacher's scores for `hf-kd train`.",
    )
    parser.add_argument("--queries", type=Path, help="queries TSV (qid<TAB>text)")
    parser.add_argument("--collection", type=Path, help="collection TSV (pid<TAB>text)")
    parser.add_argument(
        "--qrels", type=Path, help="TREC (qid 0 pid grade) or BEIR qrels (default with --beir: its split)"
    )
    parser.add_argument("--beir", type=Path, help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/)")
    parser.add_argument("--split", default="train", help="BEIR qrels split (default: %(default)s)")
    parser.add_argument(
        "--retriever",
        default="bm25",
        metavar="bm25|MODEL",
        help="first stage: bm25 (bm25s), or a BERT_DOT checkpoint or sentence-transformers bi-encoder folder "
        "(exact faiss search) (default: %(default)s)",
    )
    parser.add_argument("--run", type=Path, help="take the candidates from this TREC run instead of --retriever")
    parser.add_argument(
        "--index",
        type=Path,
        help="search this `hf-kd index` folder of --retriever over --collection instead of encoding the collection",
    )
    parser.add_argument("--num-negatives", type=int, default=1, help="negatives per positive (default: %(default)s)")
    parser.add_argument(
        "--range",
        type=_rank_range,
        default=(1, 100),
        metavar="MIN:MAX",
        help="first-stage ranks to draw negatives from, 1-based, both included (default: 1:100)",
    )
    parser.add_argument("--min-grade", type=int, default=1, help="smallest grade of a positive (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default: %(default)s)")
    parser.add_argument(
        "--sampling", choices=SAMPLING, default="random", help="random (seeded) or the top ranked (default: random)"
    )
    parser.add_argument(
        "--teacher",
        metavar="PATH_OR_HUB_ID",
        help="a teacher to filter candidates with (anything `hf-kd score --teacher` takes, run:PATH included)",
    )
    parser.add_argument("--margin", type=float, help="keep a candidate only if teacher(neg) < teacher(pos) - MARGIN")
    parser.add_argument(
        "--relative-margin",
        type=float,
        help="keep a candidate only if teacher(neg) < teacher(pos) * (1 - RELATIVE_MARGIN)",
    )
    parser.add_argument(
        "--skip-missing",
        action="store_true",
        help="leave out judged queries and positives without text (counted) instead of failing",
    )
    parser.add_argument(
        "--format",
        choices=OUTPUT_FORMATS,
        default="triples",
        help="triples: a dataset folder of ids with their texts; triples-tsv: query<TAB>positive<TAB>negative; "
        "nway: a dataset folder of the positive and all negatives with the teacher's scores (default: triples)",
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder (or TSV file with triples-tsv)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("--batch-size", type=int, default=64, help="texts or pairs per forward pass (default: 64)")
    add_max_batch_tokens_argument(parser)
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.set_defaults(func=run_mine)
