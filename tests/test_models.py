"""The five ranking architectures: scoring contract, invariants, save/load with and without hf_kd, bad input."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
from conftest import dl20_pairs
from transformers import (
    AlbertConfig,
    AutoModel,
    BertConfig,
    BertModel,
    DistilBertConfig,
    DistilBertModel,
    ElectraConfig,
)

import hf_kd
from hf_kd import (
    BertCatConfig,
    BertCatModel,
    BertDotConfig,
    BertDotModel,
    ColBERTConfig,
    EncodedBatch,
    PreTTConfig,
    PreTTModel,
    TKConfig,
    TKModel,
)
from hf_kd.models.ranking_functions import kernel_pooling, maxsim_scores

ARCHITECTURES = ["bert_cat", "bert_dot", "colbert", "prett", "tk"]


def tiny_sizes() -> dict:
    return dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


def tiny_backbone(**overrides) -> BertConfig:
    return BertConfig(**{**tiny_sizes(), **overrides})


def build(architecture: str, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    model_class = hf_kd.model_class_for(architecture)
    if architecture == "prett":
        overrides.setdefault("split_layer", 1)
    if architecture == "colbert":
        overrides.setdefault("compression_dim", 16)
    return model_class(model_class.config_class(backbone_config=tiny_backbone(), **overrides)).eval()


@pytest.fixture(scope="module")
def pairs(ci_data):
    """Real DL20 query/passage pairs from the ci cut (the first candidates of the BM25 run)."""
    qs, ps = dl20_pairs(ci_data, max_rank=2)
    return qs[:8], ps[:8]


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_score_returns_one_float_per_pair_and_matches_grouped_forward(architecture, pairs, tokenizer):
    model = build(architecture)
    queries, passages = pairs
    scores = model.score(queries, passages, tokenizer, batch_size=3)
    assert scores.shape == (len(queries),) and scores.dtype == torch.float32
    assert torch.isfinite(scores).all()
    # batched longest first, each score is still its own pair's, in input order
    assert len({len(q) + len(p) for q, p in zip(queries, passages)}) > 3, "pairs of several lengths"
    alone = torch.cat([model.score([q], [p], tokenizer) for q, p in zip(queries, passages)])
    torch.testing.assert_close(scores, alone, atol=1e-5, rtol=1e-5)
    # a triple-style group (k=2 passages per query) scores exactly the same pairs
    group_queries = queries[:4]
    group_passages = [p for i in range(4) for p in (passages[i], passages[i + 4])]
    inputs = model.prepare_inputs(group_queries, group_passages, tokenizer)
    with torch.no_grad():
        grouped = model(**inputs).scores
    expected = model.score([q for q in group_queries for _ in range(2)], group_passages, tokenizer)
    torch.testing.assert_close(grouped, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("architecture", ["bert_dot", "colbert", "prett", "tk"])
def test_cached_scoring_equals_direct_scoring(architecture, pairs, tokenizer):
    model = build(architecture)
    queries, passages = pairs
    direct = model.score(queries, passages, tokenizer)
    cached_passages = model.encode_passages(passages, tokenizer, batch_size=3)
    cached_queries = model.encode_queries(queries, tokenizer)
    torch.testing.assert_close(model.score_encoded(cached_queries, cached_passages), direct, atol=1e-5, rtol=1e-5)
    # a passage cache stores unpadded rows; re-padding them gives the same scores, one query against all passages
    rows = cached_passages.unbind()
    one_query = model.encode_queries([queries[0]], tokenizer)
    broadcast = model.score_encoded(one_query, EncodedBatch.cat(rows))
    expected = model.score([queries[0]] * len(passages), passages, tokenizer)
    torch.testing.assert_close(broadcast, expected, atol=1e-5, rtol=1e-5)
    assert all(row.nbytes() > 0 for row in rows)


def test_bert_cat_cannot_cache():
    model = build("bert_cat")
    assert not model.supports_caching
    assert not hasattr(model, "encode_passages")


def test_bert_dot_score_is_dot_product_of_backbone_cls_vectors(pairs, tokenizer):
    model = build("bert_dot")
    queries, passages = pairs
    q = tokenizer(queries, truncation=True, max_length=32, padding=True, return_tensors="pt")
    p = tokenizer(passages, truncation=True, max_length=202, padding=True, return_tensors="pt")
    with torch.no_grad():
        q_cls = model.backbone(input_ids=q["input_ids"], attention_mask=q["attention_mask"]).last_hidden_state[:, 0]
        p_cls = model.backbone(input_ids=p["input_ids"], attention_mask=p["attention_mask"]).last_hidden_state[:, 0]
    expected = (q_cls * p_cls).sum(-1)
    torch.testing.assert_close(model.score(queries, passages, tokenizer), expected, atol=1e-4, rtol=1e-5)


def test_bert_dot_mean_pooling_matches_sentence_transformers_zero_shot(minilm_path, pairs, tokenizer):
    from sentence_transformers import SentenceTransformer

    queries, passages = pairs
    model = BertDotModel.from_backbone(minilm_path, pooling="mean", normalize_embeddings=True, max_passage_length=254)
    reference = SentenceTransformer(minilm_path)  # all-MiniLM-L6-v2: mean pooling + normalisation
    expected = reference.encode(passages, convert_to_tensor=True)
    got = model.encode_passages(passages, tokenizer).embeddings
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_colbert_maxsim_equals_plain_loop_with_padding_masked(pairs, tokenizer):
    model = build("colbert")
    queries, passages = pairs
    q = model.encode_queries(queries, tokenizer)
    p = model.encode_passages(passages, tokenizer)
    expected = []
    for i in range(len(queries)):
        total = 0.0
        for a in range(q.embeddings.shape[1]):
            if not q.mask[i, a]:
                continue
            best = max(
                float(q.embeddings[i, a] @ p.embeddings[i, b]) for b in range(p.embeddings.shape[1]) if p.mask[i, b]
            )
            total += best
        expected.append(total)
    torch.testing.assert_close(model.score(queries, passages, tokenizer), torch.tensor(expected), atol=1e-3, rtol=1e-5)
    # the 8 [MASK] augmentation tokens follow [SEP] and are attended to
    ids = model.prepare_inputs(queries[:1], passages[:1], tokenizer)["query_input_ids"][0].tolist()
    assert ids[-8:] == [tokenizer.mask_token_id] * 8 and ids[-9] == tokenizer.sep_token_id


def test_maxsim_function_masks_padding():
    q = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]])
    p = torch.tensor([[[2.0, 1.0], [0.0, 3.0], [100.0, 100.0]]])
    # query token 3 and passage token 3 are padding: 2 + 3
    assert maxsim_scores(q, torch.tensor([[1, 1, 0]]), p, torch.tensor([[1, 1, 0]])).item() == 5.0
    # MeanMaxSim: over the two real query tokens
    assert maxsim_scores(q, torch.tensor([[1, 1, 0]]), p, torch.tensor([[1, 1, 0]]), mean=True).item() == 2.5


@pytest.mark.parametrize("backbone", ["bert", "electra"])
def test_prett_with_split_zero_equals_bert_cat_with_the_same_weights(backbone, pairs, tokenizer):
    torch.manual_seed(3)
    # ELECTRA's embeddings are narrower than its layers (embedding_size < hidden_size) and projected up
    backbone_config = tiny_backbone() if backbone == "bert" else ElectraConfig(embedding_size=16, **tiny_sizes())
    prett = PreTTModel(PreTTConfig(backbone_config=backbone_config, split_layer=0, max_query_length=30)).eval()
    cat = BertCatModel(BertCatConfig(backbone_config=backbone_config)).eval()
    cat.backbone.load_state_dict(prett.backbone.state_dict())
    cat.classifier.weight.data.copy_(prett.classifier.weight.data)
    cat.classifier.bias.data.zero_()
    queries, passages = pairs
    # The documented equivalent: BERT_CAT on [CLS] q [SEP] p [SEP] with passage positions starting at
    # max_query_length + 2.
    inputs = cat.prepare_inputs(queries, passages, tokenizer)
    q_lengths = [
        len(ids) + 2
        for ids in tokenizer(queries, add_special_tokens=False, truncation=True, max_length=30)["input_ids"]
    ]
    position_ids = torch.zeros_like(inputs["input_ids"])
    for i, lq in enumerate(q_lengths):
        length = inputs["input_ids"].shape[1]
        position_ids[i, :lq] = torch.arange(lq)
        position_ids[i, lq:] = torch.arange(length - lq) + 32
    with torch.no_grad():
        expected = cat(**inputs, position_ids=position_ids).scores
    torch.testing.assert_close(prett.score(queries, passages, tokenizer), expected, atol=1e-5, rtol=1e-5)
    # a query that fills its slot gets BERT_CAT's own positions: identical scores with no position ids at all
    full = " ".join(["word"] * 40)
    torch.testing.assert_close(
        prett.score([full], passages[:1], tokenizer), cat.score([full], passages[:1], tokenizer), atol=1e-5, rtol=1e-5
    )


def test_prett_upper_layers_see_both_sides(pairs, tokenizer):
    model = build("prett")
    queries, passages = pairs
    a = model.score([queries[0]] * 2, passages[:2], tokenizer)
    b = model.score([queries[2]] * 2, passages[:2], tokenizer)
    assert queries[0] != queries[2] and not torch.allclose(a, b, rtol=0, atol=1e-7)


def test_tk_kernel_pooling_matches_hand_computation():
    match = torch.tensor([[[0.9, 0.1, -0.5], [1.0, 0.3, 0.0]]])  # 2 query tokens x 3 passage tokens
    q_mask = torch.tensor([[1, 1]])
    p_mask = torch.tensor([[1, 1, 0]])  # the third passage token is padding
    mus = torch.tensor([1.0, 0.1])
    sigmas = torch.tensor([0.1, 0.1])
    import math

    def k(x, mu):
        return math.exp(-((x - mu) ** 2) / (2 * 0.1**2))

    expected = []
    for mu in (1.0, 0.1):
        row1 = k(0.9, mu) + k(0.1, mu)
        row2 = k(1.0, mu) + k(0.3, mu)
        expected.append(0.01 * (math.log(max(row1, 1e-10)) + math.log(max(row2, 1e-10))))
    got = kernel_pooling(match, q_mask, p_mask, mus, sigmas, log_scale=0.01)
    torch.testing.assert_close(got, torch.tensor([expected]), atol=1e-6, rtol=1e-5)


def test_tk_uses_the_paper_kernels_and_head_choice():
    config = TKConfig(backbone_config=tiny_backbone(hidden_size=40))
    assert config.kernel_mus == [1.0, 0.9, 0.7, 0.5, 0.3, 0.1, -0.1, -0.3, -0.5, -0.7, -0.9]
    assert config.num_attention_heads == 10 and config.intermediate_size == 300
    assert TKConfig(backbone_config=tiny_backbone(hidden_size=384)).num_attention_heads == 8
    with pytest.raises(ValueError, match="num_attention_heads"):
        TKConfig(backbone_config=tiny_backbone(), num_attention_heads=3)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_configs_keep_paper_defaults_and_unique_model_types(architecture):
    config_class = hf_kd.model_class_for(architecture).config_class
    config = config_class()
    assert config.max_query_length == 30 and config.max_passage_length == 200
    assert config.backbone_config.model_type == "distilbert"
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    assert config_class.model_type.startswith("hfkd_") and config_class.model_type not in CONFIG_MAPPING_NAMES
    if architecture == "colbert":
        assert config.query_augmentation_tokens == 8
    if architecture == "prett":
        assert config.split_layer == 3


@pytest.mark.parametrize(
    "make, argument",
    [
        (lambda: BertDotConfig(max_query_length=0), "max_query_length"),
        (lambda: BertDotConfig(max_passage_length=-3), "max_passage_length"),
        (lambda: BertDotConfig(max_passage_length=600), "max_position_embeddings"),
        (lambda: BertDotConfig(compression_dim=0), "compression_dim"),
        (lambda: BertDotConfig(pooling="max"), "pooling"),
        (lambda: ColBERTConfig(query_augmentation_tokens=-1), "query_augmentation_tokens"),
        (lambda: PreTTConfig(split_layer=6), "split_layer"),
        (lambda: TKConfig(kernel_sigma=0), "kernel_sigma"),
        (lambda: BertCatConfig(classifier_dropout=1.5), "classifier_dropout"),
        (lambda: BertDotConfig(backbone_config={"model_type": "gpt2"}), "unsupported backbone type"),
        (lambda: PreTTConfig(backbone_config=AlbertConfig()), "BERT, DistilBERT, MiniLM"),
        (lambda: BertCatConfig(backbone_config=DistilBertConfig(), mean_cosine_score=True), "token types"),
    ],
)
def test_bad_config_values_name_the_argument(make, argument):
    with pytest.raises(ValueError, match=argument):
        make()


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_bad_text_input_is_rejected_clearly(architecture, tokenizer):
    model = build(architecture)
    with pytest.raises(ValueError, match=r"queries\[1\] is empty"):
        model.score(["a query", "  "], ["a passage", "another"], tokenizer)
    with pytest.raises(ValueError, match=r"passages\[0\] is empty"):
        model.score(["a query"], [""], tokenizer)
    with pytest.raises(ValueError, match="equal length"):
        model.score(["q1", "q2"], ["p1"], tokenizer)
    with pytest.raises(TypeError, match="list of strings"):
        model.score("a query", ["p"], tokenizer)
    # over-long text is truncated, not an error
    long_text = "relevance " * 1000
    assert torch.isfinite(model.score([long_text], [long_text], tokenizer)).all()
    ids = model.prepare_inputs([long_text], [long_text], tokenizer)
    assert max(v.shape[1] for v in ids.values()) <= 30 + 200 + 3


def test_from_backbone_copies_pretrained_weights(minilm_path):
    reference = BertModel.from_pretrained(minilm_path)
    model = BertDotModel.from_backbone(minilm_path, max_query_length=16)
    for name, tensor in reference.state_dict().items():
        if not name.startswith("pooler"):
            torch.testing.assert_close(model.backbone.state_dict()[name], tensor)
    assert model.config.backbone_name_or_path == minilm_path and model.config.max_query_length == 16
    tk = TKModel.from_backbone(minilm_path)
    torch.testing.assert_close(tk.word_embeddings.weight, reference.embeddings.word_embeddings.weight)
    assert tk.config.num_attention_heads == 8


def test_from_backbone_accepts_distilbert_and_albert_and_rejects_albert_for_prett(tmp_path, pairs, tokenizer):
    torch.manual_seed(0)
    distil_dir = tmp_path / "distil"
    DistilBertModel(DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=64)).save_pretrained(distil_dir)
    queries, passages = pairs
    for architecture in ARCHITECTURES:
        overrides = {"split_layer": 1} if architecture == "prett" else {}
        model = hf_kd.model_class_for(architecture).from_backbone(str(distil_dir), **overrides)
        assert torch.isfinite(model.score(queries[:2], passages[:2], tokenizer)).all()
    albert_dir = tmp_path / "albert"
    AutoModel.from_config(
        AlbertConfig(
            embedding_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
        )
    ).save_pretrained(albert_dir)
    assert torch.isfinite(BertCatModel.from_backbone(str(albert_dir)).score(queries[:2], passages[:2], tokenizer)).all()
    with pytest.raises(ValueError, match="BERT, DistilBERT, MiniLM"):
        PreTTModel.from_backbone(str(albert_dir))


def test_save_and_reload_with_and_without_hf_kd(tmp_path, pairs, tokenizer):
    queries, passages = pairs
    expected = {}
    for architecture in ARCHITECTURES:
        model = build(architecture, seed=7)
        folder = tmp_path / architecture
        model.save_pretrained(folder, tokenizer=tokenizer)
        files = {p.name for p in folder.iterdir()}
        assert "model.safetensors" in files and "pytorch_model.bin" not in files and "tokenizer.json" in files
        config = json.loads((folder / "config.json").read_text())
        assert config["model_type"] == model.config.model_type and "AutoModel" in config["auto_map"]
        expected[architecture] = model.score(queries, passages, tokenizer)
        # after `import hf_kd`, no trust_remote_code needed
        reloaded = AutoModel.from_pretrained(folder)
        assert type(reloaded) is type(model)
        torch.testing.assert_close(reloaded.score(queries, passages, tokenizer), expected[architecture])

    # a fresh process in which hf_kd cannot be imported
    script = f"""
import json, sys
sys.modules["hf_kd"] = None  # any `import hf_kd` now fails
from transformers import AutoModel, AutoTokenizer
queries, passages = json.loads(sys.argv[1])
out = {{}}
for arch in {ARCHITECTURES!r}:
    model = AutoModel.from_pretrained(sys.argv[2] + "/" + arch, trust_remote_code=True)
    assert not type(model).__module__.startswith("hf_kd"), type(model).__module__
    tokenizer = AutoTokenizer.from_pretrained(sys.argv[2] + "/" + arch, trust_remote_code=True)
    out[arch] = [type(model).__name__, model.score(queries, passages, tokenizer).tolist()]
from sentence_transformers import CrossEncoder, SentenceTransformer
st = SentenceTransformer(sys.argv[2] + "/bert_dot", trust_remote_code=True)
out["st_documents"] = st.encode(passages, convert_to_tensor=True).tolist()
ce = CrossEncoder(sys.argv[2] + "/bert_cat", trust_remote_code=True)
out["ce_scores"] = ce.predict(list(zip(queries, passages))).tolist()
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
    dot = AutoModel.from_pretrained(tmp_path / "bert_dot")
    expected_vectors = dot.encode_passages(passages, tokenizer).embeddings
    torch.testing.assert_close(torch.tensor(payload["st_documents"]), expected_vectors, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.tensor(payload["ce_scores"]), expected["bert_cat"], atol=1e-5, rtol=1e-5)
    for architecture in ARCHITECTURES:
        class_name, scores = payload[architecture]
        assert class_name == hf_kd.model_class_for(architecture).__name__
        torch.testing.assert_close(torch.tensor(scores), expected[architecture], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pooling, normalize", [("cls", False), ("mean", False), ("mean", True)])
def test_bert_dot_checkpoint_is_a_sentence_transformer(pooling, normalize, tmp_path, pairs, tokenizer):
    from sentence_transformers import SentenceTransformer

    model = build("bert_dot", compression_dim=24, pooling=pooling, normalize_embeddings=normalize)
    model.save_pretrained(tmp_path, tokenizer=tokenizer)
    st = SentenceTransformer(str(tmp_path))
    queries, passages = pairs
    assert st.similarity_fn_name == "dot" and st.get_embedding_dimension() == 24
    documents = st.encode_document(passages, convert_to_tensor=True)
    torch.testing.assert_close(documents, model.encode_passages(passages, tokenizer).embeddings, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(st.encode(passages, convert_to_tensor=True), documents, atol=1e-5, rtol=1e-5)
    # queries are truncated at max_query_length like encode_queries
    long_query = "what is the " + "very " * 60 + "long query"
    got = st.encode_query(queries + [long_query], convert_to_tensor=True)
    expected = model.encode_queries(queries + [long_query], tokenizer).embeddings
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    similarity = st.similarity(got[:1], documents[:1])
    torch.testing.assert_close(similarity[0], model.score(queries[:1], passages[:1], tokenizer), atol=1e-4, rtol=1e-5)


def test_bert_cat_checkpoint_is_a_cross_encoder_with_raw_scores(tmp_path, pairs, tokenizer):
    from sentence_transformers import CrossEncoder

    model = build("bert_cat")
    model.save_pretrained(tmp_path, tokenizer=tokenizer)
    queries, passages = pairs
    cross_encoder = CrossEncoder(str(tmp_path))
    predicted = torch.tensor(cross_encoder.predict(list(zip(queries, passages))))
    torch.testing.assert_close(predicted, model.score(queries, passages, tokenizer), atol=1e-5, rtol=1e-5)
    ranked = cross_encoder.rank(queries[0], passages)
    expected_order = torch.argsort(model.score([queries[0]] * len(passages), passages, tokenizer), descending=True)
    assert [r["corpus_id"] for r in ranked] == expected_order.tolist()


def test_tk_term_match_init_ranks_by_shared_terms_and_survives_save_load(minilm_path, tokenizer, tmp_path):
    model = TKModel.from_backbone(minilm_path, term_match_init=True).eval()
    assert float(model.mixer) == 1.0
    mus = model.config.kernel_mus
    expected = [mu**4 if mu > 0.5 else 0.0 for mu in mus]
    assert model.dense.weight.squeeze(0).tolist() == pytest.approx(expected)
    query = "what is the boiling point of water"
    passages = ["The boiling point of water is 100 degrees at sea level.", "Cats sleep for most of the day."]
    with torch.no_grad():
        scores = model.score([query] * 2, passages, tokenizer)
    assert scores[0] > scores[1]
    model.save_pretrained(tmp_path / "tk", tokenizer=tokenizer)
    loaded = TKModel.from_pretrained(tmp_path / "tk").eval()
    with torch.no_grad():
        assert torch.equal(loaded.score([query] * 2, passages, tokenizer), scores)


def test_tk_query_term_weights_start_at_idf_weigh_each_query_token_and_survive_save_load(
    minilm_path, tokenizer, tmp_path
):
    torch.manual_seed(0)
    plain = TKModel.from_backbone(minilm_path, term_match_init=True).eval()
    torch.manual_seed(0)
    model = TKModel.from_backbone(minilm_path, term_match_init=True, query_term_weights=True).eval()
    query = "boiling point of water"
    passages = ["The boiling point of water is 100 degrees.", "Water is wet.", "Point taken, said the cat."]
    with torch.no_grad():  # weights of 1: the paper's TK
        torch.testing.assert_close(
            model.score([query] * 3, passages, tokenizer), plain.score([query] * 3, passages, tokenizer)
        )

    model.init_query_term_weights(tokenizer, passages)
    ids = {piece: tokenizer.convert_tokens_to_ids(piece) for piece in ("water", "boiling", "zebra")}
    idf = {piece: math.log1p((3 - df + 0.5) / (df + 0.5)) for piece, df in (("water", 2), ("boiling", 1), ("zebra", 0))}
    seen = {i for text in passages for i in tokenizer(text, add_special_tokens=False)["input_ids"]}
    df = {i: sum(i in tokenizer(text, add_special_tokens=False)["input_ids"] for text in passages) for i in seen}
    mean_idf = sum(math.log1p((3 - n + 0.5) / (n + 0.5)) for n in df.values()) / len(df)
    weights = model.query_term_weights.weight.squeeze(1)
    for piece, token_id in ids.items():
        assert float(weights[token_id]) == pytest.approx(idf[piece] / mean_idf, rel=1e-5)

    # each query token's pooled kernel features are weighed by its word piece's weight
    inputs = tokenizer([query], return_tensors="pt")
    with torch.no_grad():
        weighted = model.encode_query_tensors(inputs["input_ids"], inputs["attention_mask"])
        unweighted = plain.encode_query_tensors(inputs["input_ids"], inputs["attention_mask"])
        passage = plain.encode_passage_tensors(
            **{k: v for k, v in tokenizer([passages[0]], return_tensors="pt").items() if k != "token_type_ids"}
        )
        torch.testing.assert_close(weighted.token_weights, weights[inputs["input_ids"]])
        per_token = [
            plain.kernel_features(
                EncodedBatch(unweighted.embeddings[:, i : i + 1], unweighted.mask[:, i : i + 1]), passage
            )
            for i in range(inputs["input_ids"].shape[1])
        ]
        expected = sum(w * f for w, f in zip(weighted.token_weights[0], per_token))
        torch.testing.assert_close(model.kernel_features(weighted, passage), expected, rtol=1e-5, atol=1e-6)
        scores = model.score([query] * 3, passages, tokenizer)
    model.save_pretrained(tmp_path / "tk", tokenizer=tokenizer)
    loaded = TKModel.from_pretrained(tmp_path / "tk").eval()
    with torch.no_grad():
        assert torch.equal(loaded.score([query] * 3, passages, tokenizer), scores)
    with pytest.raises(ValueError, match="no query term weights"):
        plain.init_query_term_weights(tokenizer, passages)


def test_mean_cosine_score_starts_as_the_backbones_sentence_similarity_and_survives_save_load(
    minilm_path, pairs, tokenizer, tmp_path
):
    queries, passages = pairs
    backbone = BertModel.from_pretrained(minilm_path).eval()
    cat = BertCatModel.from_backbone(minilm_path, mean_cosine_score=True).eval()
    assert not cat.classifier.weight.any() and not cat.classifier.bias.any()
    inputs = cat.prepare_inputs(queries, passages, tokenizer)
    with torch.no_grad():
        hidden = backbone(**inputs).last_hidden_state
    expected = []
    for row, types, mask in zip(hidden, inputs["token_type_ids"], inputs["attention_mask"]):
        query_part = row[(types == 0) & (mask == 1)].mean(dim=0)
        passage_part = row[(types == 1) & (mask == 1)].mean(dim=0)
        expected.append(torch.dot(query_part, passage_part) / (query_part.norm() * passage_part.norm()))
    scores = cat.score(queries, passages, tokenizer)
    torch.testing.assert_close(scores, torch.stack(expected), atol=1e-5, rtol=1e-5)

    # PreTT: the query's tokens are the first segment, the passage's the second, after the joint layers
    prett = PreTTModel.from_backbone(minilm_path, split_layer=3, mean_cosine_score=True).eval()
    assert not prett.classifier.weight.any()
    q = prett.encode_queries(queries[:1], tokenizer)
    p = prett.encode_passages(passages[:1], tokenizer)
    joint = torch.cat([q.embeddings, p.embeddings], dim=1)
    with torch.no_grad():
        joint = prett._run_layers(joint, torch.cat([q.mask, p.mask], dim=1), 3, 6)
    lq = q.embeddings.shape[1]
    expected_prett = torch.nn.functional.cosine_similarity(joint[0, :lq].mean(0), joint[0, lq:].mean(0), dim=0)
    scored = prett.score(queries[:1], passages[:1], tokenizer)[0]
    torch.testing.assert_close(scored, expected_prett, atol=1e-5, rtol=1e-5)

    # once the head has learned something, it adds to the cosine; both survive save and load
    with torch.no_grad():
        prett.classifier.weight.normal_()
    trained = prett.score(queries, passages, tokenizer)
    prett.save_pretrained(tmp_path / "prett", tokenizer=tokenizer)
    loaded = PreTTModel.from_pretrained(tmp_path / "prett").eval()
    assert loaded.config.mean_cosine_score is True
    torch.testing.assert_close(loaded.score(queries, passages, tokenizer), trained, atol=1e-6, rtol=1e-6)
