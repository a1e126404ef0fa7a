"""Conversion speed and memory of the paper's id-based teacher-score TSV (`hf-kd data convert --format paper-ids`).

Generates files of N rows `pos_score<TAB>neg_score<TAB>qid<TAB>pos_pid<TAB>neg_pid` whose ids are drawn from a
real collection and query set (default: the ci DL20 cut), then converts each into Parquet shards with full
validation (every id checked against queries.tsv and collection.tsv). Each conversion runs in a fresh process,
which reports its own peak resident memory (`getrusage`), the part of it above the fixed cost of importing
the package, and the peak of Arrow's memory pool, so that the numbers of different row counts are comparable.

    python benchmarks/convert_scores.py [--rows 1000000 5000000] [--out outputs/convert_scores.json]

Targets: at least 500k rows/s on a 2-core machine, and a peak memory that does not grow with the row count.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("HF_KD_SHARED_DATA", REPO_ROOT.parent / "shared" / "data")) / "ci" / "msmarco-dl20"
GENERATE_CHUNK_ROWS = 1_000_000


def _first_column(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [line.split("\t", 1)[0] for line in f]


def generate_paper_ids(path: Path, rows: int, query_ids: list[str], passage_ids: list[str], seed: int = 0) -> None:
    """Writes `rows` random paper-format lines over the given ids, a chunk at a time."""
    rng = np.random.default_rng(seed)
    qids, pids = pa.array(query_ids), pa.array(passage_ids)
    options = pa_csv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none")
    with pa.OSFile(str(path), "wb") as sink:
        for start in range(0, rows, GENERATE_CHUNK_ROWS):
            n = min(GENERATE_CHUNK_ROWS, rows - start)
            table = pa.table(
                {
                    "pos_score": np.round(rng.normal(8.0, 3.0, n), 6),
                    "neg_score": np.round(rng.normal(0.0, 3.0, n), 6),
                    "qid": qids.take(rng.integers(0, len(qids), n)),
                    "pos_pid": pids.take(rng.integers(0, len(pids), n)),
                    "neg_pid": pids.take(rng.integers(0, len(pids), n)),
                }
            )
            pa_csv.write_csv(table, sink, options)


def _peak_rss_mib() -> float:
    # ru_maxrss is in KiB on Linux and in bytes on macOS
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if platform.system() == "Darwin" else peak / 1024


def _convert_in_child(source: str, out: str, queries: str, collection: str, shard_rows: int, results) -> None:
    from hf_kd.data import convert

    rss_after_import = _peak_rss_mib()  # the package imports torch and datasets: a fixed cost
    report = convert("paper-ids", source, out, queries=queries, collection=collection, shard_rows=shard_rows)
    results.put(
        {
            "rows": report.rows,
            "rejected": report.rejected,
            "seconds": report.seconds,
            "rows_per_second": report.rows_per_second,
            "peak_rss_mib": _peak_rss_mib(),
            "rss_after_import_mib": rss_after_import,
            "conversion_rss_mib": _peak_rss_mib() - rss_after_import,
            "arrow_peak_mib": pa.default_memory_pool().max_memory() / 2**20,
        }
    )


def measure(source: Path, out: Path, queries: Path, collection: Path, shard_rows: int) -> dict:
    """Converts `source` in a fresh process and returns its report with the process's peak memory."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    child = context.Process(
        target=_convert_in_child, args=(str(source), str(out), str(queries), str(collection), shard_rows, results)
    )
    start = time.perf_counter()
    child.start()
    result = results.get()
    child.join()
    if child.exitcode != 0:
        raise RuntimeError(f"conversion of {source} failed with exit code {child.exitcode}")
    result["wall_seconds_with_startup"] = time.perf_counter() - start
    return result


def _folder_mib(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 5_000_000], help="row counts to run")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with queries.tsv and collection.tsv")
    parser.add_argument("--shard-rows", type=int, default=1_000_000, help="rows per output Parquet shard")
    parser.add_argument("--tmp-dir", type=Path, help="where to generate and convert (default: system temp)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()

    queries, collection = args.data / "queries.tsv", args.data / "collection.tsv"
    query_ids, passage_ids = _first_column(queries), _first_column(collection)
    results = []
    with tempfile.TemporaryDirectory(dir=args.tmp_dir, prefix="hf_kd_convert_bench_") as tmp:
        for rows in args.rows:
            source, out = Path(tmp) / f"scores_{rows}.tsv", Path(tmp) / f"scores_{rows}"
            generate_paper_ids(source, rows, query_ids, passage_ids)
            result = measure(source, out, queries, collection, args.shard_rows)
            result.update(input_mib=source.stat().st_size / 2**20, output_mib=_folder_mib(out))
            results.append(result)
            source.unlink()
            shutil.rmtree(out)

    header = (
        f"{'rows':>11} {'seconds':>8} {'rows/s':>11} {'peak RSS MiB':>13} {'after import':>13} "
        f"{'conversion':>11} {'Arrow peak':>11} {'in MiB':>8} {'out MiB':>8}"
    )
    print(f"paper-ids -> Parquet, ids from {args.data} ({len(query_ids)} queries, {len(passage_ids)} passages)")
    print(header)
    for r in results:
        print(
            f"{r['rows']:>11,} {r['seconds']:>8.2f} {r['rows_per_second']:>11,.0f} {r['peak_rss_mib']:>13.0f} "
            f"{r['rss_after_import_mib']:>13.0f} {r['conversion_rss_mib']:>11.0f} {r['arrow_peak_mib']:>11.0f} "
            f"{r['input_mib']:>8.0f} {r['output_mib']:>8.0f}"
        )
    if args.out:
        record = {
            "benchmark": "convert_scores",
            "format": "paper-ids",
            "data": str(args.data),
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_average": os.getloadavg()},
            "results": results,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp_out = args.out.with_name(f".{args.out.name}.tmp")
        tmp_out.write_text(json.dumps(record, indent=2) + "\n")
        os.replace(tmp_out, args.out)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
