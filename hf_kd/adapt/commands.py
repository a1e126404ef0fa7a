"""`hf-kd adapt`: a corpus in, an adapted student out."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..jobs import parse_overrides
from .budgets import BUDGETS, get_adapt_budget


def run(args: argparse.Namespace) -> int:
    from .pipeline import run_adaptation

    overrides = parse_overrides(args.set)
    if args.teacher_model and "teacher" not in overrides:
        overrides["teacher"] = "bm25+model"
    budget = get_adapt_budget(args.budget, overrides)
    results = run_adaptation(
        args.corpus,
        args.out,
        budget,
        queries=args.queries,
        queries_split=args.queries_split,
        eval_split=args.eval_split,
        eval_queries=args.eval_queries,
        qrels=args.qrels,
        start_model=args.start_model,
        teacher_model=args.teacher_model,
    )
    print((Path(args.out) / "tables.md").read_text(encoding="utf-8"))
    print(f"results: {Path(args.out) / 'results.json'} ({results['wall_time_s']:.0f} s)")
    return 0


def run_pool(args: argparse.Namespace) -> int:
    from .pool import pool_adaptations

    pool_adaptations(args.runs, args.out, mixed_precision=args.mixed_precision)
    print((Path(args.out) / "tables.md").read_text(encoding="utf-8"))
    return 0


def add_subcommands(subparsers) -> None:
    parser = subparsers.add_parser(
        "adapt",
        help="adapt a student to a corpus without relevance labels",
        description="Queries (your unjudged query log with --queries, or pseudo-queries made from the corpus) -> "
        "each query's BM25 and dense candidates -> random pairs labelled by BM25 and the starting model together "
        "(per-query z-scores averaged), or by a --teacher-model -> Margin-MSE students, beside the self control and "
        "the no-teacher twin -> evaluation where the corpus has judged queries. Each stage is kept under --out; a "
        "rerun resumes.",
    )
    parser.add_argument("--corpus", required=True, help="a BEIR folder or a collection TSV (pid<TAB>text)")
    parser.add_argument(
        "--queries",
        help="unjudged queries to learn from: a qid<TAB>text file, or a BEIR folder (its --queries-split); "
        "without it, pseudo-queries are made from the corpus (the budget's query_method)",
    )
    parser.add_argument("--queries-split", default="train", help="BEIR split of --queries (default: %(default)s)")
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="short", help="size of the run (default: short)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="override one budget setting (YAML value)")
    parser.add_argument(
        "--eval-split",
        default="test",
        help="BEIR split of the corpus folder that measures the students (default: %(default)s; never trained on)",
    )
    parser.add_argument("--eval-queries", help="qid<TAB>text judged queries (with --qrels) instead of a BEIR split")
    parser.add_argument("--qrels", help="TREC or BEIR qrels of --eval-queries")
    parser.add_argument(
        "--start-model",
        help="the student's starting point and dense teacher, a sentence-transformers folder (default: "
        "all-MiniLM-L6-v2 from the minilm extra)",
    )
    parser.add_argument(
        "--teacher-model",
        help="a stronger sentence-transformers bi-encoder to teach with (a folder, a Hub id, or mpnet: "
        "all-mpnet-base-v2 from its packages); fused with BM25 (teacher=bm25+model) unless --set teacher=... "
        "says otherwise (model: alone; start+model: with the starting model)",
    )
    parser.add_argument("--out", default="outputs/adapt", help="output folder (default: %(default)s)")
    parser.set_defaults(func=run)
    pool = subparsers.add_parser(
        "adapt-pool",
        help="summarise the seeds of several runs of one adaptation together",
        description="Reads the results.json of several `hf-kd adapt` folders that ran the same adaptation with other "
        "seeds (one after another, or on several machines) and writes results.json and tables.md with every "
        "setting summarised over all their seeds (mean, spread, paired tests on per-query means over seeds).",
    )
    pool.add_argument("runs", nargs="+", help="folders written by `hf-kd adapt`")
    pool.add_argument(
        "--mixed-precision",
        action="store_true",
        help="pool runs whose students trained in different precisions (float32 and bfloat16); fair where every "
        "setting has seeds in each",
    )
    pool.add_argument("--out", required=True, help="output folder of the pooled results.json and tables.md")
    pool.set_defaults(func=run_pool)
