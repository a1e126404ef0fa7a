"""A saved ColBERT checkpoint is a sentence-transformers MultiVectorEncoder with hf-kd's token vectors and scores."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import dl20_pairs
from transformers import AutoTokenizer, BertConfig

from hf_kd import ColBERTConfig, ColBERTModel
from hf_kd.models.sentence_transformers_layout import sentence_transformers_files

TOLERANCE = {"atol": 1e-5, "rtol": 1e-5}
LONG_QUERY = "what is the " + "very " * 60 + "long query about rivers"
LONG_PASSAGE = "The river flows through the valley, past the old mill. " * 40


def build(seed: int = 0, **overrides) -> ColBERTModel:
    torch.manual_seed(seed)
    backbone = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    overrides.setdefault("compression_dim", 16)
    return ColBERTModel(ColBERTConfig(backbone_config=backbone, **overrides)).eval()


@pytest.fixture(scope="module")
def texts(ci_data):
    """Real DL20 queries and BM25 candidates from the ci cut, plus an over-long query and passage."""
    qs, ps = dl20_pairs(ci_data, max_rank=1)
    return qs[:5] + [LONG_QUERY, "cat"], ps[:5] + [LONG_PASSAGE, "A cat."]


def rows(encoded) -> list[torch.Tensor]:
    """hf-kd's vectors per text, restricted to the real tokens."""
    return [row.embeddings[0] for row in encoded.unbind()]


def assert_rows_equal(got: list[torch.Tensor], expected: list[torch.Tensor]) -> None:
    assert [tuple(g.shape) for g in got] == [tuple(e.shape) for e in expected]
    for g, e in zip(got, expected):
        torch.testing.assert_close(g.cpu(), e, **TOLERANCE)


@pytest.mark.parametrize(
    "overrides",
    [
        {},  # paper defaults: 30 / 200 word pieces, 8 [MASK] tokens, raw dot products
        {"normalize_embeddings": True, "query_augmentation_tokens": 0, "max_query_length": 4, "max_passage_length": 9},
        {"normalize_embeddings": True, "mean_maxsim": True, "compression_dim": 32, "compression_init": "identity"},
    ],
    ids=["defaults", "normalized-short-no-augmentation", "mean-maxsim-identity"],
)
def test_colbert_checkpoint_is_a_multi_vector_encoder(overrides, tmp_path, texts, tokenizer):
    from sentence_transformers import MultiVectorEncoder
    from sentence_transformers.base.modules import Normalize, Transformer
    from sentence_transformers.multi_vector_encoder.modules import MultiVectorMask

    model = build(**overrides)
    model.save_pretrained(tmp_path, tokenizer=tokenizer)
    encoder = MultiVectorEncoder(str(tmp_path))
    expected_modules = [Transformer, *([Normalize] if model.config.normalize_embeddings else []), MultiVectorMask]
    assert [type(m) for m in encoder] == expected_modules
    assert encoder.similarity_fn_name == ("meanmaxsim" if model.config.mean_maxsim else "maxsim")
    queries, passages = texts

    # documents: every real token of [CLS] p [SEP], p truncated at max_passage_length
    encoded_passages = model.encode_passages(passages, tokenizer)
    documents = encoder.encode_document(passages, batch_size=3)
    assert_rows_equal(documents, rows(encoded_passages))
    assert documents[-2].shape[0] == model.config.max_passage_length + 2  # the over-long passage is truncated
    assert_rows_equal(encoder.encode(passages, batch_size=4), documents)  # no task: encoded as documents
    # queries: [CLS] q [SEP] + the [MASK] augmentation tokens, for short, typical and truncated queries alike
    encoded_queries = model.encode_queries(queries, tokenizer)
    query_vectors = encoder.encode_query(queries, batch_size=3)
    assert_rows_equal(query_vectors, rows(encoded_queries))
    config = model.config
    assert query_vectors[-2].shape[0] == config.max_query_length + 2 + config.query_augmentation_tokens  # truncated

    # the encoder's MaxSim equals hf-kd's scores: aligned pairs and the all-pairs matrix
    scores = encoder.similarity_pairwise(query_vectors, documents)
    torch.testing.assert_close(scores.cpu(), model.score(queries, passages, tokenizer), atol=1e-4, rtol=1e-5)
    matrix = encoder.similarity(query_vectors[:2], documents)
    expected = torch.stack([model.score_encoded(encoded_queries[i], encoded_passages) for i in range(2)])
    torch.testing.assert_close(matrix.cpu(), expected, atol=1e-4, rtol=1e-5)


def test_embed_tokens_are_the_projected_token_vectors(tokenizer):
    model = build(normalize_embeddings=True)
    ids = torch.tensor([[tokenizer.cls_token_id, 2054, 2003, tokenizer.sep_token_id, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    with torch.no_grad():
        projected = model.embed_tokens(ids, mask).last_hidden_state
        hidden = model.backbone(input_ids=ids, attention_mask=mask).last_hidden_state
        encoded = model.encode_passage_tensors(ids, mask)
    assert projected.shape == (1, 5, 16)
    torch.testing.assert_close(projected, model.compressor(hidden))
    # encoding = the projected vectors, L2-normalised when configured, with padding zeroed
    torch.testing.assert_close(encoded.embeddings, torch.nn.functional.normalize(projected, dim=-1) * mask[..., None])


def test_layout_files_are_written_and_leave_the_tokenizer_alone(tmp_path, tokenizer):
    model = build(normalize_embeddings=True)
    model.save_pretrained(tmp_path, tokenizer=tokenizer)
    layout = sentence_transformers_files(model.config)
    for relative_path, content in layout.items():
        assert json.loads((tmp_path / relative_path).read_text()) == content
    config = layout["sentence_bert_config.json"]
    assert config["query_length"] == 30 + 2 + 8 and config["document_length"] == 202
    assert config["query_expansion"] is None and "[MASK]" not in json.dumps(config)  # the tokenizer's own tokens
    assert layout["config_sentence_transformers.json"]["model_type"] == "MultiVectorEncoder"
    # the chat template only reaches the encoder's tokenizer: hf-kd's tokenizer is unchanged
    assert AutoTokenizer.from_pretrained(tmp_path).chat_template is None
    assert not (tmp_path / "chat_template.jinja").exists()


def test_multi_vector_encoder_loads_without_hf_kd(tmp_path, texts, tokenizer):
    model = build(seed=3)
    model.save_pretrained(tmp_path, tokenizer=tokenizer)
    queries, passages = texts
    script = """
import json, sys
sys.modules["hf_kd"] = None  # any `import hf_kd` now fails
from sentence_transformers import MultiVectorEncoder
queries, passages = json.loads(sys.argv[1])
encoder = MultiVectorEncoder(sys.argv[2], trust_remote_code=True)
assert not type(encoder[0].model).__module__.startswith("hf_kd"), type(encoder[0].model).__module__
q, d = encoder.encode_query(queries), encoder.encode_document(passages)
out = {"queries": [v.tolist() for v in q], "documents": [v.tolist() for v in d],
       "scores": encoder.similarity_pairwise(q, d).tolist()}
print("RESULT" + json.dumps(out))
"""
    result = subprocess.run(
        [sys.executable, "-c", script, json.dumps([queries, passages]), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads(result.stdout.split("RESULT", 1)[1])
    assert_rows_equal([torch.tensor(v) for v in payload["queries"]], rows(model.encode_queries(queries, tokenizer)))
    assert_rows_equal([torch.tensor(v) for v in payload["documents"]], rows(model.encode_passages(passages, tokenizer)))
    expected = model.score(queries, passages, tokenizer)
    torch.testing.assert_close(torch.tensor(payload["scores"]), expected, atol=1e-4, rtol=1e-5)


def test_identity_compression_starts_from_the_backbone_token_vectors_and_loads_trained_weights(tmp_path, tokenizer):
    model = build(compression_dim=32, compression_init="identity", normalize_embeddings=True, mean_maxsim=True)
    ids = torch.tensor([[tokenizer.cls_token_id, 2054, 2003, tokenizer.sep_token_id]])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        hidden = model.backbone(input_ids=ids, attention_mask=mask).last_hidden_state
        torch.testing.assert_close(model.embed_tokens(ids, mask).last_hidden_state, hidden)
        model.compressor.weight.mul_(0.5)  # as training moves it
    model.save_pretrained(tmp_path, tokenizer=tokenizer)
    loaded = ColBERTModel.from_pretrained(tmp_path)
    torch.testing.assert_close(loaded.compressor.weight, model.compressor.weight)  # not re-initialised
    assert loaded.config.mean_maxsim and loaded.config.compression_init == "identity"


def test_identity_compression_needs_the_hidden_size():
    with pytest.raises(ValueError, match=r"needs compression_dim equal to .*\(32\), got 16"):
        build(compression_dim=16, compression_init="identity")
    with pytest.raises(ValueError, match="compression_init must be one of random, identity, got 'eye'"):
        build(compression_init="eye")
