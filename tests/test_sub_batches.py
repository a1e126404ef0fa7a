"""A padded batch encoded in length-sorted sub-batches, each trimmed to its own longest real token: the same scores
and gradients as the whole padded batch."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig

import hf_kd
from hf_kd import BertDotModel
from hf_kd.models.ranking_functions import length_sorted_sub_batches, real_width

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, initializer_range=0.5)
OVERRIDES = {
    "colbert": {"compression_dim": 16},
    "prett": {"split_layer": 1},
    "prett_after_query": {"split_layer": 1, "passage_positions": "after_query"},
    "tk": {},
}


@pytest.fixture(scope="module")
def triples(ci_data) -> tuple[list[str], list[str]]:
    """Eight real training triples: the queries and their passages (positive, negative), of mixed lengths."""
    lines = (ci_data / "msmarco-train-100.triples.tsv").read_text(encoding="utf-8").splitlines()[:8]
    rows = [line.split("\t") for line in lines]
    return [q for q, _, _ in rows], [p for _, pos, neg in rows for p in (pos, neg)]


def scores_and_gradients(model, inputs, min_sub_batch_size: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.config.min_sub_batch_size = min_sub_batch_size
    model.zero_grad()
    scores = model(**inputs).scores
    (scores * torch.linspace(-1, 1, len(scores))).sum().backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return scores.detach(), grads


def assert_split_equals_whole(model, inputs) -> None:
    model.eval()  # no dropout: both passes compute the same function
    whole_scores, whole_grads = scores_and_gradients(model, inputs, 0)
    split_scores, split_grads = scores_and_gradients(model, inputs, 4)
    assert_equal_to_1e5(split_scores, whole_scores, "scores")
    assert split_grads.keys() == whole_grads.keys() and whole_grads
    for name, grad in whole_grads.items():
        assert_equal_to_1e5(split_grads[name], grad, name)


def assert_equal_to_1e5(got: torch.Tensor, expected: torch.Tensor, name: str) -> None:
    """Equal up to float32 summation order: within 1e-5 of the tensor's largest magnitude."""
    scale = max(expected.abs().max().item(), 1.0)
    error = (got - expected).abs().max().item()
    assert error <= 1e-5 * scale, f"{name}: max difference {error:.3g}, largest value {scale:.3g}"


def test_sub_batches_are_length_sorted_and_cover_every_row():
    lengths = torch.tensor([3, 9, 1, 7, 7, 2, 5, 8, 4])
    mask = (torch.arange(10)[None, :] < lengths[:, None]).long()
    groups = length_sorted_sub_batches(mask, 2)
    assert [len(g) for g in groups] == [3, 2, 2, 2]  # 9 // 2 groups, the first one larger
    assert torch.cat(groups).tolist() == [1, 7, 3, 4, 6, 8, 0, 5, 2]
    assert [real_width(mask[g]) for g in groups] == [9, 7, 4, 2]
    assert [g.tolist() for g in length_sorted_sub_batches(mask, 0)] == [list(range(9))]
    assert [g.tolist() for g in length_sorted_sub_batches(mask, 5)] == [list(range(9))]  # too small to split


def test_min_sub_batch_size_is_a_config_value_saved_with_the_model(tmp_path):
    config = hf_kd.BertDotConfig(backbone_config={"model_type": "bert", **TINY})
    assert config.min_sub_batch_size == 16
    config.min_sub_batch_size = 4
    config.save_pretrained(tmp_path)
    assert hf_kd.BertDotConfig.from_pretrained(tmp_path).min_sub_batch_size == 4
    with pytest.raises(ValueError, match="min_sub_batch_size must be an integer >= 0"):
        hf_kd.BertDotConfig(backbone_config={"model_type": "bert", **TINY}, min_sub_batch_size=-1)


@pytest.mark.parametrize("pooling, normalize", [("cls", False), ("mean", True)])
def test_minilm_bert_dot_split_equals_whole_batch(pooling, normalize, minilm_path, tokenizer, triples):
    torch.manual_seed(0)
    model = BertDotModel.from_backbone(minilm_path, pooling=pooling, normalize_embeddings=normalize)
    queries, passages = triples
    inputs = model.prepare_inputs(queries, passages, tokenizer)
    widths = []
    model.backbone.register_forward_hook(
        lambda module, args, kwargs, out: widths.append(kwargs["input_ids"].shape), with_kwargs=True
    )
    with torch.no_grad():
        model.config.min_sub_batch_size = 4
        model(**inputs)
    lengths = inputs["passage_attention_mask"].sum(dim=1).sort(descending=True).values
    assert widths[-4:] == [torch.Size([4, int(lengths[i])]) for i in (0, 4, 8, 12)]  # each trimmed to its longest
    assert_split_equals_whole(model, inputs)


@pytest.mark.parametrize("architecture", sorted(OVERRIDES))
def test_other_architectures_split_equals_whole_batch(architecture, tokenizer, triples):
    torch.manual_seed(0)
    model_class = hf_kd.model_class_for(architecture.removesuffix("_after_query"))
    model = model_class(model_class.config_class(backbone_config=BertConfig(**TINY), **OVERRIDES[architecture]))
    queries, passages = triples
    assert_split_equals_whole(model, model.prepare_inputs(queries, passages, tokenizer))
