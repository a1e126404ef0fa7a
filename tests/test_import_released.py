"""`hf-kd import`: the paper's four released layouts, built here with random weights under their exact key names,
import into hf-kd models whose scores equal the paper's equations computed directly on the released tensors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import dl20_pairs
from huggingface_hub import HfApi
from transformers import AutoModel, DistilBertConfig

import hf_kd
from hf_kd.cli import main
from hf_kd.hub.released import ReleasedLayoutError, import_released
from tests.hub_server import HubServer, hub_server_fixture  # noqa: F401 - fixture

# The cards' DistilBERT (6 layers, dim 768) shrunk: 4 layers so PreTTR can join at layer 3; the uncased vocabulary.
TINY = {"vocab_size": 30522, "dim": 32, "n_layers": 4, "n_heads": 2, "hidden_dim": 64}
CLS, SEP, MASK = 101, 102, 103
MAX_QUERY, MAX_PASSAGE = 30, 200


def distilbert_keys(prefix: str = "", num_layers: int = TINY["n_layers"]) -> list[str]:
    """DistilBertModel's state-dict names, written out (the layout the releases were saved in)."""
    keys = ["embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight"]
    keys += ["embeddings.LayerNorm.weight", "embeddings.LayerNorm.bias"]
    for layer in range(num_layers):
        for module in ("attention.q_lin", "attention.k_lin", "attention.v_lin", "attention.out_lin", "sa_layer_norm"):
            keys += [f"transformer.layer.{layer}.{module}.weight", f"transformer.layer.{layer}.{module}.bias"]
        for module in ("ffn.lin1", "ffn.lin2", "output_layer_norm"):
            keys += [f"transformer.layer.{layer}.{module}.weight", f"transformer.layer.{layer}.{module}.bias"]
    return [prefix + key for key in keys]


def shape_of(key: str, sizes: dict = TINY) -> tuple[int, ...]:
    dim, hidden = sizes["dim"], sizes["hidden_dim"]
    if key.endswith("word_embeddings.weight"):
        return (sizes["vocab_size"], dim)
    if key.endswith("position_embeddings.weight"):
        return (512, dim)
    if key.endswith("lin1.weight"):
        return (hidden, dim)
    if key.endswith("lin1.bias"):
        return (hidden,)
    if key.endswith("lin2.weight"):
        return (dim, hidden)
    if key.endswith("_lin.weight"):
        return (dim, dim)
    if key.startswith("_classification_layer.weight"):
        return (1, dim)
    if key.startswith("_classification_layer.bias"):
        return (1,)
    if key == "compressor.weight":
        return (dim, dim)  # the release kept 768 = dim: no compression
    return (dim,)


def released_state_keys(layout: str) -> list[str]:
    return {
        "dot": distilbert_keys(),
        "cat": distilbert_keys("bert_model.") + ["_classification_layer.weight", "_classification_layer.bias"],
        "colbert": distilbert_keys("bert_model.") + ["compressor.weight", "compressor.bias"],
        "prettr": distilbert_keys() + ["_classification_layer.weight"],
    }[layout]


def released_state(layout: str) -> dict[str, torch.Tensor]:
    keys = released_state_keys(layout)
    generator = torch.Generator().manual_seed(len(layout))
    state = {}
    for key in keys:
        tensor = torch.randn(shape_of(key), generator=generator) * 0.3
        if "LayerNorm.weight" in key or "layer_norm.weight" in key:
            tensor = 1.0 + tensor
        state[key] = tensor
    return state


def write_released(folder: Path, layout: str, backbone_folder: Path, state=None) -> dict[str, torch.Tensor]:
    """A released checkpoint as on the Hub: config.json and a pickled pytorch_model.bin, no tokenizer."""
    folder.mkdir(parents=True, exist_ok=True)
    state = released_state(layout) if state is None else state
    distilbert = {"model_type": "distilbert", **DistilBertConfig(**TINY).to_diff_dict()}
    config = {
        "dot": {**distilbert, "architectures": ["DistilBertModel"]},
        "cat": {"architectures": ["BERT_Cat"], "model_type": "BERT_Cat", "bert_model": str(backbone_folder)},
        "colbert": {
            "architectures": ["ColBERT"],
            "model_type": "ColBERT",
            "bert_model": str(backbone_folder),
            "compression_dim": TINY["dim"],
            "dropout": 0.0,
            "return_vecs": False,
            "trainable": True,
        },
        "prettr": {**distilbert, "architectures": ["PreTTR"]},  # join_layer_idx was a class attribute: not saved
    }[layout]
    (folder / "config.json").write_text(json.dumps(config))
    torch.save(state, folder / "pytorch_model.bin")
    return state


@pytest.fixture(scope="module")
def backbone_folder(tmp_path_factory) -> Path:
    """What `bert_model` names in the CAT and ColBERT configs (there: distilbert-base-uncased)."""
    folder = tmp_path_factory.mktemp("tiny-distilbert")
    DistilBertConfig(**TINY).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def pairs(ci_data) -> tuple[list[str], list[str]]:
    queries, passages = dl20_pairs(ci_data, max_rank=2)
    return queries[:6], passages[:6]  # three queries of different lengths, two passages each


# ---- the paper's equations, on the released tensors ---------------------------------------------------------------


def layer_norm(x, state, name):
    return torch.nn.functional.layer_norm(x, x.shape[-1:], state[f"{name}.weight"], state[f"{name}.bias"], 1e-12)


def linear(x, state, name):
    return x @ state[f"{name}.weight"].T + state[f"{name}.bias"]


def embed(state, prefix, ids, first_position):
    positions = torch.arange(first_position, first_position + len(ids))
    x = (
        state[f"{prefix}embeddings.word_embeddings.weight"][ids]
        + state[f"{prefix}embeddings.position_embeddings.weight"][positions]
    )
    return layer_norm(x, state, f"{prefix}embeddings.LayerNorm")


def distilbert_layers(state, prefix, x, layers) -> torch.Tensor:
    """DistilBERT transformer blocks on one unpadded sequence x (L, dim): post-norm self-attention and GELU FFN."""
    heads = TINY["n_heads"]
    for layer in layers:
        name = f"{prefix}transformer.layer.{layer}"
        q, k, v = (linear(x, state, f"{name}.attention.{p}_lin").view(len(x), heads, -1).transpose(0, 1) for p in "qkv")
        attention = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(q.shape[-1]), dim=-1)
        context = (attention @ v).transpose(0, 1).reshape(len(x), -1)
        x = layer_norm(linear(context, state, f"{name}.attention.out_lin") + x, state, f"{name}.sa_layer_norm")
        ffn = linear(torch.nn.functional.gelu(linear(x, state, f"{name}.ffn.lin1")), state, f"{name}.ffn.lin2")
        x = layer_norm(ffn + x, state, f"{name}.output_layer_norm")
    return x


def encode(state, prefix, ids, first_position=0, layers=range(TINY["n_layers"])):
    return distilbert_layers(state, prefix, embed(state, prefix, ids, first_position), layers)


def word_pieces(tokenizer, text, max_length):
    return tokenizer(text, add_special_tokens=False, truncation=True, max_length=max_length)["input_ids"]


def reference_score(layout, state, tokenizer, query, passage) -> float:
    q, p = word_pieces(tokenizer, query, MAX_QUERY), word_pieces(tokenizer, passage, MAX_PASSAGE)
    if layout == "dot":  # CLS(q) . CLS(p)
        return float(encode(state, "", [CLS, *q, SEP])[0] @ encode(state, "", [CLS, *p, SEP])[0])
    if layout == "cat":  # Linear(CLS([CLS] q [SEP] p [SEP]))
        cls = encode(state, "bert_model.", [CLS, *q, SEP, *p, SEP])[0]
        return float(linear(cls, state, "_classification_layer"))
    if layout == "colbert":  # sum_i max_j compressed(q)_i . compressed(p)_j, query + 8 [MASK]
        queries = linear(encode(state, "bert_model.", [CLS, *q, SEP] + [MASK] * 8), state, "compressor")
        passages = linear(encode(state, "bert_model.", [CLS, *p, SEP]), state, "compressor")
        return float((queries @ passages.T).max(dim=1).values.sum())
    # PreTTR: layers 0-2 apart (passage positions after the query's tokens), 3.. joined, CLS -> Linear, no bias
    query_ids = [CLS, *q, SEP]
    lower_q = encode(state, "", query_ids, 0, range(3))
    lower_p = encode(state, "", [*p, SEP], len(query_ids), range(3))
    joined = distilbert_layers(state, "", torch.cat([lower_q, lower_p]), range(3, TINY["n_layers"]))
    return float(joined[0] @ state["_classification_layer.weight"][0])


# ---- imports ------------------------------------------------------------------------------------------------------

EXPECTED = {
    "dot": ("BertDotModel", {"pooling": "cls", "compression_dim": None}),
    "cat": ("BertCatModel", {}),
    "colbert": ("ColBERTModel", {"compression_dim": 32, "query_augmentation_tokens": 8, "normalize_embeddings": False}),
    "prettr": ("PreTTModel", {"split_layer": 3, "passage_positions": "after_query"}),
}


@pytest.mark.parametrize("layout", ["dot", "cat", "colbert", "prettr"])
def test_import_scores_equal_the_papers_equations(layout, tmp_path, backbone_folder, tokenizer, minilm_path, pairs):
    state = write_released(tmp_path / "released", layout, backbone_folder)
    out = tmp_path / "imported"
    assert main(["import", str(tmp_path / "released"), "--out", str(out), "--tokenizer", minilm_path]) == 0

    model = AutoModel.from_pretrained(out).eval()  # hf-kd's Auto registration, the saved auto_map and code
    class_name, settings = EXPECTED[layout]
    assert type(model).__name__ == class_name
    assert {key: getattr(model.config, key) for key in settings} == settings
    assert (model.config.max_query_length, model.config.max_passage_length) == (MAX_QUERY, MAX_PASSAGE)
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()

    queries, passages = pairs
    expected = torch.tensor([reference_score(layout, state, tokenizer, q, p) for q, p in zip(queries, passages)])
    torch.testing.assert_close(model.score(queries, passages, tokenizer), expected, rtol=1e-4, atol=1e-4)
    if layout != "cat":  # the cached path: passages encoded once, scored against their query
        cached = model.encode_passages(passages[:2], tokenizer)
        scores = model.score_encoded(model.encode_queries(queries[:1], tokenizer), cached)
        torch.testing.assert_close(scores, expected[:2], rtol=1e-4, atol=1e-4)


def test_prett_positions_after_the_query_differ_from_the_fixed_slot(tmp_path, backbone_folder, tokenizer, pairs):
    write_released(tmp_path / "released", "prettr", backbone_folder)
    model, _ = import_released(tmp_path / "released", tmp_path / "out", tokenizer=tokenizer.name_or_path)
    queries, passages = pairs
    released = model.score(queries, passages, tokenizer)
    model.config.passage_positions = "after_query_slot"
    assert not torch.allclose(model.score(queries, passages, tokenizer), released, atol=1e-3)


def test_import_from_the_hub(tmp_path, backbone_folder, tokenizer, minilm_path, pairs, hub_server: HubServer, capsys):
    state = write_released(tmp_path / "released", "colbert", backbone_folder)
    repo_id = "org/colbert-distilbert-margin_mse-T2-msmarco"
    HfApi().create_repo(repo_id)
    HfApi().upload_folder(repo_id=repo_id, folder_path=tmp_path / "released")

    out = tmp_path / "imported"
    assert main(["import", repo_id, "--out", str(out), "--tokenizer", minilm_path]) == 0
    assert "colbert layout" in capsys.readouterr().out
    model = AutoModel.from_pretrained(out).eval()
    queries, passages = pairs
    expected = torch.tensor([reference_score("colbert", state, tokenizer, q, p) for q, p in zip(queries, passages)])
    torch.testing.assert_close(model.score(queries, passages, tokenizer), expected, rtol=1e-4, atol=1e-4)

    capsys.readouterr()
    assert main(["import", "org/does-not-exist", "--out", str(tmp_path / "x"), "--tokenizer", minilm_path]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "Traceback" not in error
    assert error.startswith("error: Hub model org/does-not-exist not found")


def test_a_state_dict_of_no_layout_names_the_closest(tmp_path, backbone_folder, minilm_path, capsys):
    state = released_state("colbert")
    state["compressor.scale"] = state.pop("compressor.bias")
    write_released(tmp_path / "released", "colbert", backbone_folder, state=state)
    assert main(["import", str(tmp_path / "released"), "--out", str(tmp_path / "x"), "--tokenizer", minilm_path]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "Traceback" not in error
    assert "closest: colbert (sebastian-hofstaetter/colbert-distilbert-margin_mse-T2-msmarco)" in error
    assert "missing ['compressor.bias'], unexpected ['compressor.scale']" in error
    assert not (tmp_path / "x").exists()

    with pytest.raises(ReleasedLayoutError, match="closest: dot"):
        hf_kd.hub.released.detect_layout({key: torch.zeros(1) for key in distilbert_keys()[:-2]})


def test_backbone_config_must_fit_the_weights(tmp_path, backbone_folder, minilm_path):
    write_released(tmp_path / "released", "cat", backbone_folder)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({**TINY, "hidden_dim": 128}))
    with pytest.raises(ValueError, match="hidden_dim 128 vs 64 in the weights"):
        import_released(
            tmp_path / "released", tmp_path / "x", tokenizer=minilm_path, backbone_config=json.loads(wrong.read_text())
        )
    with pytest.raises(FileNotFoundError, match="has no tokenizer files"):
        import_released(tmp_path / "released", tmp_path / "x")


def test_prett_after_query_reranks_the_same_with_and_without_the_cache(tmp_path, backbone_folder, tokenizer, ci_data):
    from hf_kd.data import read_collection_tsv, read_queries_tsv, read_run
    from hf_kd.evaluation.rerank import rerank

    write_released(tmp_path / "released", "prettr", backbone_folder)
    model, _ = import_released(tmp_path / "released", tmp_path / "out", tokenizer=tokenizer.name_or_path)
    data = ci_data / "msmarco-dl20"
    run = dict(list(read_run(data / "runs" / "bm25.top30.trec").items())[:2])
    inputs = (read_queries_tsv(data / "queries.tsv"), read_collection_tsv(data / "collection.tsv"), run)
    cached = rerank(model, tokenizer, *inputs, top_k=5, batch_size=3, show_progress=False)
    direct = rerank(model, tokenizer, *inputs, top_k=5, cache_passages=False, show_progress=False)
    for qid in run:
        assert cached[qid] == pytest.approx(direct[qid], abs=1e-4)


def test_the_released_backbone_name_is_distilbert_base_uncased(tmp_path):
    """CAT and ColBERT name `distilbert-base-uncased` in `bert_model`: its configuration is read without the Hub
    and checked against the full-size weights' shapes (meta tensors: no memory)."""
    from hf_kd.hub.released import RELEASED_LAYOUTS, _backbone_config

    full = {"vocab_size": 30522, "dim": 768, "n_layers": 6, "hidden_dim": 3072}
    keys = distilbert_keys("bert_model.", num_layers=6) + ["compressor.weight", "compressor.bias"]
    state = {key: torch.empty(shape_of(key, full), device="meta") for key in keys}
    config = {"model_type": "ColBERT", "bert_model": "distilbert-base-uncased", "compression_dim": 768}
    backbone = _backbone_config(RELEASED_LAYOUTS["colbert"], config, tmp_path, state)
    assert (backbone.dim, backbone.n_layers, backbone.n_heads, backbone.hidden_dim) == (768, 6, 12, 3072)
