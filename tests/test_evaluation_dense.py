"""Dense retrieval with faiss on the ci data and a tiny BERT_DOT."""

from __future__ import annotations

import json

import faiss
import numpy as np
import pytest
import torch
from transformers import BertConfig

from hf_kd import BertDotConfig, BertDotModel, ColBERTConfig, ColBERTModel
from hf_kd.data.ir_files import read_collection_tsv, read_queries_tsv
from hf_kd.evaluation.dense import DenseIndex, dense_retrieve, encode_texts, faiss_gpu_count, index_factory_string


@pytest.fixture(scope="module", autouse=True)
def single_torch_thread():
    """Tiny models gain nothing from several threads; one avoids thread wake-up costs on a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_backbone() -> BertConfig:
    # a wide initialisation so that a random model's vectors depend on the text
    return BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        initializer_range=1.0,
    )


@pytest.fixture(scope="module")
def dot_model():
    torch.manual_seed(0)
    return BertDotModel(BertDotConfig(backbone_config=tiny_backbone())).eval()


@pytest.fixture(scope="module")
def ci_texts(ci_data):
    folder = ci_data / "msmarco-dl20"
    return read_queries_tsv(folder / "queries.tsv"), read_collection_tsv(folder / "collection.tsv")


@pytest.fixture(scope="module")
def encoded(dot_model, tokenizer, ci_texts):
    queries, collection = ci_texts
    ids = list(collection)
    vectors = encode_texts(dot_model, tokenizer, [collection[pid] for pid in ids], batch_size=32, show_progress=False)
    return ids, vectors


def test_length_sorted_encoding_keeps_text_order(dot_model, tokenizer, ci_texts, encoded):
    _, collection = ci_texts
    ids, vectors = encoded
    assert vectors.shape == (300, 32) and vectors.dtype == np.float32
    direct = dot_model.encode_passages([collection[pid] for pid in ids[:7]], tokenizer).embeddings.numpy()
    np.testing.assert_allclose(vectors[:7], direct, atol=1e-4)
    half = encode_texts(dot_model, tokenizer, [collection[pid] for pid in ids[:20]], fp16=True, show_progress=False)
    assert half.dtype == np.float16
    np.testing.assert_allclose(half.astype(np.float32), vectors[:20], rtol=2e-3, atol=2e-3)


def test_exact_search_equals_brute_force_topk_and_survives_save_load(tmp_path, dot_model, tokenizer, ci_texts, encoded):
    queries, _ = ci_texts
    ids, vectors = encoded
    query_vectors = encode_texts(dot_model, tokenizer, list(queries.values()), "queries", show_progress=False)
    index = DenseIndex.build(vectors, ids)
    scores, found = index.search(query_vectors, k=20)

    brute_scores, brute_rows = torch.topk(torch.from_numpy(query_vectors) @ torch.from_numpy(vectors).T, k=20, dim=1)
    np.testing.assert_allclose(scores, brute_scores.numpy(), rtol=1e-5, atol=1e-4)
    assert found == [[ids[row] for row in rows] for rows in brute_rows.tolist()]
    assert len({round(float(s), 3) for s in scores.ravel()}) > 100  # varied scores, not a degenerate model

    index.save(tmp_path / "index")
    config = json.loads((tmp_path / "index" / "index_config.json").read_text())
    assert config["factory"] == "Flat" and config["num_vectors"] == 300 and config["dim"] == 32
    assert config["index_bytes"] == index.nbytes() >= 300 * 32 * 4
    loaded = DenseIndex.load(tmp_path / "index")
    loaded_scores, loaded_found = loaded.search(query_vectors, k=20)
    assert loaded_found == found
    np.testing.assert_array_equal(loaded_scores, scores)
    assert not [p for p in (tmp_path / "index").iterdir() if p.name.startswith(".")]  # no temp files left


def test_dense_retrieve_scores_are_the_model_scores(dot_model, tokenizer, ci_texts, encoded):
    queries, collection = ci_texts
    index = DenseIndex.build(*reversed(encoded))
    subset = dict(list(queries.items())[:3])
    run = dense_retrieve(dot_model, tokenizer, index, subset, k=5, show_progress=False)
    assert list(run) == list(subset) and all(len(candidates) == 5 for candidates in run.values())
    qid, candidates = next(iter(run.items()))
    model_scores = dot_model.score([subset[qid]] * 5, [collection[pid] for pid in candidates], tokenizer)
    np.testing.assert_allclose(list(candidates.values()), model_scores.numpy(), rtol=1e-4, atol=1e-3)


def test_sharded_search_equals_one_flat_index_and_survives_save_load(tmp_path, dot_model, tokenizer, ci_texts, encoded):
    queries, _ = ci_texts
    ids, vectors = encoded
    query_vectors = encode_texts(dot_model, tokenizer, list(queries.values()), "queries", show_progress=False)
    flat_scores, flat_found = DenseIndex.build(vectors, ids).search(query_vectors, k=50)

    sharded = DenseIndex.build(vectors, ids, num_shards=4)
    assert [shard.ntotal for shard in sharded.shards] == [75, 75, 75, 75] and len(sharded) == 300
    scores, found = sharded.search(query_vectors, k=50)
    assert found == flat_found  # the per-shard top 50 merge into the global top 50, rows numbered across shards
    np.testing.assert_array_equal(scores, flat_scores)

    sharded.save(tmp_path / "sharded")
    names = sorted(p.name for p in (tmp_path / "sharded").iterdir())
    assert names == sorted([f"index-0000{i}-of-00004.faiss" for i in range(4)] + ["ids.json", "index_config.json"])
    config = json.loads((tmp_path / "sharded" / "index_config.json").read_text())
    assert config["shards"] == 4 and config["index_bytes"] == sharded.nbytes() >= 300 * 32 * 4
    loaded = DenseIndex.load(tmp_path / "sharded")
    assert loaded.search(query_vectors, k=50)[1] == flat_found

    hnsw = DenseIndex.build(vectors, ids, index_factory_string("hnsw", hnsw_m=16), ef_search=123, num_shards=3)
    assert [faiss.downcast_index(shard).hnsw.efSearch for shard in hnsw.shards] == [123, 123, 123]
    for bad in (0, 301, 2.5):
        with pytest.raises(ValueError, match="num_shards must be an integer from 1 to the number of vectors"):
            DenseIndex.build(vectors, ids, num_shards=bad)


def test_approximate_indexes(tmp_path, dot_model, tokenizer, ci_texts, encoded):
    queries, _ = ci_texts
    ids, vectors = encoded
    query_vectors = encode_texts(dot_model, tokenizer, list(queries.values()), "queries", show_progress=False)
    _, exact = DenseIndex.build(vectors, ids).search(query_vectors, k=10)

    hnsw = DenseIndex.build(vectors, ids, index_factory_string("hnsw", hnsw_m=16), ef_construction=100, ef_search=200)
    _, found = hnsw.search(query_vectors, k=10)
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, exact)])
    assert overlap >= 0.9
    hnsw.save(tmp_path / "hnsw")
    assert DenseIndex.load(tmp_path / "hnsw").search(query_vectors, k=10)[1] == found

    fp16 = DenseIndex.build(vectors, ids, index_factory_string("flat", fp16=True))
    assert fp16.factory == "SQfp16" and fp16.nbytes() < DenseIndex.build(vectors, ids).nbytes() * 0.6
    assert fp16.search(query_vectors, k=10)[1][0][:3] == exact[0][:3]

    factory = index_factory_string("ivfpq", nlist=4, pq_m=8, pq_nbits=4)
    assert factory == "IVF4,PQ8x4"
    ivfpq = DenseIndex.build(vectors, ids, factory, nprobe=4)
    assert ivfpq.search_params == {"nprobe": 4} and ivfpq.nbytes() < fp16.nbytes()
    _, found = ivfpq.search(query_vectors, k=10)
    assert all(len(candidates) == 10 for candidates in found)
    with pytest.raises(ValueError, match="needs at least nlist=1024 vectors"):
        DenseIndex.build(vectors, ids, index_factory_string("ivfpq"))
    with pytest.raises(ValueError, match="index_type must be one of"):
        index_factory_string("lsh")


def test_multi_vector_models_and_bad_inputs_are_rejected(tokenizer, encoded, tmp_path):
    torch.manual_seed(0)
    colbert = ColBERTModel(ColBERTConfig(backbone_config=tiny_backbone()))
    with pytest.raises(ValueError, match="one vector per text .* colbert"):
        encode_texts(colbert, tokenizer, ["a passage", "another one"], show_progress=False)
    ids, vectors = encoded
    with pytest.raises(ValueError, match="passage ids must be unique"):
        DenseIndex.build(vectors[:2], ["a", "a"])
    with pytest.raises(ValueError, match="got 3 vectors but 2 ids"):
        DenseIndex.build(vectors[:3], ["a", "b"])
    with pytest.raises(ValueError, match=r"query vectors must have shape \(m, 32\)"):
        DenseIndex.build(vectors, ids).search(np.zeros((1, 8), dtype=np.float32))
    with pytest.raises(FileNotFoundError, match="does not hold a saved index"):
        DenseIndex.load(tmp_path)


def test_a_cpu_faiss_searches_on_the_cpu_and_refuses_gpus_in_one_line():
    vectors = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32)
    index = DenseIndex.build(vectors, [f"p{i}" for i in range(50)])
    assert faiss_gpu_count() == 0  # the test machines run faiss-cpu
    assert index.for_device("cpu") is index and index.for_device("cuda:0") is index and index.for_device(None) is index
    with pytest.raises(ValueError, match="no GPU support or sees no GPU .*install faiss-gpu"):
        index.to_gpus()
