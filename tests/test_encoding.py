"""Length-sorted encoding: the same vectors, in input order, as batching in input order and as sentence-transformers."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig

import hf_kd
from hf_kd import BertDotModel, EncodedBatch
from hf_kd.data import read_collection_tsv
from hf_kd.models.ranking_functions import (
    CPU_MAX_BATCH_TOKENS,
    inverse_permutation,
    pad_sequences,
    resolve_max_batch_tokens,
    token_budget_batches,
)

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
OVERRIDES = {"bert_dot": {}, "colbert": {"compression_dim": 16}, "prett": {"split_layer": 1}, "tk": {}}


@pytest.fixture(scope="module")
def mixed_passages(ci_data) -> list[str]:
    """Twelve real DL20 passages whose lengths go up and down: short and long ones alternate, so batches taken in
    input order pad every short passage to a long one."""
    texts = sorted(read_collection_tsv(ci_data / "msmarco-dl20" / "collection.tsv").values(), key=len)
    short, long = texts[:6], texts[-6:]
    return [text for pair in zip(short, reversed(long)) for text in pair]


def encode_in_input_order(model, texts, tokenizer, tokenize, encode, batch_size: int) -> EncodedBatch:
    """What encoding did before it sorted: batches in input order, each tokenised and padded on its own."""
    batches = []
    for start in range(0, len(texts), batch_size):
        ids, mask = pad_sequences(tokenize(tokenizer, texts[start : start + batch_size]), tokenizer.pad_token_id)
        batches.append(encode(ids, mask))
    return EncodedBatch.cat(batches)


def assert_same_rows(got: EncodedBatch, expected: EncodedBatch, atol: float) -> None:
    """Equal vectors on real tokens (padding positions carry no meaning)."""
    assert len(got) == len(expected)
    if expected.mask is None:
        torch.testing.assert_close(got.embeddings, expected.embeddings, atol=atol, rtol=atol)
        return
    for row, reference in zip(got.unbind(), expected.unbind()):
        torch.testing.assert_close(row.mask, reference.mask)
        torch.testing.assert_close(row.embeddings, reference.embeddings, atol=atol, rtol=atol)


def test_token_budget_batches_sort_longest_first_and_restore_with_the_inverse():
    lengths = [1, 3, 2, 3, 0]
    batches = token_budget_batches(lengths, batch_size=2)
    assert batches == [[1, 3], [2, 0], [4]]
    order = [row for rows in batches for row in rows]
    assert torch.tensor(order)[inverse_permutation(order)].tolist() == list(range(len(lengths)))


def test_token_budget_batches_cap_rows_times_the_longest():
    lengths = [100, 30, 700, 50, 20, 40, 10, 60]
    batches = token_budget_batches(lengths, batch_size=3, max_tokens=150)
    # 700 alone (over the cap); 100 alone (2 x 100 > 150); 60 and 50 (3 x 60 > 150); 40, 30 and 20 (3 rows at most)
    assert batches == [[2], [0], [7, 3], [5, 1, 4], [6]]
    for rows in batches:
        assert len(rows) <= 3
        assert len(rows) == 1 or len(rows) * max(lengths[i] for i in rows) <= 150
    assert sorted(i for rows in batches for i in rows) == list(range(len(lengths)))
    assert token_budget_batches(lengths, batch_size=3, max_tokens=0) == token_budget_batches(lengths, batch_size=3)
    assert token_budget_batches([0, 0, 0], batch_size=2, max_tokens=1) == [[0, 1], [2]]


def test_max_batch_tokens_default_caps_on_cpu_only_and_rejects_bad_values():
    assert resolve_max_batch_tokens(None, torch.device("cpu")) == CPU_MAX_BATCH_TOKENS
    assert resolve_max_batch_tokens(None, "cuda") == 0
    assert resolve_max_batch_tokens(512, "cuda") == 512
    for bad in (-1, 1.5, True, "2048"):
        with pytest.raises(ValueError, match="max_batch_tokens must be an integer >= 0"):
            resolve_max_batch_tokens(bad, "cpu")


@pytest.mark.parametrize("architecture", sorted(OVERRIDES))
def test_sorted_encoding_equals_input_order_batches(architecture, mixed_passages, tokenizer):
    torch.manual_seed(0)
    model_class = hf_kd.model_class_for(architecture)
    config = model_class.config_class(backbone_config=BertConfig(**TINY), **OVERRIDES[architecture])
    model = model_class(config).eval()
    queries = [text[:60] for text in mixed_passages]
    with torch.no_grad():
        for texts, encode, tokenize, encode_tensors in (
            (mixed_passages, model.encode_passages, model.tokenize_passages, model.encode_passage_tensors),
            (queries, model.encode_queries, model.tokenize_queries, model.encode_query_tensors),
        ):
            expected = encode_in_input_order(model, texts, tokenizer, tokenize, encode_tensors, batch_size=4)
            assert_same_rows(encode(texts, tokenizer, batch_size=4), expected, atol=1e-5)


def test_minilm_bert_dot_encoding_equals_input_order_and_sentence_transformers(minilm_path, mixed_passages, tokenizer):
    from sentence_transformers import SentenceTransformer

    model = BertDotModel.from_backbone(
        minilm_path, pooling="mean", normalize_embeddings=True, max_passage_length=254
    ).eval()
    got = model.encode_passages(mixed_passages, tokenizer, batch_size=4)
    with torch.no_grad():
        old = encode_in_input_order(
            model, mixed_passages, tokenizer, model.tokenize_passages, model.encode_passage_tensors, batch_size=4
        )
    assert_same_rows(got, old, atol=1e-5)
    reference = SentenceTransformer(minilm_path, device="cpu")  # all-MiniLM-L6-v2: mean pooling + normalisation
    expected = reference.encode(mixed_passages, batch_size=4, convert_to_tensor=True)
    torch.testing.assert_close(got.embeddings, expected, atol=1e-5, rtol=1e-5)
