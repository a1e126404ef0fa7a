"""Cached passages are encoded in one call per chunk and scored in length-sorted batches: the same representations
and scores as encoding and scoring in candidate order."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig

import hf_kd
from hf_kd import EncodedBatch
from hf_kd.data import read_collection_tsv, read_queries_tsv
from hf_kd.evaluation.dense import encode_texts
from hf_kd.evaluation.rerank import encode_passage_cache, length_sorted_batches, score_cached

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, initializer_range=1.0)
OVERRIDES = {"bert_dot": {}, "colbert": {"compression_dim": 16}, "prett": {"split_layer": 1}, "tk": {}}


@pytest.fixture(scope="module", autouse=True)
def single_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def mixed_passages(ci_data) -> list[str]:
    """Twenty real DL20 passages, short and long alternating: batches in input order pad short ones to long ones."""
    texts = sorted(read_collection_tsv(ci_data / "msmarco-dl20" / "collection.tsv").values(), key=len)
    short, long = texts[:10], texts[-10:]
    return [text for pair in zip(short, reversed(long)) for text in pair]


@pytest.fixture(scope="module")
def query(ci_data) -> str:
    return next(iter(read_queries_tsv(ci_data / "msmarco-dl20" / "queries.tsv").values()))


def tiny_model(architecture: str):
    torch.manual_seed(0)
    model_class = hf_kd.model_class_for(architecture)
    return model_class(model_class.config_class(backbone_config=BertConfig(**TINY), **OVERRIDES[architecture])).eval()


class CountingEncoder:
    """Forwards to a model and records the size of every `encode_passages` call."""

    def __init__(self, model):
        self.model = model
        self.calls: list[int] = []

    def encode_passages(self, texts, tokenizer, batch_size=64):
        self.calls.append(len(texts))
        return self.model.encode_passages(texts, tokenizer, batch_size=batch_size)

    encode_queries = encode_passages


def assert_rows_equal(got: EncodedBatch, expected: EncodedBatch) -> None:
    torch.testing.assert_close(got.embeddings, expected.embeddings, atol=1e-5, rtol=1e-5)
    if expected.mask is not None:
        torch.testing.assert_close(got.mask, expected.mask)


@pytest.mark.parametrize("architecture", sorted(OVERRIDES))
def test_passage_cache_is_one_encoding_call_with_equal_rows(architecture, mixed_passages, tokenizer):
    model = tiny_model(architecture)
    counting = CountingEncoder(model)
    passages = {f"p{i}": text for i, text in enumerate(mixed_passages)}
    cache = encode_passage_cache(counting, tokenizer, passages, batch_size=4, show_progress=False)
    assert counting.calls == [len(passages)]  # the model's token-length sort sees every passage
    for pid, text in passages.items():
        assert_rows_equal(cache[pid], model.encode_passages([text], tokenizer))


def test_dense_encoding_is_one_call_per_chunk_with_equal_vectors(mixed_passages, tokenizer):
    model = tiny_model("bert_dot")
    counting = CountingEncoder(model)
    vectors = encode_texts(counting, tokenizer, mixed_passages, batch_size=4, show_progress=False)
    assert counting.calls == [len(mixed_passages)]
    expected = torch.cat([model.encode_passages([text], tokenizer).embeddings for text in mixed_passages])
    torch.testing.assert_close(torch.from_numpy(vectors), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("architecture", sorted(OVERRIDES))
def test_length_sorted_scoring_equals_candidate_order(architecture, mixed_passages, query, tokenizer):
    model = tiny_model(architecture)
    cache = encode_passage_cache(model, tokenizer, dict(enumerate(mixed_passages)), show_progress=False)
    representations = [cache[i] for i in range(len(mixed_passages))]
    encoded_query = model.encode_queries([query], tokenizer)
    in_order = torch.cat(
        [
            model.score_encoded(encoded_query, EncodedBatch.cat(representations[start : start + 4]))
            for start in range(0, len(representations), 4)
        ]
    )
    batches, restore = length_sorted_batches(representations, batch_size=4)
    torch.testing.assert_close(score_cached(model, encoded_query, batches, restore), in_order, atol=1e-5, rtol=1e-5)
    assert len(set(in_order.tolist())) == len(mixed_passages)  # the random model tells the passages apart
    if representations[0].mask is not None:
        widths = [batch.mask.shape[1] for batch in batches]
        assert widths == sorted(widths, reverse=True)
        padded = sum(batch.mask.numel() for batch in batches)
        assert padded < sum(EncodedBatch.cat(representations[s : s + 4]).mask.numel() for s in range(0, 20, 4))


@pytest.mark.parametrize("architecture", sorted(OVERRIDES))
def test_only_joint_pair_scoring_is_sliced_under_the_token_cap(architecture, mixed_passages, query, tokenizer):
    model = tiny_model(architecture)
    passages = model.encode_passages(mixed_passages, tokenizer)
    encoded_query = model.encode_queries([query], tokenizer)
    widths = []
    hook = model.score_pairs

    def recording(queries, passages):
        widths.append(len(passages) * (0 if passages.mask is None else queries.mask.shape[1] + passages.mask.shape[1]))
        return hook(queries, passages)

    model.score_pairs = recording
    uncapped = model.score_encoded(encoded_query, passages, max_batch_tokens=0)
    assert len(widths) == 1
    widths.clear()
    joint = encoded_query.mask.shape[1] + passages.mask.shape[1] if passages.mask is not None else 0
    capped = model.score_encoded(encoded_query, passages, max_batch_tokens=3 * joint + 1)
    torch.testing.assert_close(capped, uncapped, atol=1e-5, rtol=1e-5)
    if architecture == "prett":
        assert len(widths) == 7 and max(widths) <= 3 * joint  # 20 pairs, 3 a slice
    else:
        assert len(widths) == 1  # one matrix product or kernel pass: nothing to gain from slicing
