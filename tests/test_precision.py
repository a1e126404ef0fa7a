"""The training precision a run takes when the user does not choose one, and the backbone's dropout option."""

from __future__ import annotations

import pytest
import torch

from hf_kd.training import precision
from hf_kd.training.arguments import resolve_train_args
from hf_kd.training.run import build_model


def _cpuinfo_flags() -> set[str]:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        line = next(line for line in f if line.startswith("flags"))
    return set(line.split(":", 1)[1].split())


def test_the_cpu_flags_are_read_from_the_processor():
    found = precision.cpu_bf16_flags()
    assert set(found) == _cpuinfo_flags() & set(precision.BF16_CPU_FLAGS)


def test_without_a_choice_training_takes_bfloat16_where_the_cpu_has_it(tmp_path, minilm_path):
    base = {"backbone": minilm_path, "train_files": ["x"], "output_dir": str(tmp_path), "use_cpu": True}
    _, training = resolve_train_args(base)
    native = bool(precision.cpu_bf16_flags())
    assert training.bf16 is native and training.use_cpu
    _, forced = resolve_train_args({**base, "bf16": False})
    assert forced.bf16 is False
    _, chosen = resolve_train_args({**base, "bf16": True})
    assert chosen.bf16 is True


def test_no_bfloat16_units_means_float32_with_one_line(monkeypatch, capsys):
    monkeypatch.setattr(precision, "cpu_bf16_flags", lambda: ())
    bf16, why = precision.default_bf16(on_cuda=False)
    assert bf16 is False and "no bfloat16 matrix units" in why
    assert capsys.readouterr().err.strip() == f"hf-kd: training in {why}"
    assert precision.default_bf16(on_cuda=True)[0] is False


@pytest.mark.parametrize("dropout", [0.0, 0.25])
def test_backbone_dropout_sets_every_dropout_of_the_encoder_and_its_config(tmp_path, minilm_path, dropout):
    hf_kd_args, _ = resolve_train_args(
        {"backbone": minilm_path, "train_files": ["x"], "output_dir": str(tmp_path), "backbone_dropout": dropout}
    )
    model, _ = build_model(hf_kd_args)
    rates = {m.p for m in model.backbone.modules() if isinstance(m, torch.nn.Dropout)}
    assert rates == {dropout}
    assert model.config.backbone_config.hidden_dropout_prob == dropout
    assert model.config.backbone_config.attention_probs_dropout_prob == dropout
    if dropout == 0.0:  # no dropout noise: two forward passes in training mode agree
        model.train()
        ids = torch.tensor([[101, 2054, 2003, 1037, 4937, 102]])
        mask = torch.ones_like(ids)
        first = model.encode_query_tensors(ids, mask).embeddings
        assert torch.equal(first, model.encode_query_tensors(ids, mask).embeddings)
