"""A truncated or corrupt `model.safetensors` is a one-line error naming the file, in every command that loads one;
the traceback comes only with --debug or HF_KD_DEBUG=1."""

from __future__ import annotations

import shutil
from pathlib import Path

import datasets
import pytest
import torch
import yaml
from safetensors import SafetensorError, safe_open
from transformers import BertConfig

from hf_kd import BertDotConfig, BertDotModel
from hf_kd.cli import error_line, main
from hf_kd.files import WeightFileError

INCOMPLETE = "Error while deserializing header: incomplete metadata, file not fully covered"


@pytest.fixture(scope="module")
def dot_model(tmp_path_factory, tokenizer) -> Path:
    torch.manual_seed(0)
    backbone = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    folder = tmp_path_factory.mktemp("models") / "dot"
    BertDotModel(BertDotConfig(backbone_config=backbone)).save_pretrained(folder, tokenizer=tokenizer)
    return folder


@pytest.fixture()
def truncated(dot_model, tmp_path) -> Path:
    """A copy of the model whose `model.safetensors` lost its last half."""
    folder = tmp_path / "truncated"
    shutil.copytree(dot_model, folder)
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    return folder


def _expected(folder: Path, command: str) -> str:
    return (
        f"hf-kd {command}: error: {folder / 'model.safetensors'} is not a valid safetensors file (truncated?): "
        f"{INCOMPLETE}; copy or download it again (--debug shows the traceback)"
    )


def _error(capsys) -> str:
    return capsys.readouterr().err.splitlines()[-1]


def test_evaluate_and_index_name_the_truncated_file(truncated, ci_data, tmp_path, capsys, monkeypatch):
    dl20 = ci_data / "msmarco-dl20"
    argv = ["evaluate", "--model", str(truncated), "--run", str(dl20 / "runs" / "bm25.top30.trec")]
    argv += ["--queries", str(dl20 / "queries.tsv"), "--collection", str(dl20 / "collection.tsv")]
    argv += ["--qrels", str(dl20 / "qrels.txt"), "--out", str(tmp_path / "eval"), "--device", "cpu"]
    assert main(argv) == 1
    assert _error(capsys) == _expected(truncated, "evaluate")

    index = ["index", "--model", str(truncated), "--collection", str(dl20 / "collection.tsv")]
    assert main([*index, "--out", str(tmp_path / "index"), "--device", "cpu"]) == 1
    assert _error(capsys) == _expected(truncated, "index")
    assert not (tmp_path / "index").exists() and not (tmp_path / "index.partial").exists()

    with pytest.raises(WeightFileError):
        main([*argv, "--debug"])
    monkeypatch.setenv("HF_KD_DEBUG", "1")
    with pytest.raises(WeightFileError):
        main(argv)


def test_train_from_a_truncated_checkpoint_names_the_file(truncated, ci_data, tmp_path, capsys):
    rows = [line.split("\t") for line in (ci_data / "msmarco-train-100.triples.tsv").read_text().splitlines()[:4]]
    train_file = tmp_path / "scored.parquet"
    datasets.Dataset.from_dict(
        {
            "query": [r[0] for r in rows],
            "positive": [r[1] for r in rows],
            "negative": [r[2] for r in rows],
            "pos_score": [1.0] * 4,
            "neg_score": [0.0] * 4,
        }
    ).to_parquet(train_file)
    config = {
        "architecture": "bert_dot",
        "model_name_or_path": str(truncated),
        "loss": "margin_mse",
        "train_files": [str(train_file)],
        "output_dir": str(tmp_path / "out"),
        "max_steps": 1,
        "report_to": "none",
        "use_cpu": True,
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    assert main(["train", "--config", str(tmp_path / "run.yaml")]) == 1
    assert _error(capsys) == _expected(truncated, "train")


def test_score_names_the_file_of_a_corrupt_header(dot_model, ci_data, tmp_path, capsys):
    corrupt = tmp_path / "corrupt"
    shutil.copytree(dot_model, corrupt)
    weights = corrupt / "model.safetensors"
    weights.write_bytes(b"\xff" * 16 + weights.read_bytes()[16:])
    argv = ["score", "--teacher", str(corrupt), "--triples", str(ci_data / "msmarco-train-100.triples.tsv")]
    assert main([*argv, "--out", str(tmp_path / "scores"), "--device", "cpu"]) == 1
    assert _error(capsys) == (
        f"hf-kd score: error: {weights} is not a valid safetensors file (truncated?): Error while deserializing "
        "header: header too large; copy or download it again (--debug shows the traceback)"
    )


def _caught(function, *args) -> SafetensorError:
    try:
        function(*args)
    except SafetensorError as error:
        return error
    pytest.fail("no SafetensorError")


def _open_path(path: str) -> None:
    with safe_open(path, framework="pt"):
        pass


def _open_unnamed(folder: Path) -> None:
    with safe_open(str(folder) + "/model.safetensors", framework="pt"):  # no local variable holds the file's path
        pass


def test_an_unwrapped_safetensors_error_is_named_at_the_command_line_boundary(truncated):
    weights = truncated / "model.safetensors"
    assert error_line(_caught(_open_path, str(weights))) == (
        f"{weights} is not a valid safetensors file (truncated?): {INCOMPLETE}; copy or download it again"
    )
    assert error_line(_caught(_open_unnamed, truncated)) == (
        f"a weight file is not a valid safetensors file (truncated?): {INCOMPLETE}; copy or download it again"
    )
