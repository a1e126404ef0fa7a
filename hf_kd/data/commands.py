"""`hf-kd data ...`: converting teacher-score files and building triples, as thin wrappers."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..jobs import JobLockedError, output_lock
from .convert import convert
from .errors import DataFormatError
from .ir_files import read_beir, read_collection_tsv, read_qrels, read_queries_tsv, read_run
from .provenance import Provenance
from .readers import READERS
from .triples import build_candidate_pairs, build_triples, read_query_id_list, save_triples
from .writers import DEFAULT_SHARD_ROWS

__all__ = ["add_subcommands"]

_INPUT_ERRORS = (DataFormatError, FileNotFoundError, FileExistsError, ValueError, JobLockedError)


def _add_output_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="dataset folder to write")
    parser.add_argument(
        "--shard-rows", type=int, default=DEFAULT_SHARD_ROWS, help="rows per output shard (default: %(default)s)"
    )
    parser.add_argument(
        "--save-to-disk", action="store_true", help="write the datasets save_to_disk layout instead of Parquet"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")


def _run_convert(args: argparse.Namespace) -> int:
    try:
        report = convert(
            args.format,
            args.input,
            args.out,
            queries=args.queries,
            collection=args.collection,
            skip_bad_rows=args.skip_bad_rows,
            shard_rows=args.shard_rows,
            save_to_disk=args.save_to_disk,
            teachers=args.teacher or (),
            overwrite=args.overwrite,
            drop_duplicates=args.drop_duplicates,
        )
    except _INPUT_ERRORS as error:
        print(f"hf-kd data convert: error: {error}", file=sys.stderr)
        return 1
    print(report.summary())
    return 0


def _run_build_triples(args: argparse.Namespace) -> int:
    try:
        if args.beir is not None:
            if args.queries is not None or args.collection is not None:
                raise ValueError("--beir provides queries and corpus; do not combine it with --queries/--collection")
            beir = read_beir(args.beir, args.split)
            queries, collection, qrels = beir.queries, beir.corpus, beir.qrels
            sources = [
                args.beir / "corpus.jsonl",
                args.beir / "queries.jsonl",
                args.beir / "qrels" / f"{args.split}.tsv",
            ]
        else:
            if args.queries is None or args.collection is None or (args.qrels is None and not args.pairs_per_query):
                raise ValueError("give --qrels, --queries and --collection, or a BEIR folder with --beir")
            queries, collection = read_queries_tsv(args.queries), read_collection_tsv(args.collection)
            qrels, sources = None, [args.queries, args.collection]
        if args.qrels is not None:
            qrels = read_qrels(args.qrels)
            sources.append(args.qrels)
        runs = [read_run(path) for path in args.run]
        selection = dict(
            min_grade=args.min_grade,
            seed=args.seed,
            query_ids=queries,
            passage_ids=collection,
            include_queries=read_query_id_list(args.include_queries) if args.include_queries else None,
            exclude_queries=read_query_id_list(args.exclude_queries) if args.exclude_queries else None,
            max_rank=args.max_rank,
        )
        if args.pairs_per_query:
            if args.negatives_per_positive is not None:
                raise ValueError(
                    "--pairs-per-query draws candidate pairs; do not combine it with --negatives-per-positive"
                )
            triples, stats = build_candidate_pairs(runs, pairs_per_query=args.pairs_per_query, qrels=qrels, **selection)
        else:
            triples, stats = build_triples(
                qrels, runs, negatives_per_positive=args.negatives_per_positive or 1, **selection
            )
        provenance = Provenance(
            format="build-triples",
            schema="triples_ids",
            source_files=[str(Path(p).resolve()) for p in [*sources, *args.run]],
            parameters={**stats.parameters, "split": args.split if args.beir is not None else None},
        )
        with output_lock(args.out):
            save_triples(
                triples,
                args.out,
                queries=queries,
                collection=collection,
                provenance=provenance,
                shard_rows=args.shard_rows,
                save_to_disk=args.save_to_disk,
                overwrite=args.overwrite,
            )
    except _INPUT_ERRORS as error:
        print(f"hf-kd data build-triples: error: {error}", file=sys.stderr)
        return 1
    print(
        f"{stats.triples:,} triples from {stats.queries:,} queries -> {args.out}\n"
        f"  skipped queries: {stats.excluded_queries:,} excluded, {stats.queries_without_text:,} without text, "
        f"{stats.queries_without_positive:,} without a positive, {stats.queries_without_negative:,} without a "
        f"negative; positives without text: {stats.positives_without_text:,}; positives short of negatives: "
        f"{stats.short_of_negatives:,}"
        + (f"; queries short of pairs: {stats.short_of_pairs:,}" if args.pairs_per_query else "")
    )
    return 0


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    """Registers the `data` command group (`convert`, `build-triples`) on the `hf-kd` subparsers."""
    data = subparsers.add_parser("data", help="convert teacher-score files, build triples from judgements")
    commands = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)

    convert_parser = commands.add_parser(
        "convert",
        help="convert a teacher-score file into a dataset folder",
        description="Convert a teacher-score file into a dataset folder (Parquet shards or save_to_disk), "
        "checking every line; see hf_kd.data.readers for the formats.",
    )
    convert_parser.add_argument("--format", required=True, choices=sorted(READERS), help="input format")
    convert_parser.add_argument("input", type=Path, help="input file (file or folder of Parquet files for st-*)")
    convert_parser.add_argument("--queries", type=Path, help="MS MARCO queries.tsv (id formats)")
    convert_parser.add_argument("--collection", type=Path, help="MS MARCO collection.tsv (id formats)")
    convert_parser.add_argument(
        "--skip-bad-rows",
        action="store_true",
        help="write bad lines with their reasons to <out>.rejected.tsv instead of stopping at the first",
    )
    convert_parser.add_argument(
        "--teacher", action="append", help="name of a teacher model behind the scores (repeatable)"
    )
    convert_parser.add_argument(
        "--drop-duplicates",
        action="store_true",
        help="leave out rows equal in every column to an earlier row (by default they are kept and counted)",
    )
    _add_output_arguments(convert_parser)
    convert_parser.set_defaults(func=_run_convert)

    triples_parser = commands.add_parser(
        "build-triples",
        help="build training triples from qrels and candidate runs",
        description="Positives: judged passages of grade >= --min-grade. Negatives: candidates of the runs "
        "not judged relevant, sampled deterministically by --seed. With --pairs-per-query: random pairs of the runs' "
        "candidates (judged positives join them) for a teacher to label, in random order; no qrels needed.",
    )
    triples_parser.add_argument("--qrels", type=Path, help="TREC or BEIR qrels (default with --beir: its split)")
    triples_parser.add_argument(
        "--run", type=Path, action="append", required=True, help="TREC run of candidates (repeatable)"
    )
    triples_parser.add_argument("--collection", type=Path, help="MS MARCO-style collection.tsv")
    triples_parser.add_argument("--queries", type=Path, help="MS MARCO-style queries.tsv")
    triples_parser.add_argument("--beir", type=Path, help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/)")
    triples_parser.add_argument("--split", default="train", help="BEIR qrels split (default: %(default)s)")
    triples_parser.add_argument("--min-grade", type=int, default=1, help="lowest relevant grade (default: 1)")
    triples_parser.add_argument("--negatives-per-positive", type=int, help="negatives per positive (default: 1)")
    triples_parser.add_argument(
        "--pairs-per-query",
        type=int,
        help="instead of judged triples, this many random pairs of each query's candidates, for a teacher to label "
        "(train them with a teacher loss: the two sides are in random order)",
    )
    triples_parser.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    triples_parser.add_argument("--max-rank", type=int, help="use only each run's top candidates")
    triples_parser.add_argument("--include-queries", type=Path, help="file of query ids to build (one per line)")
    triples_parser.add_argument(
        "--exclude-queries", type=Path, help="file of query ids never to build, e.g. dev queries (one per line)"
    )
    _add_output_arguments(triples_parser)
    triples_parser.set_defaults(func=_run_build_triples)
    _add_pseudo_queries_parser(commands)


def _add_pseudo_queries_parser(commands) -> None:
    from .pseudo_queries import METHODS

    parser = commands.add_parser(
        "pseudo-queries",
        help="make queries from a corpus's own documents, for a teacher to label",
        description="Writes queries.tsv (qid<TAB>text), query_sources.tsv (qid<TAB>the document it was made from) "
        "and pseudo_queries.json (parameters and counts) into --out. Deterministic by --seed; duplicate queries are "
        "dropped and documents too short are skipped, both counted.",
    )
    parser.add_argument("--corpus", required=True, type=Path, help="a BEIR folder or a collection TSV (pid<TAB>text)")
    parser.add_argument(
        "--method",
        choices=METHODS,
        default="span",
        help="span: a run of words of one sentence; keywords: a sentence's rarest words in order; sentence: a whole "
        "sentence (inverse cloze); title: the title; generator: a text-to-text model (--generator) (default: span)",
    )
    parser.add_argument("--per-doc", type=int, default=1, help="queries per document (default: 1)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    parser.add_argument("--min-words", type=int, help="shortest query in words (span 4, keywords 3, sentence 5)")
    parser.add_argument("--max-words", type=int, help="longest query in words (span 12, keywords 6)")
    parser.add_argument("--max-documents", type=int, help="use the first documents only")
    parser.add_argument(
        "--generator", help="a seq2seq model folder or Hub id (e.g. a doc2query T5), for --method generator"
    )
    parser.add_argument("--batch-size", type=int, default=16, help="documents per generate call (default: 16)")
    parser.add_argument("--out", required=True, type=Path, help="the folder to write")
    parser.set_defaults(func=_run_pseudo_queries)


def _run_pseudo_queries(args: argparse.Namespace) -> int:
    from .corpus import read_corpus
    from .pseudo_queries import make_pseudo_queries, write_pseudo_queries

    pseudo = make_pseudo_queries(
        read_corpus(args.corpus),
        args.method,
        per_doc=args.per_doc,
        seed=args.seed,
        min_words=args.min_words,
        max_words=args.max_words,
        generator=args.generator,
        generator_batch_size=args.batch_size,
        max_documents=args.max_documents,
    )
    write_pseudo_queries(pseudo, args.out, corpus=str(args.corpus))
    stats = pseudo.stats
    print(
        f"{stats['queries']} queries from {stats['documents']} documents ({stats['mean_words']} words on average; "
        f"{stats['duplicates_dropped']} duplicates dropped, {stats['documents_skipped']} documents skipped) -> "
        f"{args.out}"
    )
    return 0
