"""Teachers: loading every kind of cross-encoder, exact-dedup scoring, resume after SIGKILL, ensembles, analysis."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, BertModel

from hf_kd import BertCatConfig, BertCatModel
from hf_kd.data import ScoreDataset
from hf_kd.jobs import JobLockedError, output_lock
from hf_kd.models.ranking_functions import CPU_MAX_BATCH_TOKENS
from hf_kd.teachers import (
    CrossEncoderTeacher,
    HfKdTeacher,
    SequenceClassificationTeacher,
    Teacher,
    ensemble_score_datasets,
    find_distinct_pairs,
    load_teacher,
    mean_ensemble,
    normalize_scores,
    read_triples,
    score_pairs,
    score_statistics,
    score_triples,
)
from hf_kd.teachers.commands import add_subcommands

REPO_ROOT = Path(__file__).resolve().parents[1]


def tiny_bert_config(**kwargs) -> BertConfig:
    return BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, **kwargs
    )


def spread_weights(model: torch.nn.Module, seed: int) -> None:
    """Random weights wide enough that scores differ between pairs (BERT's 0.02 init gives near-constant scores)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "LayerNorm" not in name:
                parameter.normal_(0.0, 0.3)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, above all on a machine shared with other jobs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, tokenizer) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("teachers")
    folders = {}
    for name, seed in (("cat_a", 0), ("cat_b", 1)):
        model = BertCatModel(BertCatConfig(backbone_config=tiny_bert_config()))
        spread_weights(model, seed)
        model.save_pretrained(root / name, tokenizer=tokenizer)
        folders[name] = root / name

    classifier = BertForSequenceClassification(tiny_bert_config(num_labels=1))
    spread_weights(classifier, 2)
    classifier.save_pretrained(root / "seq_cls")
    tokenizer.save_pretrained(root / "seq_cls")
    folders["seq_cls"] = root / "seq_cls"

    from sentence_transformers import CrossEncoder

    CrossEncoder(str(root / "seq_cls"), device="cpu").save(str(root / "cross_encoder"))
    folders["cross_encoder"] = root / "cross_encoder"

    model = BertCatModel(BertCatConfig(backbone_config=tiny_bert_config()))
    model.save_pretrained(root / "no_tokenizer")
    folders["no_tokenizer"] = root / "no_tokenizer"

    two_labels = BertForSequenceClassification(tiny_bert_config(num_labels=2))
    two_labels.save_pretrained(root / "two_labels")
    tokenizer.save_pretrained(root / "two_labels")
    folders["two_labels"] = root / "two_labels"

    BertModel(tiny_bert_config()).save_pretrained(root / "encoder_only")
    tokenizer.save_pretrained(root / "encoder_only")
    folders["encoder_only"] = root / "encoder_only"
    return folders


@pytest.fixture(scope="module")
def teacher_a(checkpoints) -> HfKdTeacher:
    return load_teacher(checkpoints["cat_a"], device="cpu")


@pytest.fixture(scope="module")
def teacher_b(checkpoints) -> HfKdTeacher:
    return load_teacher(checkpoints["cat_b"], device="cpu")


@pytest.fixture(scope="module")
def triples_tsv(ci_data) -> Path:
    return ci_data / "msmarco-train-100.triples.tsv"


@pytest.fixture(scope="module")
def shared_triples_tsv(tmp_path_factory, triples_tsv) -> Path:
    """250 triples over the 200 distinct pairs of the CI file: the 100 triples, the 100 swapped, the first 50 again."""
    lines = triples_tsv.read_text(encoding="utf-8").splitlines()
    swapped = ["\t".join((q, neg, pos)) for q, pos, neg in (line.split("\t") for line in lines)]
    path = tmp_path_factory.mktemp("shared") / "shared.triples.tsv"
    path.write_text("\n".join(lines + swapped + lines[:50]) + "\n", encoding="utf-8")
    return path


class CountingTeacher(Teacher):
    """Records every pair scored and the input length of every batch."""

    kind = "counting"

    def __init__(self, inner: Teacher):
        super().__init__(inner.name_or_path, inner.tokenizer, inner.max_length, inner.device, name=inner.name)
        self.inner = inner
        self.pairs: list[tuple[str, str]] = []
        self.batch_lengths: list[np.ndarray] = []

    def score(self, queries, passages):
        self.pairs.extend(zip(queries, passages))
        self.batch_lengths.append(self.inner.pair_lengths(queries, passages))
        return self.inner.score(queries, passages)

    def pair_lengths(self, queries, passages):
        return self.inner.pair_lengths(queries, passages)

    @property
    def dtype(self):
        return self.inner.dtype


class FailingTeacher(CountingTeacher):
    """Fails on its n-th batch, as a crash in the middle of a run would."""

    def __init__(self, inner: Teacher, fail_on_batch: int):
        super().__init__(inner)
        self.fail_on_batch = fail_on_batch

    def score(self, queries, passages):
        if len(self.batch_lengths) + 1 == self.fail_on_batch:
            raise RuntimeError("simulated crash")
        return super().score(queries, passages)


def read_tsv_triples(path: Path) -> list[tuple[str, str, str]]:
    return [tuple(line.split("\t")) for line in path.read_text(encoding="utf-8").splitlines()]


# --------------------------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------------------------


def test_teacher_kinds_load_from_local_folders_and_score_like_their_models(checkpoints, triples_tsv, tokenizer):
    from sentence_transformers import CrossEncoder

    triples = read_tsv_triples(triples_tsv)[:20]
    queries, passages = [t[0] for t in triples], [t[1] for t in triples]

    hf_kd_teacher = load_teacher(checkpoints["cat_a"], device="cpu")
    sequence_classification = load_teacher(checkpoints["seq_cls"], device="cpu")
    cross_encoder = load_teacher(checkpoints["cross_encoder"], device="cpu")
    assert isinstance(hf_kd_teacher, HfKdTeacher)
    assert isinstance(sequence_classification, SequenceClassificationTeacher)
    assert isinstance(cross_encoder, CrossEncoderTeacher)

    model = BertForSequenceClassification.from_pretrained(checkpoints["seq_cls"]).eval()
    with torch.no_grad():
        features = tokenizer(queries, passages, padding=True, truncation="longest_first", return_tensors="pt")
        expected = model(**features).logits[:, 0].numpy()
    assert expected.std() > 0.05, "the tiny teacher should give distinct scores"
    np.testing.assert_allclose(score_pairs(sequence_classification, queries, passages), expected, atol=1e-5)

    reference = CrossEncoder(str(checkpoints["cross_encoder"]), device="cpu")
    expected_ce = reference.predict(list(zip(queries, passages)), activation_fn=torch.nn.Identity())
    np.testing.assert_allclose(score_pairs(cross_encoder, queries, passages), expected_ce, atol=1e-5)
    # the same weights behind both kinds: the same raw logits (no sigmoid from the CrossEncoder's activation)
    np.testing.assert_allclose(expected_ce, expected, atol=1e-5)

    description = cross_encoder.describe()
    assert description["kind"] == "cross_encoder"
    assert description["name"] == "cross_encoder"
    assert description["name_or_path"] == str(checkpoints["cross_encoder"].resolve())


def test_teacher_without_tokenizer_fails_naming_the_checkpoint(checkpoints):
    with pytest.raises(ValueError, match=r"no_tokenizer.* has no tokenizer: none of tokenizer.json"):
        load_teacher(checkpoints["no_tokenizer"], device="cpu")


def test_teacher_with_more_than_one_logit_fails_naming_the_checkpoint(checkpoints):
    with pytest.raises(ValueError, match=r"two_labels.* outputs 2 logits per pair \(num_labels=2\)"):
        load_teacher(checkpoints["two_labels"], device="cpu")


def test_checkpoint_without_classification_head_is_refused(checkpoints):
    with pytest.raises(ValueError, match=r"encoder_only.* is a BertModel without a sequence-classification head"):
        load_teacher(checkpoints["encoder_only"], device="cpu")


def test_teacher_returning_several_outputs_per_pair_fails(teacher_a):
    class TwoScores(CountingTeacher):
        def score(self, queries, passages):
            return torch.zeros(len(queries), 2)

    bad = TwoScores(teacher_a)
    with pytest.raises(ValueError, match=r"cat_a.* shape \(3, 2\) for 3 pairs"):
        bad._check_scores(bad.score(["q"] * 3, ["p"] * 3), 3)


# --------------------------------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------------------------------


def test_find_distinct_pairs_numbers_pairs_in_order_of_first_appearance():
    pairs, index = find_distinct_pairs(["q1", "q1", "q2", "q1", "q2"], ["a", "b", "a", "a", "a"])
    assert len(pairs) == 3
    assert index.tolist() == [0, 1, 2, 0, 2]
    assert pairs.texts() == (["q1", "q1", "q2"], ["a", "b", "a"])


def test_scores_equal_calling_the_model_directly(teacher_a, checkpoints, triples_tsv, tokenizer, tmp_path):
    result = score_triples([teacher_a], triples_tsv, tmp_path / "scores", batch_size=16, show_progress_bar=False)
    scores = ScoreDataset.open(result.out)
    table, provenance = scores.table(), scores.provenance

    triples = read_tsv_triples(triples_tsv)
    assert table.column("query").to_pylist() == [t[0] for t in triples]
    assert table.column_names == ["query", "positive", "negative", "pos_score", "neg_score"]
    model = BertCatModel.from_pretrained(checkpoints["cat_a"])
    expected_pos = model.score([t[0] for t in triples], [t[1] for t in triples], tokenizer).numpy()
    expected_neg = model.score([t[0] for t in triples], [t[2] for t in triples], tokenizer).numpy()
    assert expected_pos.std() > 0.05
    np.testing.assert_allclose(table.column("pos_score").to_numpy(), expected_pos, atol=1e-5)
    np.testing.assert_allclose(table.column("neg_score").to_numpy(), expected_neg, atol=1e-5)

    assert provenance.format == "hf-kd-score"
    assert provenance.rows == 100
    assert provenance.source_files == [str(triples_tsv.resolve())]
    assert provenance.teachers == [str(checkpoints["cat_a"].resolve())]
    assert provenance.parameters["teachers"][0]["kind"] == "hf_kd"
    assert provenance.created and provenance.hf_kd_version
    assert not (tmp_path / "scores.partial").exists(), "the work folder is removed once the dataset is written"


def test_every_distinct_pair_is_scored_exactly_once_in_length_sorted_batches(teacher_a, shared_triples_tsv, tmp_path):
    counting = CountingTeacher(teacher_a)
    result = score_triples([counting], shared_triples_tsv, tmp_path / "scores", batch_size=16, shard_size=64,
                           max_batch_tokens=0, show_progress_bar=False)  # fmt: skip

    triples = read_tsv_triples(shared_triples_tsv)
    distinct = {(q, p) for q, pos, neg in triples for p in (pos, neg)}
    assert len(triples) == 250 and len(distinct) == 200
    assert len(counting.pairs) == 200, "each distinct pair reaches the model once"
    assert set(counting.pairs) == distinct
    assert (result.distinct_pairs, result.scored_pairs, result.triples) == (200, 200, 250)

    # inside each shard, batches go from the longest inputs to the shortest
    batches_per_shard = [4, 4, 4, 1]  # shards of 64, 64, 64, 8 pairs in batches of 16
    start = 0
    for count in batches_per_shard:
        shard = counting.batch_lengths[start : start + count]
        for longer, shorter in zip(shard, shard[1:]):
            assert longer.min() >= shorter.max()
        start += count
    assert start == len(counting.batch_lengths)

    table = ScoreDataset.open(result.out).table()
    pos, neg = table.column("pos_score").to_numpy(), table.column("neg_score").to_numpy()
    np.testing.assert_array_equal(pos[100:200], neg[:100])  # swapped triples reuse the same pair scores
    np.testing.assert_array_equal(pos[200:], pos[:50])  # repeated triples too


def test_a_token_budget_caps_each_batch_and_keeps_the_scores(teacher_a, triples_tsv, tmp_path):
    triples = read_tsv_triples(triples_tsv)[:60]
    queries, passages = [t[0] for t in triples], [t[1] for t in triples]
    lengths = teacher_a.pair_lengths(queries, passages)
    budget = 3 * int(lengths.max())  # below batch_size x the longest: the cap, not batch_size, sets the rows
    counting = CountingTeacher(teacher_a)
    capped = score_pairs(counting, queries, passages, batch_size=16, max_batch_tokens=budget)
    sizes = [len(batch) for batch in counting.batch_lengths]
    assert sum(sizes) == len(set(zip(queries, passages)))
    assert all(size * batch.max() <= budget for size, batch in zip(sizes, counting.batch_lengths))
    assert sizes[0] == 3 and max(sizes) > 3, "long pairs go 3 at a time, short ones more"
    np.testing.assert_allclose(capped, score_pairs(teacher_a, queries, passages, max_batch_tokens=0), atol=1e-5)

    counting = CountingTeacher(teacher_a)  # on a CPU the default caps at CPU_MAX_BATCH_TOKENS
    score_pairs(counting, queries, passages, batch_size=256)
    assert len(counting.pairs) * lengths.max() > CPU_MAX_BATCH_TOKENS, "one batch of all pairs would pass the cap"
    assert all(len(batch) * batch.max() <= CPU_MAX_BATCH_TOKENS for batch in counting.batch_lengths)

    result = score_triples([teacher_a], triples_tsv, tmp_path / "scores", max_batch_tokens=budget,
                           show_progress_bar=False)  # fmt: skip
    assert ScoreDataset.open(result.out).provenance.parameters["max_batch_tokens"] == budget
    with pytest.raises(ValueError, match="max_batch_tokens must be an integer >= 0"):
        score_pairs(teacher_a, queries, passages, max_batch_tokens=-1)


def test_bf16_scores_stay_close_to_float32(teacher_a, triples_tsv):
    triples = read_tsv_triples(triples_tsv)[:40]
    queries, passages = [t[0] for t in triples], [t[1] for t in triples]
    full = score_pairs(teacher_a, queries, passages)
    bf16 = score_pairs(teacher_a, queries, passages, bf16=True)
    assert not np.array_equal(full, bf16), "autocast should change the arithmetic"
    np.testing.assert_allclose(bf16, full, atol=0.1 * full.std())


def test_existing_output_is_not_overwritten(teacher_a, triples_tsv, tmp_path):
    out = tmp_path / "scores"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="already exists"):
        score_triples([teacher_a], triples_tsv, out, show_progress_bar=False)


def test_read_triples_from_a_dataset_folder_equals_the_tsv(triples_tsv, tmp_path):
    from datasets import Dataset

    table, source = read_triples(triples_tsv)
    assert table.num_rows == 100 and source == str(triples_tsv.resolve())
    Dataset(table).save_to_disk(str(tmp_path / "saved"))
    from_folder, _ = read_triples(tmp_path / "saved")
    assert from_folder.column("positive").to_pylist() == table.column("positive").to_pylist()
    with pytest.raises(ValueError, match=r"missing columns \['negative'\]"):
        read_triples(table.drop_columns(["negative"]))


def test_crashed_run_resumes_from_its_finished_shards(teacher_a, triples_tsv, tmp_path):
    out = tmp_path / "scores"
    failing = FailingTeacher(teacher_a, fail_on_batch=5)  # shards of 40 pairs = 2 batches of 20: 2 shards finish
    with pytest.raises(RuntimeError, match="simulated crash"):
        score_triples([failing], triples_tsv, out, batch_size=20, shard_size=40, max_batch_tokens=0,
                      show_progress_bar=False)  # fmt: skip
    shards = sorted(p.name for p in (tmp_path / "scores.partial" / "teacher-0").glob("*.parquet"))
    assert shards == ["pairs-00000.parquet", "pairs-00001.parquet"]
    assert not out.exists()

    with pytest.raises(ValueError, match=r"unfinished scoring run of other work \(shard_size: 40 -> 50\)"):
        score_triples([teacher_a], triples_tsv, out, batch_size=20, shard_size=50, show_progress_bar=False)

    counting = CountingTeacher(teacher_a)
    result = score_triples([counting], triples_tsv, out, batch_size=20, shard_size=40, show_progress_bar=False)
    assert (result.resumed_pairs, result.scored_pairs) == (80, 120)
    assert len(counting.pairs) == 120


def test_run_killed_with_sigkill_resumes_to_the_same_dataset(teacher_a, checkpoints, triples_tsv, tmp_path):
    out = tmp_path / "scores"
    script = tmp_path / "slow_scoring.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import time
            import torch
            from hf_kd.teachers import load_teacher, score_triples
            from hf_kd.teachers.loading import HfKdTeacher

            torch.set_num_threads(1)

            class SlowTeacher(HfKdTeacher):
                def score(self, queries, passages):
                    time.sleep(0.25)
                    return super().score(queries, passages)

            loaded = load_teacher({str(checkpoints["cat_a"])!r}, device="cpu")
            teacher = SlowTeacher(loaded.model, loaded.tokenizer, loaded.name_or_path)
            score_triples([teacher], {str(triples_tsv)!r}, {str(out)!r}, batch_size=10, shard_size=20,
                          show_progress_bar=False)
            """
        )
    )
    log = tmp_path / "slow_scoring.log"
    with open(log, "wb") as stderr:
        process = subprocess.Popen([sys.executable, str(script)], cwd=REPO_ROOT, stderr=stderr)
    shard_folder = tmp_path / "scores.partial" / "teacher-0"
    deadline = time.monotonic() + 60
    while len(list(shard_folder.glob("pairs-*.parquet"))) < 3:
        if process.poll() is not None:
            pytest.fail(f"the scoring process ended before it was killed: {log.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("no shard written within 60 s")
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not out.exists()
    finished = len(list(shard_folder.glob("pairs-*.parquet")))
    assert 3 <= finished < 10

    counting = CountingTeacher(teacher_a)
    resumed = score_triples([counting], triples_tsv, out, batch_size=10, shard_size=20, show_progress_bar=False)
    assert resumed.resumed_pairs == 20 * finished
    assert resumed.scored_pairs == len(counting.pairs) == 200 - 20 * finished
    assert not (tmp_path / "scores.partial").exists()

    uninterrupted = score_triples([teacher_a], triples_tsv, tmp_path / "reference", batch_size=10, shard_size=20,
                                  show_progress_bar=False)  # fmt: skip
    table = ScoreDataset.open(resumed.out).table()
    reference = ScoreDataset.open(uninterrupted.out).table()
    assert table.num_rows == reference.num_rows == 100
    for column in ("query", "positive", "negative"):
        assert table.column(column).equals(reference.column(column))
    for column in ("pos_score", "neg_score"):
        np.testing.assert_allclose(table.column(column).to_numpy(), reference.column(column).to_numpy(), atol=1e-6)


# --------------------------------------------------------------------------------------------------------------------
# Ensembles
# --------------------------------------------------------------------------------------------------------------------


def test_normalize_scores_numbers():
    pos, neg = np.array([1.0, 3.0]), np.array([2.0, 6.0])
    z_pos, z_neg = normalize_scores(pos, neg, "zscore")
    # mean 3, population std sqrt(3.5)
    np.testing.assert_allclose(z_pos, [-2 / np.sqrt(3.5), 0.0])
    np.testing.assert_allclose(z_neg, [-1 / np.sqrt(3.5), 3 / np.sqrt(3.5)])
    m_pos, m_neg = normalize_scores(pos, neg, "minmax")
    np.testing.assert_allclose(m_pos, [0.0, 0.4])
    np.testing.assert_allclose(m_neg, [0.2, 1.0])
    with pytest.raises(ValueError, match="'flat' gives every passage the same score"):
        normalize_scores(np.ones(3), np.ones(3), "minmax", teacher="flat")
    with pytest.raises(ValueError, match="unknown normalisation 'rank'"):
        normalize_scores(pos, neg, "rank")


def test_ensemble_is_the_mean_of_the_teachers(teacher_a, teacher_b, triples_tsv, tmp_path):
    both = score_triples([teacher_a, teacher_b], triples_tsv, tmp_path / "both", show_progress_bar=False)
    scores = ScoreDataset.open(both.out)
    table, provenance = scores.table(), scores.provenance
    assert table.column_names == [
        "query", "positive", "negative", "pos_score", "neg_score",
        "pos_score_cat_a", "neg_score_cat_a", "pos_score_cat_b", "neg_score_cat_b",
    ]  # fmt: skip
    columns = {name: table.column(name).to_numpy().astype(np.float64) for name in table.column_names[3:]}
    np.testing.assert_allclose(columns["pos_score"], (columns["pos_score_cat_a"] + columns["pos_score_cat_b"]) / 2,
                               rtol=1e-6)  # fmt: skip
    np.testing.assert_allclose(columns["neg_score"], (columns["neg_score_cat_a"] + columns["neg_score_cat_b"]) / 2,
                               rtol=1e-6)  # fmt: skip
    assert [t["name"] for t in provenance.parameters["teachers"]] == ["cat_a", "cat_b"]
    assert provenance.parameters["ensemble"] == "mean"

    # per-teacher columns are each teacher's own scores
    alone = score_triples([teacher_a], triples_tsv, tmp_path / "a", show_progress_bar=False)
    alone_table = ScoreDataset.open(alone.out).table()
    np.testing.assert_array_equal(alone_table.column("pos_score").to_numpy(), columns["pos_score_cat_a"])

    # hf-kd ensemble of two single-teacher datasets == scoring with both, and z-scores re-ensemble per teacher
    score_triples([teacher_b], triples_tsv, tmp_path / "b", show_progress_bar=False)
    ensemble_score_datasets([tmp_path / "a", tmp_path / "b"], tmp_path / "ab")
    ab = ScoreDataset.open(tmp_path / "ab")
    np.testing.assert_allclose(ab.table().column("pos_score").to_numpy(), columns["pos_score"], rtol=1e-6)
    assert ab.provenance.parameters["normalize"] == "none"
    ensemble_score_datasets([tmp_path / "both"], tmp_path / "zscored", normalize="zscore")
    zscored = ScoreDataset.open(tmp_path / "zscored").table()
    a = normalize_scores(columns["pos_score_cat_a"], columns["neg_score_cat_a"], "zscore")
    b = normalize_scores(columns["pos_score_cat_b"], columns["neg_score_cat_b"], "zscore")
    np.testing.assert_allclose(zscored.column("neg_score").to_numpy(), (a[1] + b[1]) / 2, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(zscored.column("pos_score_cat_b").to_numpy(), columns["pos_score_cat_b"])
    with output_lock(tmp_path / "held"):  # another job writes that folder
        with pytest.raises(JobLockedError, match=f"is being written by pid {os.getpid()} on "):
            ensemble_score_datasets([tmp_path / "a", tmp_path / "b"], tmp_path / "held")
    assert not (tmp_path / "held").exists()


def test_ensemble_refuses_datasets_of_other_triples(teacher_a, triples_tsv, shared_triples_tsv, tmp_path):
    score_triples([teacher_a], triples_tsv, tmp_path / "a", show_progress_bar=False)
    score_triples([teacher_a], shared_triples_tsv, tmp_path / "shared", show_progress_bar=False)
    with pytest.raises(ValueError, match="has 250 triples but .* has 100"):
        ensemble_score_datasets([tmp_path / "a", tmp_path / "shared"], tmp_path / "bad")
    with pytest.raises(ValueError, match="normalize='zscore' needs several teachers"):
        ensemble_score_datasets([tmp_path / "a"], tmp_path / "single", normalize="zscore")


def test_mean_ensemble_numbers():
    a = (np.array([2.0, 0.0]), np.array([0.0, 1.0]))
    b = (np.array([4.0, 1.0]), np.array([1.0, 3.0]))
    pos, neg = mean_ensemble({"a": a, "b": b})
    np.testing.assert_array_equal(pos, [3.0, 0.5])
    np.testing.assert_array_equal(neg, [0.5, 2.0])
    assert pos.dtype == np.float32


# --------------------------------------------------------------------------------------------------------------------
# Analysis and the command line
# --------------------------------------------------------------------------------------------------------------------


def test_score_statistics_numbers():
    stats = score_statistics(np.array([3.0, 1.0, 2.0, 5.0]), np.array([1.0, 2.0, 2.0, 1.0]))
    assert stats["triples"] == 4
    assert stats["margin"]["mean"] == pytest.approx(1.25)
    assert stats["margin"]["median"] == pytest.approx(1.0)
    assert stats["pos"]["max"] == 5.0 and stats["neg"]["min"] == 1.0
    assert stats["positive_ranked_first"] == 0.5 and stats["ties"] == 0.25


def test_cli_score_ensemble_and_analyze(checkpoints, triples_tsv, tmp_path):
    parser = argparse.ArgumentParser(prog="hf-kd")
    add_subcommands(parser.add_subparsers(dest="command"))
    a, b = str(checkpoints["cat_a"]), str(checkpoints["cat_b"])

    args = parser.parse_args(["score", "--teacher", a, "--teacher", b, "--triples", str(triples_tsv),
                              "--out", str(tmp_path / "t2"), "--batch-size", "32", "--device", "cpu"])  # fmt: skip
    assert args.func(args) == 0
    args = parser.parse_args(["ensemble", "--scores", str(tmp_path / "t2"), "--out", str(tmp_path / "minmax"),
                              "--normalize", "minmax"])  # fmt: skip
    assert args.func(args) == 0
    assert ScoreDataset.open(tmp_path / "minmax").provenance.parameters["normalize"] == "minmax"

    args = parser.parse_args(["analyze-scores", "--scores", str(tmp_path / "t2"), "--out", str(tmp_path / "plots"),
                              "--model", a, "--device", "cpu"])  # fmt: skip
    assert args.func(args) == 0
    for png in ("score_distributions.png", "margin_distributions.png"):
        assert (tmp_path / "plots" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((tmp_path / "plots" / "score_summary.json").read_text())
    assert list(summary["scorers"]) == ["cat_a", "cat_b", "ensemble", "cat_a_2"]
    assert summary["triples"] == 100

    table = ScoreDataset.open(tmp_path / "t2").table()
    pos, neg = table.column("pos_score_cat_b").to_numpy(), table.column("neg_score_cat_b").to_numpy()
    cat_b = summary["scorers"]["cat_b"]
    assert cat_b["positive_ranked_first"] == pytest.approx(float(np.mean(pos > neg)))
    assert cat_b["margin"]["mean"] == pytest.approx(float(np.mean(pos.astype(np.float64) - neg)), abs=1e-6)
    # the model scored again from its checkpoint matches its teacher columns
    for key in ("pos", "neg", "margin"):
        assert summary["scorers"]["cat_a_2"][key]["mean"] == pytest.approx(summary["scorers"]["cat_a"][key]["mean"],
                                                                           abs=1e-5)  # fmt: skip
    assert summary["scorers"]["cat_a_2"]["kind"] == "model"


def test_cli_rejects_unknown_normalisation(tmp_path):
    parser = argparse.ArgumentParser(prog="hf-kd")
    add_subcommands(parser.add_subparsers(dest="command"))
    with pytest.raises(SystemExit):
        parser.parse_args(["ensemble", "--scores", "x", "--out", str(tmp_path), "--normalize", "rank"])


def test_pyarrow_table_input_and_multi_teacher_rows_align(teacher_a, teacher_b, tmp_path):
    table = pa.table(
        {
            "query": ["what is kd", "what is kd", "cats"],
            "positive": ["distillation transfers knowledge", "distillation transfers knowledge", "a cat purrs"],
            "negative": ["a cat purrs", "the weather is nice", "what is kd"],
        }
    )
    result = score_triples([teacher_a, teacher_b], table, tmp_path / "scores", show_progress_bar=False)
    assert result.distinct_pairs == 5  # (kd, distillation) is shared by two triples
    written = ScoreDataset.open(result.out)
    scores, provenance = written.table(), written.provenance
    assert provenance.source_files == []
    expected = score_pairs(teacher_b, ["what is kd", "cats"], ["a cat purrs", "what is kd"])
    np.testing.assert_allclose(scores.column("neg_score_cat_b").to_numpy()[[0, 2]], expected, atol=1e-5)
    # a teacher-score dataset is itself a triples input (to score it with other teachers)
    again, source = read_triples(result.out)
    assert again.equals(table) and source == str(result.out.resolve())
