"""What one `hf-kd adapt` costs end to end: the seconds of each stage and the peak memory, against the targets of a
SciFact adaptation on two idle cores (45 minutes, 6 GB).

The adaptation runs in this process, in a fresh output folder (nothing is reused), with the budget and overrides
given; the peak memory is the process's largest resident set (`ru_maxrss`), sampled after each stage too. The
processor (model, cores, bfloat16 units) is written beside the numbers: times hold for that machine only.

    python benchmarks/adapt_cost.py --corpus ../shared/data/scifact --queries ../shared/data/scifact \
        --queries-split train --budget short --set "settings=[teacher]" [--out outputs/adapt_cost.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
TARGET_MINUTES = 45
TARGET_PEAK_GB = 6.0


def peak_memory_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # kilobytes on Linux


def main() -> None:
    from hf_kd.adapt import get_adapt_budget, run_adaptation
    from hf_kd.hardware import processor_summary
    from hf_kd.jobs import parse_overrides

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", required=True, help="a BEIR folder or a collection TSV")
    parser.add_argument("--queries", default=None, help="a query log (default: pseudo-queries)")
    parser.add_argument("--queries-split", default="train")
    parser.add_argument("--budget", default="short")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--work-dir", type=Path, default=None, help="where the adaptation runs (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "outputs" / "adapt_cost.json")
    args = parser.parse_args()

    budget = get_adapt_budget(args.budget, parse_overrides(args.overrides))
    with tempfile.TemporaryDirectory(dir=args.work_dir) as folder:
        start = time.perf_counter()
        results = run_adaptation(
            args.corpus, Path(folder) / "adapt", budget, queries=args.queries, queries_split=args.queries_split
        )
        wall = time.perf_counter() - start
    peak = peak_memory_gb()
    rows = [{"stage": name, "seconds": seconds} for name, seconds in results["stage_seconds"].items()]
    record = {
        "benchmark": "adapt_cost",
        "corpus": str(args.corpus),
        "queries": args.queries,
        "budget": budget.to_dict(),
        "processor": processor_summary(),
        "torch_threads": __import__("torch").get_num_threads(),
        "bf16": results["bf16"],
        "results": rows,
        "wall_minutes": round(wall / 60, 2),
        "peak_memory_gb": round(peak, 2),
        "targets": {"minutes": TARGET_MINUTES, "peak_memory_gb": TARGET_PEAK_GB},
        "within_targets": wall / 60 <= TARGET_MINUTES and peak <= TARGET_PEAK_GB,
    }
    print(
        f"adapt {args.budget} on {args.corpus} ({record['processor']['model']}, {record['processor']['cores']} cores)"
    )
    print("| stage | seconds |")
    print("|---|---|")
    for row in rows:
        print(f"| {row['stage']} | {row['seconds']:.1f} |")
    print(f"| **all** | {wall:.1f} ({wall / 60:.1f} min; target {TARGET_MINUTES}) |")
    print(f"peak memory: {peak:.2f} GB (target {TARGET_PEAK_GB})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
