"""Hard-negative mining (`hf-kd mine`) on ci DL20 and ci SciFact: BM25, a tiny BERT_DOT and MiniLM first stages,
teacher margins checked against the teacher's own scores, outputs that `hf-kd score` and the trainer take."""

from __future__ import annotations

import pytest
import torch

from hf_kd import BertDotModel
from hf_kd.cli import main
from hf_kd.data import (
    ScoreDataset,
    load_train_dataset,
    read_beir,
    read_collection_tsv,
    read_qrels,
    read_queries_tsv,
    read_run,
)
from hf_kd.evaluation.bm25 import bm25_search
from hf_kd.evaluation.commands import load_model
from hf_kd.evaluation.dense import DenseIndex, dense_retrieve, encode_texts
from hf_kd.mining import mine_hard_negatives, parse_rank_range
from hf_kd.teachers import load_teacher, score_pairs
from hf_kd.training.collator import RankingCollator
from hf_kd.training.data import check_dataset_for_loss


@pytest.fixture(scope="module", autouse=True)
def single_torch_thread():
    """Small models gain nothing from several threads on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def dl20(ci_data):
    folder = ci_data / "msmarco-dl20"
    paths = {
        "queries": folder / "queries.tsv",
        "collection": folder / "collection.tsv",
        "qrels": folder / "qrels.txt",
        "run": folder / "runs" / "bm25.top30.trec",
    }
    return {
        **paths,
        "queries_": read_queries_tsv(paths["queries"]),
        "collection_": read_collection_tsv(paths["collection"]),
        "qrels_": read_qrels(paths["qrels"]),
    }


@pytest.fixture(scope="module")
def dl20_small(dl20):
    """Four queries and the passages around them (judged ones with text, and the BM25 run's top 30), for MiniLM."""
    run = read_run(dl20["run"])
    qids = list(dl20["qrels_"])[:4]
    pids = {pid for qid in qids for pid in [*dl20["qrels_"][qid], *run[qid]]}
    collection = {pid: text for pid, text in dl20["collection_"].items() if pid in pids}
    return {**dl20, "qrels_": {qid: dl20["qrels_"][qid] for qid in qids}, "collection_": collection}


def _mine(dl20, **kwargs):
    kwargs = {"min_grade": 2, "skip_missing": True, "show_progress": False, **kwargs}
    return mine_hard_negatives(dl20["queries_"], dl20["collection_"], dl20["qrels_"], **kwargs)


def _ranked(candidates: dict[str, float]) -> list[str]:
    return [pid for pid, _ in sorted(candidates.items(), key=lambda item: (-item[1], item[0]))]


def _check_rows(result, dl20, ranking, rank_range, num_negatives):
    qrels, collection = dl20["qrels_"], dl20["collection_"]
    low, high = rank_range
    assert result.rows
    for row in result.rows:
        assert qrels[row.query_id][row.positive_id] >= 2
        ranked = _ranked(ranking[row.query_id])
        ranks = [ranked.index(negative) + 1 for negative in row.negative_ids]
        assert all(low <= rank <= high for rank in ranks), ranks
        assert ranks == sorted(ranks) and len(set(ranks)) == len(ranks)  # distinct, in rank order
        assert all(qrels[row.query_id].get(negative, 0) <= 0 for negative in row.negative_ids)  # never judged relevant
        assert all(collection[negative] != collection[row.positive_id] for negative in row.negative_ids)
        assert 1 <= len(row.negative_ids) <= num_negatives


def test_bm25_negatives_come_from_the_rank_range_and_are_never_judged_relevant(dl20):
    result = _mine(dl20, retriever="bm25", num_negatives=3, rank_range=(5, 20), seed=3)
    queries = {qid: dl20["queries_"][qid] for qid in dl20["qrels_"]}
    ranking = bm25_search(dl20["collection_"], queries, k=20, show_progress=False)
    _check_rows(result, dl20, ranking, (5, 20), 3)
    stats = result.stats
    assert stats.queries == 10 and stats.positives == len(result.rows) == 48
    assert stats.skipped_positives_without_text == 264  # DL20 positives whose passage is not in the ci cut
    assert stats.negatives == len(result.triples()) == sum(len(row.negative_ids) for row in result.rows)
    assert stats.judged_candidates > 0  # judged passages sit in BM25's top 20 and were left out
    # grade-1 ("related") passages are neither positives nor negatives at min_grade 2
    related = {(q, p) for q, judged in dl20["qrels_"].items() for p, grade in judged.items() if grade == 1}
    assert not related & {(q, n) for q, _, n in result.triples()}
    # "top" takes the best ranked eligible candidates
    top = _mine(dl20, retriever="bm25", num_negatives=2, rank_range=(1, 30), sampling="top")
    ranking = bm25_search(dl20["collection_"], queries, k=30, show_progress=False)
    for row in top.rows:
        judged, collection = dl20["qrels_"][row.query_id], dl20["collection_"]
        eligible = [
            p
            for p in _ranked(ranking[row.query_id])
            if judged.get(p, 0) <= 0 and collection[p] != collection[row.positive_id]
        ]
        assert row.negative_ids == eligible[:2]


def test_a_run_gives_the_ranks(dl20):
    run = read_run(dl20["run"])
    result = _mine(dl20, candidates=run, num_negatives=4, rank_range=(10, 30), seed=0)
    _check_rows(result, dl20, run, (10, 30), 4)
    assert result.stats.parameters["retriever"] == "run"


@pytest.fixture(scope="module")
def tiny_dot(tiny_dot_folder):
    return tiny_dot_folder


def test_dense_bert_dot_ranks_are_the_faiss_ranks(dl20, tiny_dot):
    result = _mine(dl20, retriever=tiny_dot, num_negatives=2, rank_range=(2, 15), seed=1, device="cpu")
    model, tokenizer = load_model(str(tiny_dot), "cpu")
    collection = dl20["collection_"]
    vectors = encode_texts(model, tokenizer, list(collection.values()), show_progress=False)
    index = DenseIndex.build(vectors, list(collection))
    queries = {qid: dl20["queries_"][qid] for qid in dl20["qrels_"]}
    ranking = dense_retrieve(model, tokenizer, index, queries, k=15, show_progress=False)
    _check_rows(result, dl20, ranking, (2, 15), 2)


def test_a_built_index_is_searched_instead_of_encoding_again_and_must_match(dl20, tiny_dot, tmp_path, monkeypatch):
    import shutil

    from hf_kd.evaluation.indexing import build_dense_index

    collection = dl20["collection_"]
    build_dense_index(tiny_dot, collection, tmp_path / "index", device="cpu", show_progress=False)
    fresh = _mine(dl20, retriever=tiny_dot, num_negatives=2, rank_range=(2, 15), seed=1, device="cpu")

    import hf_kd.evaluation.dense as dense

    def no_passage_encoding(model, tokenizer, texts, kind="passages", *args, **kwargs):
        assert kind == "queries", "the collection was encoded again"
        return encode_texts(model, tokenizer, texts, kind, *args, **kwargs)

    monkeypatch.setattr(dense, "encode_texts", no_passage_encoding)
    reused = _mine(dl20, retriever=tiny_dot, index=tmp_path / "index", num_negatives=2, rank_range=(2, 15), seed=1)
    assert [(r.query_id, r.positive_id, r.negative_ids) for r in reused.rows] == [
        (r.query_id, r.positive_id, r.negative_ids) for r in fresh.rows
    ]
    assert reused.stats.parameters["index"] == str((tmp_path / "index").resolve())

    fewer = dict(list(collection.items())[:-1])
    with pytest.raises(ValueError, match=r"built over other passages \(\d+ passages"):
        mine_hard_negatives(
            dl20["queries_"],
            fewer,
            dl20["qrels_"],
            retriever=tiny_dot,
            index=tmp_path / "index",
            min_grade=2,
            skip_missing=True,
            show_progress=False,
        )
    other = tmp_path / "other-model"
    shutil.copytree(tiny_dot, other)
    (other / "config.json").write_text((other / "config.json").read_text().replace("}", ', "note": 1}', 1))
    with pytest.raises(ValueError, match="was built by another model"):
        _mine(dl20, retriever=other, index=tmp_path / "index", rank_range=(2, 15))
    with pytest.raises(ValueError, match="searched with the dense model that built it"):
        _mine(dl20, retriever="bm25", index=tmp_path / "index")
    (tmp_path / "index" / "index_build.json").unlink()
    with pytest.raises(ValueError, match="only an index built by `hf-kd index` records"):
        _mine(dl20, retriever=tiny_dot, index=tmp_path / "index")


@pytest.fixture(scope="module")
def minilm_teacher(minilm_path):
    return load_teacher(minilm_path, device="cpu")


def test_minilm_bi_encoder_ranks_by_its_cosine(dl20_small, minilm_path, minilm_teacher):
    result = _mine(dl20_small, retriever=minilm_path, num_negatives=2, rank_range=(1, 10), seed=0, device="cpu")
    collection = dl20_small["collection_"]
    model = minilm_teacher.model  # the same SentenceTransformer
    passages = model.encode_document(list(collection.values()), convert_to_tensor=True, normalize_embeddings=True)
    for row in result.rows[:: max(1, len(result.rows) // 5)]:
        query = model.encode_query(
            [dl20_small["queries_"][row.query_id]], convert_to_tensor=True, normalize_embeddings=True
        )
        similarity = (passages @ query[0]).tolist()
        threshold = sorted(similarity, reverse=True)[9]
        for negative in row.negative_ids:
            assert similarity[list(collection).index(negative)] >= threshold - 1e-5  # within the top 10


@pytest.mark.parametrize(
    ("teacher_kind", "margins", "kept"),
    [
        ("minilm", {"margin": 0.1}, lambda neg, pos: neg < pos - 0.1),
        ("run", {"relative_margin": 0.1}, lambda neg, pos: neg < pos * 0.9),
        ("run", {"margin": 1.0, "relative_margin": 0.05}, lambda neg, pos: neg < pos - 1.0 and neg < pos * 0.95),
    ],
)
def test_teacher_margin_holds_against_the_teachers_own_scores(dl20_small, request, teacher_kind, margins, kept):
    data = dl20_small
    queries, collection, qrels = data["queries_"], data["collection_"], data["qrels_"]
    if teacher_kind == "minilm":
        teacher = request.getfixturevalue("minilm_teacher")
    else:  # BM25 scores of the Anserini run; the pairs it lacks (NaN) are never kept
        teacher = load_teacher(f"run:{data['run']}", queries=queries, collection=collection)
    # every eligible candidate of ranks 1-30 that passes the margin is a negative ("top", more than there are)
    result = _mine(data, num_negatives=30, rank_range=(1, 30), sampling="top", teacher=teacher, **margins)
    assert result.stats.teacher_filtered > 0
    ranking = bm25_search(collection, {q: queries[q] for q in qrels}, k=30, show_progress=False)
    checked = set()
    for row in result.rows:
        if row.query_id in checked:
            continue
        window = [
            p
            for p in _ranked(ranking[row.query_id])
            if qrels[row.query_id].get(p, 0) <= 0 and collection[p] != collection[row.positive_id]
        ]
        texts = [collection[p] for p in [row.positive_id, *window]]
        scores = score_pairs(teacher, [queries[row.query_id]] * len(texts), texts)
        positive = float(scores[0])
        expected = [p for p, score in zip(window, scores[1:].tolist()) if kept(score, positive)]
        assert row.negative_ids == expected
        assert row.positive_score == pytest.approx(positive, abs=1e-5)
        assert all(kept(score, positive) for score in row.negative_scores)
        checked.add(row.query_id)
    assert len(checked) >= 3


def test_determinism_under_a_seed(dl20):
    first = _mine(dl20, num_negatives=2, rank_range=(3, 30), seed=7)
    again = _mine(dl20, num_negatives=2, rank_range=(3, 30), seed=7)
    other = _mine(dl20, num_negatives=2, rank_range=(3, 30), seed=8)
    assert first.triples() == again.triples()
    assert first.triples() != other.triples()
    assert [(r.query_id, r.positive_id) for r in first.rows] == [(r.query_id, r.positive_id) for r in other.rows]
    # a query's negatives do not depend on which other queries are mined
    some = {qid: dl20["qrels_"][qid] for qid in list(dl20["qrels_"])[:3]}
    alone = mine_hard_negatives(
        dl20["queries_"],
        dl20["collection_"],
        some,
        num_negatives=2,
        rank_range=(3, 30),
        seed=7,
        min_grade=2,
        skip_missing=True,
        show_progress=False,
    )
    assert alone.triples() == [t for t in first.triples() if t[0] in some]


def test_mined_triples_are_scored_and_n_way_rows_train(dl20, tmp_path, tiny_dot, tokenizer, capsys):
    common = [
        "mine", "--queries", dl20["queries"], "--collection", dl20["collection"], "--qrels", dl20["qrels"],
        "--run", dl20["run"], "--min-grade", "2", "--skip-missing", "--range", "5:30", "--num-negatives", "3",
    ]  # fmt: skip
    assert main([str(a) for a in [*common, "--out", tmp_path / "mined"]]) == 0
    assert "triples from 48 positives of 10 queries" in capsys.readouterr().out
    assert main([str(a) for a in [*common, "--format", "triples-tsv", "--out", tmp_path / "mined.tsv"]]) == 0
    lines = (tmp_path / "mined.tsv").read_text(encoding="utf-8").splitlines()
    assert len(lines) == ScoreDataset.open(tmp_path / "mined").num_rows and all(line.count("\t") == 2 for line in lines)
    for triples in (tmp_path / "mined", tmp_path / "mined.tsv"):
        out = tmp_path / f"scores-{triples.name}"
        argv = ["score", "--teacher", f"run:{dl20['run']}", "--queries", dl20["queries"], "--collection"]
        assert main([str(a) for a in [*argv, dl20["collection"], "--triples", triples, "--out", out]]) == 0
        scored = ScoreDataset.open(out).load()
        assert 0 < len(scored) <= len(lines)  # triples whose positive the run lacks are dropped by the run teacher
        check_dataset_for_loss(load_train_dataset([str(out)]), "margin_mse")
    check_dataset_for_loss(load_train_dataset([str(tmp_path / "mined.tsv")]), "ranknet")

    nway = tmp_path / "nway"
    argv = [*common, "--format", "nway", "--teacher", f"run:{dl20['run']}", "--margin", "0.5", "--out", nway]
    assert main([str(a) for a in argv]) == 0
    dataset = load_train_dataset([str(nway)])
    assert check_dataset_for_loss(dataset, "margin_mse") == "nway"
    for row in dataset:
        assert len(row["passages"]) == len(row["scores"]) == 4
        assert all(score < row["scores"][0] - 0.5 for score in row["scores"][1:])
    model = BertDotModel.from_pretrained(tiny_dot)
    batch = RankingCollator(model, tokenizer)([dataset[i] for i in range(min(4, len(dataset)))])
    assert batch["group_size"] == 4 and batch["labels"].shape[1] == 4


def test_beir_split_to_tsv(ci_data, tmp_path):
    beir = ci_data / "scifact-small"
    out = tmp_path / "scifact.tsv"
    argv = ["mine", "--beir", beir, "--split", "train", "--range", "1:20", "--num-negatives", "2", "--format"]
    assert main([str(a) for a in [*argv, "triples-tsv", "--out", out]]) == 0
    data = read_beir(beir, "train")
    by_text = {text.replace("\n", " ").replace("\t", " "): pid for pid, text in data.corpus.items()}
    query_ids = {text: qid for qid, text in data.queries.items()}
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) > 40
    for line in lines:
        query, positive, negative = line.split("\t")
        judged = data.qrels[query_ids[query]]
        assert judged[by_text[positive]] >= 1 and by_text[negative] not in judged


def _error(argv, capsys) -> str:
    assert main([str(a) for a in argv]) == 1
    return capsys.readouterr().err.strip()


def test_one_line_errors(dl20, tmp_path, capsys):
    files = ["--queries", dl20["queries"], "--collection", dl20["collection"]]
    out = ["--out", tmp_path / "out"]
    qrels = dl20["qrels"]
    assert _error(["mine", *files, "--qrels", qrels, "--min-grade", "2", *out], capsys) == (
        f"hf-kd mine: error: {qrels}, line 1: passage '1020327' (query '23849', grade 2) is not in the collection "
        f"{dl20['collection']}; pass --skip-missing (skip_missing=True) to leave such judgements out "
        "(--debug shows the traceback)"
    )
    bad_qrels = tmp_path / "qrels.txt"
    bad_qrels.write_text("23849 0 1120730 0\n23849 0 8010561 3\n23849 0 no-such-passage 2\n", encoding="utf-8")
    assert _error(["mine", *files, "--qrels", bad_qrels, "--min-grade", "2", *out], capsys) == (
        f"hf-kd mine: error: {bad_qrels}, line 3: passage 'no-such-passage' (query '23849', grade 2) is not in the "
        f"collection {dl20['collection']}; pass --skip-missing (skip_missing=True) to leave such judgements out "
        "(--debug shows the traceback)"
    )
    bad_qrels.write_text("23849 0 1120730 0\nno-such-query 0 1120730 1\n", encoding="utf-8")
    assert _error(["mine", *files, "--qrels", bad_qrels, *out], capsys) == (
        f"hf-kd mine: error: {bad_qrels}, line 2: query 'no-such-query' has no text in {dl20['queries']}; pass "
        "--skip-missing (skip_missing=True) to leave such judgements out (--debug shows the traceback)"
    )
    empty_query = tmp_path / "queries.tsv"
    empty_query.write_text("23849\tare naturalization records public information\n42255\t \n", encoding="utf-8")
    argv = ["mine", "--queries", empty_query, "--collection", dl20["collection"], "--qrels", qrels, *out]
    assert _error(argv, capsys) == (
        f"hf-kd mine: error: {empty_query}, line 2: expected a non-empty text for qid '42255' (--debug shows the "
        "traceback)"
    )
    with_files = ["mine", *files, "--qrels", qrels, "--skip-missing", "--min-grade", "2"]
    assert "--format nway carries teacher scores: pass --teacher" in _error(
        [*with_files, "--format", "nway", *out], capsys
    )
    assert "compare teacher scores: pass --teacher" in _error([*with_files, "--margin", "0.1", *out], capsys)
    with pytest.raises(ValueError, match="1 <= MIN <= MAX"):
        parse_rank_range("20:10")


def test_an_existing_output_is_kept_without_overwrite(dl20, tmp_path, capsys):
    argv = ["mine", "--queries", dl20["queries"], "--collection", dl20["collection"], "--qrels", dl20["qrels"]]
    argv += ["--skip-missing", "--min-grade", "2", "--range", "1:10", "--format", "triples-tsv"]
    out = tmp_path / "mined.tsv"
    out.write_text("earlier\n", encoding="utf-8")
    assert _error([*argv, "--out", out], capsys) == (
        f"hf-kd mine: error: {out} already exists and is not empty; pass overwrite=True (--overwrite) to replace it "
        "(--debug shows the traceback)"
    )
    assert out.read_text(encoding="utf-8") == "earlier\n"
    assert main([str(a) for a in [*argv, "--out", out, "--overwrite"]]) == 0
    assert out.read_text(encoding="utf-8") != "earlier\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mined.tsv", "mined.tsv.lock"]


def test_a_sentence_transformer_retriever_keeps_the_order_of_texts_in_one_batch(minilm_path):
    import numpy as np

    from hf_kd.mining.retrieval import load_dense_encoder

    encoder, _ = load_dense_encoder(minilm_path, "cpu")
    texts = ["cat", "a much longer query about the boiling point of water at high altitude"]
    direct = encoder.model.encode_query(texts, convert_to_numpy=True, normalize_embeddings=True)
    np.testing.assert_allclose(encoder.encode_queries(texts).embeddings.numpy(), direct, atol=1e-5)
