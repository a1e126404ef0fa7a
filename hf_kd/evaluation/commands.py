"""`hf-kd` subcommands of the evaluation package: `evaluate`, `bm25`, `index`, `retrieve`, `benchmark`, `compare`.

Each is a thin wrapper over the modules of `hf_kd.evaluation`: read the files, call one function, write the
results (atomically) and print a summary.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..data.ir_files import read_beir, read_collection_tsv, read_qrels, read_queries_tsv, read_run, write_run
from ..models.ranking_functions import CPU_MAX_BATCH_TOKENS
from .loading import INFERENCE_DTYPES, load_model
from .metrics import METRIC_NAMES, PRIMARY_METRIC, evaluate_run
from .records import record_evaluation
from .reports import EvaluationReport, dataset_of_qrels, read_reports

__all__ = ["add_max_batch_tokens_argument", "add_subcommands", "load_model"]


def _run_tag(model_dir: str) -> str:
    return "".join(c if not c.isspace() else "_" for c in Path(model_dir).resolve().name) or "hf-kd"


def _summary(metrics: dict) -> str:
    return "  ".join(f"{name} {metrics[name]:.4f}" for name in METRIC_NAMES)


def _read_inputs(
    args: argparse.Namespace, need_collection: bool = True
) -> tuple[dict, dict | None, dict | None, str | None]:
    """(queries, collection, qrels, qrels source) from either `--beir/--split` or the TSV/TREC files."""
    if args.beir:
        given = [flag for flag in ("queries", "collection", "qrels") if getattr(args, flag, None)]
        if given:
            raise ValueError(f"--beir provides the queries, corpus and qrels; do not also pass --{', --'.join(given)}")
        data = read_beir(args.beir, args.split)
        return data.queries, data.corpus, data.qrels, str(Path(args.beir) / "qrels" / f"{args.split}.tsv")
    if not args.queries or (need_collection and not args.collection):
        needed = "--queries and --collection" if need_collection else "--queries"
        raise ValueError(f"pass {needed} (MS MARCO TSV files), or --beir DIR")
    queries = read_queries_tsv(args.queries)
    collection = read_collection_tsv(args.collection) if need_collection else None
    qrels = read_qrels(args.qrels) if args.qrels else None
    return queries, collection, qrels, args.qrels


def _dataset_fields(args: argparse.Namespace, qrels_source: str | None) -> dict[str, str | None]:
    """The evaluation set of the report: the BEIR folder and split, or the folder of the qrels file."""
    if args.beir:
        return {"dataset": Path(args.beir).resolve().name, "split": args.split}
    dataset, split = dataset_of_qrels(qrels_source) if qrels_source else (None, None)
    return {"dataset": dataset, "split": split}


def _metrics_of(result: dict) -> dict[str, float]:
    return {name: result[name] for name in METRIC_NAMES}


def _rel_threshold(args: argparse.Namespace) -> int:
    if args.rel_threshold is not None:
        return args.rel_threshold
    return 1 if args.beir else 2


def _max_batch_tokens(value: str) -> int:
    """The argparse type of `--max-batch-tokens`: an integer >= 0."""
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0 (0: no cap), got {value!r}")
    return number


def add_max_batch_tokens_argument(parser: argparse.ArgumentParser, what: str = "texts or pairs") -> None:
    """Adds `--max-batch-tokens N` (`args.max_batch_tokens`, `None` when not given), the cap on padded tokens per
    forward pass that the models' `score`, `encode_queries` and `encode_passages` take."""
    parser.add_argument(
        "--max-batch-tokens",
        type=_max_batch_tokens,
        default=None,
        metavar="N",
        help=f"padded tokens per forward pass at most, {what} x the batch's longest (default: "
        f"{CPU_MAX_BATCH_TOKENS} on a CPU, where bigger batches only spill the caches, no cap on a GPU; 0: no cap)",
    )


def add_dtype_argument(parser: argparse.ArgumentParser) -> None:
    """Adds `--dtype` (`args.dtype`): the precision of the model's weights at inference."""
    parser.add_argument(
        "--dtype",
        choices=INFERENCE_DTYPES,
        default="float32",
        help="the model's weights in float32 (default), bfloat16 (half the memory; faster only on a GPU or a CPU "
        "with AMX or AVX-512 BF16), int8 (linear layers quantised dynamically with torchao, the int8 extra; faster "
        "only on a CPU with VNNI or AMX) or onnx-int8 (BERT_DOT, ColBERT and BERT_CAT on a CPU: the backbone's int8 "
        "export run by ONNX Runtime, the onnx extra); scores and vectors come back in float32",
    )


def _add_data_arguments(parser: argparse.ArgumentParser, collection: bool = True) -> None:
    parser.add_argument("--queries", help="queries TSV (qid<TAB>text)")
    if collection:
        parser.add_argument("--collection", help="collection TSV (pid<TAB>text)")
    parser.add_argument("--qrels", help="relevance judgements, TREC (qid 0 pid grade) or BEIR tsv")
    parser.add_argument("--beir", help="a BEIR folder (corpus.jsonl, queries.jsonl, qrels/), instead of the files")
    parser.add_argument("--split", default="test", help="BEIR qrels split (default: test)")
    parser.add_argument(
        "--rel-threshold",
        type=int,
        default=None,
        help="smallest relevant grade for MRR@10, Recall and MAP (default: 2, or 1 with --beir)",
    )


# ---------------------------------------------------------------------------------------------------------------
# evaluate
# ---------------------------------------------------------------------------------------------------------------


def _evaluated_fields(args: argparse.Namespace, model, qrels_source: str | None) -> dict:
    """The report fields naming what was evaluated: the model, its architecture, the dataset and its qrels."""
    return {
        "model": str(args.model),
        "name": Path(args.model).resolve().name,
        "architecture": getattr(model.config, "architecture", None) or model.config.model_type,
        **_dataset_fields(args, qrels_source),
        "qrels": qrels_source,
        "dtype": args.dtype,
    }


def run_evaluate(args: argparse.Namespace) -> int:
    from .rerank import check_run_inputs
    from .rerank_set import RerankSet

    queries, collection, qrels, qrels_source = _read_inputs(args)
    if qrels is None:
        raise ValueError("pass --qrels (or --beir DIR) to evaluate the re-ranked run")
    rel_threshold = _rel_threshold(args)
    first_stage = read_run(args.run)
    dataset = _dataset_fields(args, qrels_source)
    evaluation_set = RerankSet(
        queries, collection, first_stage, qrels, top_k=args.top_k, rel_threshold=rel_threshold,
        name="-".join(part for part in (dataset["dataset"], dataset["split"]) if part) or Path(args.run).name,
        run_file=str(args.run), qrels_file=qrels_source,
    )  # fmt: skip
    check_run_inputs(evaluation_set.candidates(), queries, collection)  # fail before loading the model
    model, tokenizer = load_model(args.model, args.device, args.dtype)
    reranked = evaluation_set.rerank(
        model,
        tokenizer,
        batch_size=args.batch_size,
        max_batch_tokens=args.max_batch_tokens,
        cache_passages=not args.no_cache,
        show_progress=True,  # "Re-ranking msmarco-dl20 with MODEL", one step per query
        model_name=Path(args.model).resolve().name,
    )
    result = evaluate_run(reranked, qrels, rel_threshold)
    first_stage_result = evaluate_run(first_stage, qrels, rel_threshold)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_run(reranked, out / "run.trec", tag=_run_tag(args.model))
    report = EvaluationReport.from_evaluate_run(
        result,
        **_evaluated_fields(args, model, qrels_source),
        retrieval="rerank",
        run=str(args.run),
        top_k=args.top_k,
        rel_threshold=rel_threshold,
        first_stage_metrics=_metrics_of(first_stage_result),
    )
    report.write(out / "metrics.json")
    record_evaluation(args.model, out / "metrics.json", report)  # so `hf-kd push MODEL` finds the results
    print(f"first stage: {_summary(first_stage_result)}")
    print(f"re-ranked:   {_summary(result)}  ({result['num_queries']} queries, wrote {out / 'run.trec'})")
    return 0


def _add_evaluate(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="re-rank a first-stage run with a zoo model and compute MRR@10, nDCG@10, Recall, MAP",
        description="Re-ranks the top-k candidates of RUN with the model in DIR; writes run.trec and metrics.json, "
        "and records the evaluation in DIR/hf_kd_evaluations.json for the model card (`hf-kd push DIR`).",
    )
    parser.add_argument("--model", required=True, help="folder of a saved zoo model (with its tokenizer)")
    parser.add_argument("--run", required=True, help="first-stage TREC run whose candidates are re-ranked")
    _add_data_arguments(parser)
    parser.add_argument("--out", required=True, help="output folder for run.trec and metrics.json")
    parser.add_argument("--top-k", type=int, default=100, help="candidates re-ranked per query (default: 100)")
    parser.add_argument("--batch-size", type=int, default=64, help="texts or pairs per forward pass (default: 64)")
    add_max_batch_tokens_argument(parser)
    parser.add_argument("--no-cache", action="store_true", help="score pairs without caching passage encodings")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    add_dtype_argument(parser)
    parser.set_defaults(func=run_evaluate)


# ---------------------------------------------------------------------------------------------------------------
# bm25
# ---------------------------------------------------------------------------------------------------------------


def run_bm25(args: argparse.Namespace) -> int:
    from .bm25 import bm25_search

    data = read_beir(args.beir, args.split)
    run = bm25_search(data.corpus, data.queries, k=args.k, k1=args.k1, b=args.b)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_run(run, out, tag="bm25s")
    num_empty = sum(1 for candidates in run.values() if not candidates)
    print(f"wrote {out}: {len(run)} queries, {sum(len(c) for c in run.values())} candidates", end="")
    print(f" ({num_empty} queries without any matching document)" if num_empty else "")
    print(f"{args.split}: {_summary(evaluate_run(run, data.qrels, _rel_threshold(args)))}")
    return 0


def _add_bm25(subparsers) -> None:
    parser = subparsers.add_parser("bm25", help="BM25 first stage (bm25s) over a BEIR corpus, written as a TREC run")
    parser.add_argument("--beir", required=True, help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/)")
    parser.add_argument("--split", default="test", help="qrels split whose queries are searched (default: test)")
    parser.add_argument("--out", required=True, help="the TREC run file to write")
    parser.add_argument("--k", type=int, default=1000, help="candidates per query (default: 1000)")
    parser.add_argument("--k1", type=float, default=1.2, help="BM25 k1 (default: 1.2)")
    parser.add_argument("--b", type=float, default=0.75, help="BM25 b (default: 0.75)")
    parser.add_argument("--rel-threshold", type=int, default=1, help="relevant grade for the printed metrics")
    parser.set_defaults(func=run_bm25)


# ---------------------------------------------------------------------------------------------------------------
# index / retrieve
# ---------------------------------------------------------------------------------------------------------------


def run_index(args: argparse.Namespace) -> int:
    from .dense import index_factory_string
    from .indexing import build_dense_index

    if bool(args.beir) == bool(args.collection):
        raise ValueError("pass exactly one of --collection (MS MARCO TSV) or --beir DIR")
    collection = read_beir(args.beir, args.split).corpus if args.beir else read_collection_tsv(args.collection)
    factory = index_factory_string(args.index_type, args.fp16, args.hnsw_m, args.nlist, args.pq_m, args.pq_nbits)
    result = build_dense_index(
        args.model,
        collection,
        args.out,
        factory=factory,
        ef_construction=args.ef_construction,
        ef_search=args.ef_search,
        nprobe=args.nprobe,
        index_shards=args.index_shards,
        fp16=args.fp16,
        batch_size=args.batch_size,
        max_batch_tokens=args.max_batch_tokens,
        shard_size=args.shard_size,
        device=args.device,
        dtype=args.dtype,
        source=Path(args.beir) / "corpus.jsonl" if args.beir else args.collection,
        overwrite=args.overwrite,
    )
    index = result.index
    if index is None:  # another process of `accelerate launch`: the main process built the index and reports it
        return 0
    resumed = f", {result.resumed_passages} resumed from an earlier run" if result.resumed_passages else ""
    sharded = f" in {len(index.shards)} shards" if len(index.shards) > 1 else ""
    print(
        f"indexed {len(index)} passages ({factory}{sharded}, {index.dim}-d{resumed}): {index.nbytes()} bytes in "
        f"{args.out}"
    )
    return 0


def _add_index(subparsers) -> None:
    parser = subparsers.add_parser("index", help="encode a collection with a BERT_DOT model into a faiss index")
    parser.add_argument("--model", required=True, help="folder of a saved BERT_DOT model")
    parser.add_argument("--collection", help="collection TSV (pid<TAB>text)")
    parser.add_argument("--beir", help="BEIR folder whose corpus.jsonl is indexed")
    parser.add_argument("--split", default="test", help="BEIR split to read alongside the corpus (default: test)")
    parser.add_argument("--out", required=True, help="folder for index.faiss, ids.json, index_config.json")
    parser.add_argument("--index-type", choices=("flat", "hnsw", "ivfpq"), default="flat", help="default: flat (exact)")
    parser.add_argument("--fp16", action="store_true", help="float16 vectors while encoding and in flat/hnsw storage")
    parser.add_argument("--hnsw-m", type=int, default=32, help="HNSW neighbours per node (default: 32)")
    parser.add_argument("--ef-construction", type=int, default=None, help="HNSW build beam (faiss default: 40)")
    parser.add_argument("--ef-search", type=int, default=None, help="HNSW search beam (faiss default: 16)")
    parser.add_argument("--nlist", type=int, default=1024, help="IVF lists (default: 1024)")
    parser.add_argument("--pq-m", type=int, default=16, help="PQ sub-quantisers, divides the vector size (default: 16)")
    parser.add_argument("--pq-nbits", type=int, default=8, help="bits per PQ code (default: 8)")
    parser.add_argument("--nprobe", type=int, default=None, help="IVF lists visited per query (faiss default: 1)")
    parser.add_argument(
        "--index-shards",
        type=int,
        default=1,
        help="faiss indexes over consecutive slices of the collection, each built on its own and searched in "
        "parallel with an exact merge of their top-k (default: 1)",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="passages per forward pass (default: 64)")
    add_max_batch_tokens_argument(parser, "passages")
    parser.add_argument(
        "--shard-size",
        type=int,
        default=100_000,
        help="passages per resumable shard: a killed build run again with the same arguments encodes only the "
        "missing shards (default: 100000)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing index folder, or unfinished work of another build"
    )
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    add_dtype_argument(parser)
    parser.set_defaults(func=run_index)


def run_retrieve(args: argparse.Namespace) -> int:
    from .dense import DenseIndex, dense_retrieve

    queries, _, qrels, qrels_source = _read_inputs(args, need_collection=False)
    index = DenseIndex.load(args.index)
    model, tokenizer = load_model(args.model, args.device, args.dtype)
    searched = index.for_device(model.device)  # on the model's GPU with a GPU build of faiss
    run = dense_retrieve(
        model,
        tokenizer,
        searched,
        queries,
        k=args.k,
        batch_size=args.batch_size,
        max_batch_tokens=args.max_batch_tokens,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_run(run, out / "run.trec", tag=_run_tag(args.model))
    print(f"wrote {out / 'run.trec'}: {len(run)} queries, top {args.k} of {len(index)} passages")
    if qrels is None:
        return 0
    rel_threshold = _rel_threshold(args)
    result = evaluate_run(run, qrels, rel_threshold)
    report = EvaluationReport.from_evaluate_run(
        result,
        **_evaluated_fields(args, model, qrels_source),
        retrieval="dense",
        index=str(args.index),
        index_factory=index.factory,
        index_bytes=index.nbytes(),
        num_passages=len(index),
        top_k=args.k,
        rel_threshold=rel_threshold,
    )
    report.write(out / "metrics.json")
    record_evaluation(args.model, out / "metrics.json", report)
    print(f"{_summary(result)}  (index {index.factory}, {report.index_bytes} bytes)")
    return 0


def _add_retrieve(subparsers) -> None:
    parser = subparsers.add_parser("retrieve", help="dense retrieval from a faiss index, with metrics")
    parser.add_argument("--model", required=True, help="folder of the BERT_DOT model that built the index")
    parser.add_argument("--index", required=True, help="folder written by `hf-kd index`")
    _add_data_arguments(parser, collection=False)
    parser.add_argument("--out", required=True, help="output folder for run.trec and metrics.json")
    parser.add_argument("--k", type=int, default=1000, help="passages retrieved per query (default: 1000)")
    parser.add_argument("--batch-size", type=int, default=64, help="queries per forward pass (default: 64)")
    add_max_batch_tokens_argument(parser, "queries")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    add_dtype_argument(parser)
    parser.set_defaults(func=run_retrieve)


# ---------------------------------------------------------------------------------------------------------------
# benchmark
# ---------------------------------------------------------------------------------------------------------------


def run_benchmark(args: argparse.Namespace) -> int:
    from .latency import latency_candidates, measure_rerank_latency
    from .report import efficiency_markdown, join_efficiency, write_efficiency_report

    reports = [_benchmarked_report(path) for path in args.metrics]
    effectiveness = {report.name: report.metrics for report in reports}
    latencies = json.loads(Path(args.latency).read_text(encoding="utf-8")) if args.latency else []
    if isinstance(latencies, dict):
        latencies = latencies.get("results", [])
    measured = {item["name"] for item in latencies}
    to_measure = [report for report in reports if report.name not in measured]
    if to_measure:
        if not (args.queries and args.collection and args.runs):
            names = ", ".join(report.name for report in to_measure)
            raise ValueError(f"no latency for {names}: pass --latency FILE, or --queries, --collection and --runs")
        queries = read_queries_tsv(args.queries)
        collection = read_collection_tsv(args.collection)
        runs = [read_run(path) for path in args.runs]
        query_ids = [qid for qid in queries if any(qid in run for run in runs)][: args.num_queries]
        candidates = latency_candidates(runs, collection, query_ids, args.num_candidates)
        for report in to_measure:
            if not report.model:
                raise ValueError(f"no latency for {report.name}, and its metrics file records no 'model' to measure")
            model, tokenizer = load_model(report.model, args.device, args.dtype)
            result = measure_rerank_latency(
                model,
                tokenizer,
                [queries[qid] for qid in query_ids],
                [[collection[pid] for pid in candidates[qid]] for qid in query_ids],
                batch_size=args.batch_size,
                name=report.name,
            )
            latencies.append(result.to_dict())
            del model
    rows = join_efficiency(latencies, effectiveness)
    paths = write_efficiency_report(rows, args.out)
    sys.stdout.write(efficiency_markdown(rows))
    print("wrote " + ", ".join(str(path) for path in paths.values()))
    return 0


def _benchmarked_report(path: str) -> EvaluationReport:
    """The report of a `--metrics` file (the first evaluation of a file holding several), named."""
    report = read_reports(path)[0]
    if not (report.name or report.model):
        raise ValueError(f"{path}: no 'name' or 'model' recorded; expected a metrics.json written by `hf-kd evaluate`")
    report.name = report.name or Path(report.model).name
    return report


def _add_benchmark(subparsers) -> None:
    parser = subparsers.add_parser(
        "benchmark",
        help="join re-ranking latency with effectiveness into a table and an efficiency-effectiveness plot",
        description=(
            "For each metrics.json written by `hf-kd evaluate`, measures the re-ranking latency of its model "
            "(or takes it from --latency) and writes efficiency.md, efficiency.json and efficiency.png."
        ),
    )
    parser.add_argument("--metrics", nargs="+", required=True, help="metrics.json files of `hf-kd evaluate`")
    parser.add_argument("--latency", help="latency JSON (a list of results, or {'results': [...]}) to reuse")
    parser.add_argument("--queries", help="queries TSV for the latency measurement")
    parser.add_argument("--collection", help="collection TSV for the latency measurement")
    parser.add_argument("--runs", nargs="+", help="first-stage runs whose union gives the candidates")
    parser.add_argument("--num-queries", type=int, default=20, help="timed queries (default: 20)")
    parser.add_argument("--num-candidates", type=int, default=1000, help="candidates per query (default: 1000)")
    parser.add_argument("--batch-size", type=int, default=256, help="candidates per forward pass (default: 256)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--out", required=True, help="output folder")
    add_dtype_argument(parser)
    parser.set_defaults(func=run_benchmark)


# ---------------------------------------------------------------------------------------------------------------
# compare
# ---------------------------------------------------------------------------------------------------------------


def run_compare(args: argparse.Namespace) -> int:
    from .significance import (
        compare_reports,
        comparisons_markdown,
        plot_comparisons,
        read_compared_reports,
        write_comparisons,
    )

    baseline, *candidates = read_compared_reports([args.baseline, *args.candidates])
    comparisons = compare_reports(
        baseline,
        candidates,
        metric=args.metric,
        test=args.test,
        correction=args.correction,
        seed=args.seed,
    )
    sys.stdout.write(comparisons_markdown(comparisons, args.alpha))
    if args.out:
        write_comparisons(comparisons, args.out, args.alpha)
        print(f"wrote {args.out}")
    if args.plot:
        plot_comparisons(comparisons, args.plot, args.alpha)
        print(f"wrote {args.plot}")
    return 0


def _add_compare(subparsers) -> None:
    from .significance import CORRECTIONS, TESTS

    parser = subparsers.add_parser(
        "compare",
        help="paired significance of per-query differences between evaluations (t-test or permutation)",
        description=(
            "Compares each CANDIDATE with BASELINE on every evaluation set both hold, query by query: the mean "
            "difference with its 95%% confidence interval and a paired p-value. Each argument is a metrics.json "
            "written by `hf-kd evaluate`, `retrieve` or `reproduce`, or a folder holding one."
        ),
    )
    parser.add_argument("baseline", help="metrics.json (or its folder) of the baseline")
    parser.add_argument("candidates", nargs="+", metavar="candidate", help="metrics.json (or folders) to compare")
    parser.add_argument("--metric", default=PRIMARY_METRIC, help=f"per-query metric (default: {PRIMARY_METRIC})")
    parser.add_argument("--test", choices=TESTS, default="t-test", help="paired test (default: t-test)")
    parser.add_argument(
        "--correction",
        choices=CORRECTIONS,
        default="none",
        help="adjust the p-values of several comparisons together (default: none)",
    )
    parser.add_argument("--alpha", type=float, default=0.05, help="level below which a difference is real")
    parser.add_argument("--seed", type=int, default=0, help="resampling seed of large permutation tests")
    parser.add_argument("--out", help="also write the comparisons as JSON")
    parser.add_argument("--plot", help="also plot the per-query differences (PNG)")
    parser.set_defaults(func=run_compare)


def add_subcommands(subparsers) -> None:
    """Registers `evaluate`, `bm25`, `index`, `retrieve`, `benchmark` and `compare` on an argparse subparsers
    object.

    Each subcommand sets `func`, a callable taking the parsed arguments and returning the exit status.
    """
    _add_evaluate(subparsers)
    _add_bm25(subparsers)
    _add_index(subparsers)
    _add_retrieve(subparsers)
    _add_benchmark(subparsers)
    _add_compare(subparsers)
