"""Weight averaging of like checkpoints (`hf-kd average-checkpoints`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from hf_kd import BertDotConfig, BertDotModel, ColBERTConfig, ColBERTModel
from hf_kd.training.averaging import AVERAGE_RECORD, average_checkpoints
from hf_kd.training.commands import add_subcommands


def _perturbed_copy(source: Path, folder: Path, tokenizer, seed: int) -> Path:
    """The checkpoint in `source` with every weight moved by seeded noise, as a differently trained student."""
    model = BertDotModel.from_pretrained(source)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.1)
    model.save_pretrained(folder, tokenizer=tokenizer)
    return folder


@pytest.fixture(scope="module")
def students(tiny_dot_folder: Path, tokenizer, tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("students")
    return [_perturbed_copy(tiny_dot_folder, root / f"s{seed}", tokenizer, seed) for seed in (1, 2, 3)]


def test_the_average_holds_the_weighted_mean_of_every_weight(students, tmp_path, tokenizer):
    out = average_checkpoints(students[:2], tmp_path / "soup", weights=[3, 1])
    states = [BertDotModel.from_pretrained(folder).state_dict() for folder in students[:2]]
    averaged = BertDotModel.from_pretrained(out)
    for name, tensor in averaged.state_dict().items():
        expected = 0.75 * states[0][name] + 0.25 * states[1][name] if tensor.is_floating_point() else states[0][name]
        torch.testing.assert_close(tensor, expected, atol=1e-6, rtol=1e-6)
    assert not torch.equal(averaged.state_dict()["backbone.embeddings.word_embeddings.weight"], states[0][
        "backbone.embeddings.word_embeddings.weight"
    ])  # fmt: skip

    # a complete checkpoint: scores after a reload equal the averaged model's, the tokenizer and the record are there
    queries, passages = ["what is a soup"] * 2, ["A soup is a liquid food.", "Cats sleep all day."]
    reloaded = BertDotModel.from_pretrained(out).eval()
    with torch.no_grad():
        assert torch.equal(
            reloaded.score(queries, passages, tokenizer), averaged.eval().score(queries, passages, tokenizer)
        )
    assert (out / "tokenizer.json").is_file() and (out / "modules.json").is_file()
    record = json.loads((out / AVERAGE_RECORD).read_text(encoding="utf-8"))
    assert [c["weight"] for c in record["checkpoints"]] == [0.75, 0.25]
    assert [c["path"] for c in record["checkpoints"]] == [str(p.resolve()) for p in students[:2]]


def test_uniform_average_of_three_through_the_cli(students, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_subcommands(parser.add_subparsers())
    args = parser.parse_args(["average-checkpoints", *map(str, students), "--out", str(tmp_path / "soup")])
    assert args.func(args) == 0
    assert "3 checkpoints averaged" in capsys.readouterr().out
    states = [BertDotModel.from_pretrained(folder).state_dict() for folder in students]
    averaged = BertDotModel.from_pretrained(tmp_path / "soup").state_dict()
    name = "backbone.encoder.layer.0.attention.self.query.weight"
    torch.testing.assert_close(averaged[name], sum(state[name] for state in states) / 3, atol=1e-6, rtol=1e-6)


def test_unlike_checkpoints_and_bad_arguments_are_refused(students, tiny_dot_folder, tokenizer, tmp_path):
    backbone = BertDotModel.from_pretrained(tiny_dot_folder).config.backbone_config
    other = tmp_path / "colbert"
    ColBERTModel(ColBERTConfig(backbone_config=backbone)).save_pretrained(other, tokenizer=tokenizer)
    with pytest.raises(ValueError, match=r"colbert is a hfkd_colbert checkpoint, .*s1 a hfkd_bert_dot one"):
        average_checkpoints([students[0], other], tmp_path / "out")
    pooled = tmp_path / "mean-pooled"
    BertDotModel(BertDotConfig(backbone_config=backbone, pooling="mean")).save_pretrained(pooled, tokenizer=tokenizer)
    with pytest.raises(ValueError, match=r"mean-pooled is not the architecture of .*s1 \(pooling: 'cls' vs 'mean'\)"):
        average_checkpoints([students[0], pooled], tmp_path / "out")
    with pytest.raises(ValueError, match="two or more checkpoints"):
        average_checkpoints(students[:1], tmp_path / "out")
    with pytest.raises(ValueError, match="expected 2 non-negative weights"):
        average_checkpoints(students[:2], tmp_path / "out", weights=[1.0, -1.0])
    with pytest.raises(FileNotFoundError, match="not a checkpoint folder"):
        average_checkpoints([students[0], tmp_path], tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing written by a refused call
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    with pytest.raises(FileExistsError, match="already exists"):
        average_checkpoints(students[:2], tmp_path / "taken")
