"""`hf-kd adapt` on SciFact's ci cut: BM25 as a teacher of any pair, the teacher ensemble, every stage, the controls,
resuming, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoModel

from hf_kd.adapt import get_adapt_budget
from hf_kd.adapt.teacher import Member, corpus_ranking, select_disagreeing_pairs, teacher_members
from hf_kd.cli import main
from hf_kd.data import ScoreDataset, read_beir
from hf_kd.data.corpus import corpus_texts, read_corpus
from hf_kd.evaluation.bm25 import BM25Index
from hf_kd.evaluation.reports import read_reports
from hf_kd.teachers import BM25Teacher, fuse_union_zscore, load_teacher, normalize_scores, union_zscore_statistics


@pytest.fixture(scope="module")
def scifact_small(ci_data):
    return read_beir(ci_data / "scifact-small", split="test")


def test_bm25_teacher_scores_any_pair_as_bm25_ranks_it(ci_data, scifact_small):
    teacher = load_teacher(f"bm25:{ci_data / 'scifact-small'}")
    assert isinstance(teacher, BM25Teacher) and teacher.describe()["documents"] == 400
    queries = dict(list(scifact_small.queries.items())[:5])
    ranked = BM25Index.build(scifact_small.corpus, show_progress=False).search(queries, k=400, show_progress=False)
    for qid, text in queries.items():
        pids = list(ranked[qid])[:10] + list(ranked[qid])[-3:]
        scores = teacher.score([text] * len(pids), [scifact_small.corpus[p] for p in pids]).numpy()
        np.testing.assert_allclose(scores, [ranked[qid][p] for p in pids], rtol=1e-5)
    # a passage that matches no query word scores 0, as BM25 gives it
    unmatched = next(p for p in scifact_small.corpus if p not in ranked[qid])
    assert teacher.score([text], [scifact_small.corpus[unmatched]]).item() == 0.0
    with pytest.raises(ValueError, match="the passage 'not a document of SciFact' is not in its corpus"):
        teacher.score(["a query"], ["not a document of SciFact"])


def test_vectors_encoded_once_score_as_the_sentence_transformer_does(scifact_small, minilm_path):
    from hf_kd.adapt.vectors import CorpusVectors, SentenceTransformerVectors, start_encoder
    from hf_kd.teachers.vector_teacher import VectorTeacher

    corpus = dict(list(scifact_small.corpus.items())[:40])
    queries = dict(list(scifact_small.queries.items())[:4])
    vectors = CorpusVectors(*start_encoder(minilm_path, 128, 64, special_tokens_included=True), corpus)
    teacher = VectorTeacher(
        minilm_path,
        dict(zip(queries.values(), vectors.query_vectors(queries))),
        vectors.vectors,
        list(corpus.values()),
        max_length=128,
        name="minilm",
    )
    reference = load_teacher(minilm_path, max_length=128)
    pairs_q = [q for q in queries.values() for _ in range(10)]
    pairs_p = [corpus[d] for d in list(corpus)[:10]] * len(queries)
    np.testing.assert_allclose(teacher.score(pairs_q, pairs_p), reference.score(pairs_q, pairs_p), atol=2e-5)
    assert teacher.describe()["kind"] == "bi_encoder_vectors"
    with pytest.raises(ValueError, match="no vector for the passage 'elsewhere'"):
        teacher.score([pairs_q[0]], ["elsewhere"])
    # any sentence-transformers model's own vectors: the same scores; under bfloat16 autocast, close to them
    exact = SentenceTransformerVectors(minilm_path, 128, corpus)
    np.testing.assert_allclose(exact.all_scores(queries), vectors.all_scores(queries), atol=2e-5)
    bf16 = SentenceTransformerVectors(minilm_path, 128, corpus, bf16=True)
    assert bf16.vectors.dtype == np.float32
    np.testing.assert_allclose(bf16.all_scores(queries), exact.all_scores(queries), atol=2e-2)


def test_the_ensemble_is_the_mean_of_per_query_z_scores_in_the_dense_units():
    bm25 = np.array([[10.0, 0.0, 5.0, 1.0]])
    dense = np.array([[0.2, 0.8, 0.5, 0.1]])
    centers, scales, unions = union_zscore_statistics(bm25, dense, depth=2)
    union = [0, 1, 2]  # BM25's top 2 are rows 0 and 2, the dense top 2 rows 1 and 2
    assert unions[0].tolist() == union
    zb = (bm25[0, union] - bm25[0, union].mean()) / bm25[0, union].std()
    zd = (dense[0, union] - dense[0, union].mean()) / dense[0, union].std()
    expected = (zb + zd) / 2 * dense[0, union].std() + dense[0, union].mean()
    fused = fuse_union_zscore(bm25, dense, centers, scales)[0]
    np.testing.assert_allclose(fused[union], expected)
    # any document of the corpus has a fused score from the same statistics, one row per pair as well
    zb3 = (1.0 - bm25[0, union].mean()) / bm25[0, union].std()
    zd3 = (0.1 - dense[0, union].mean()) / dense[0, union].std()
    np.testing.assert_allclose(fused[3], (zb3 + zd3) / 2 * dense[0, union].std() + dense[0, union].mean())
    np.testing.assert_allclose(
        fuse_union_zscore(bm25[0, [3, 0]], dense[0, [3, 0]], centers[[0, 0]], scales[[0, 0]]), fused[[3, 0]]
    )
    # the same normalisation as the teacher-score datasets' query_zscore
    pos, _ = normalize_scores(bm25[0, union], bm25[0, union], "query_zscore", groups=np.zeros(3))
    np.testing.assert_allclose(pos, zb)


def test_bad_budget_settings_are_refused():
    with pytest.raises(ValueError, match="unknown budget 'huge'"):
        get_adapt_budget("huge")
    with pytest.raises(ValueError, match="unknown setting 'T1'"):
        get_adapt_budget("ci", {"settings": ["T1"]})
    with pytest.raises(ValueError, match="query_method must be one of"):
        get_adapt_budget("ci", {"query_method": "cloze"})
    with pytest.raises(ValueError, match="unknown budget settings \\['epochs'\\]"):
        get_adapt_budget("ci", {"epochs": 2})
    with pytest.raises(ValueError, match="backbone_dropout must be in"):
        get_adapt_budget("ci", {"backbone_dropout": 1.5})
    with pytest.raises(ValueError, match="pair_selection must be one of random, disagreement"):
        get_adapt_budget("ci", {"pair_selection": "hardest"})
    with pytest.raises(ValueError, match="checkpoint_every must be between 1 and steps \\(6\\), got 7"):
        get_adapt_budget("ci", {"checkpoint_every": 7})


@pytest.fixture(scope="module")
def ci_adaptation(tmp_path_factory, ci_data):
    out = tmp_path_factory.mktemp("adapt") / "ci"
    code = main(["adapt", "--corpus", str(ci_data / "scifact-small"), "--budget", "ci", "--out", str(out)])
    assert code == 0
    return out


def test_every_stage_runs_and_every_row_is_measured(ci_adaptation, ci_data, minilm_path):
    results = json.loads((ci_adaptation / "results.json").read_text())
    assert set(results["stage_seconds"]) == {
        "queries",
        "candidates",
        "pairs",
        "teacher_scores",
        "students",
        "evaluation",
    }
    queries = (ci_adaptation / "queries" / "queries.tsv").read_text().splitlines()
    assert len(queries) == results["queries"]["queries"] > 90
    test_queries = set(read_beir(ci_data / "scifact-small", split="test").queries.values())
    assert not {line.split("\t")[1] for line in queries} & test_queries
    scores = ScoreDataset.open(ci_adaptation / "teacher_scores")
    assert scores.teachers == ["bm25", "minilm"]
    assert scores.num_rows == results["pairs"]["pairs"]
    # the labels are the measured teacher: per query, BM25's and the start's z-scores over the union of their top
    # `fusion_depth` of the whole corpus, averaged, in the start's units (checked by hand on the first pair)
    from sentence_transformers import SentenceTransformer

    budget = get_adapt_budget("ci")
    first = scores.load()[0]
    corpus = corpus_texts(read_corpus(ci_data / "scifact-small"))
    texts = list(corpus.values())
    bm25 = BM25Teacher(corpus).corpus_scores(first["query"]).astype(np.float64)
    start = SentenceTransformer(minilm_path, device="cpu")
    start.max_seq_length = budget.teacher_max_length
    vectors = start.encode([first["query"], *texts], normalize_embeddings=True)
    cosine = (vectors[1:] @ vectors[0]).astype(np.float64)
    k = budget.fusion_depth
    union = sorted(set(np.argsort(-bm25)[:k]) | set(np.argsort(-cosine)[:k]))
    b, c = bm25[union], cosine[union]
    for side in ("pos", "neg"):
        row = texts.index(first["positive" if side == "pos" else "negative"])
        assert first[f"{side}_score_bm25"] == pytest.approx(bm25[row], rel=1e-5)
        expected = ((bm25[row] - b.mean()) / b.std() + (cosine[row] - c.mean()) / c.std()) / 2 * c.std() + c.mean()
        assert first[f"{side}_score"] == pytest.approx(expected, abs=2e-3)
    rows = results["evaluation"]["rows"]
    for name in (
        "BM25",
        "start",
        "teacher (BM25 + start)",
        "bert_dot-teacher-s42",
        "bert_dot-self-s42",
        "bert_dot-twin-s42",
    ):
        assert 0.0 < rows[name].get("dense", rows[name].get("rerank"))["nDCG@10"] <= 1.0
    # the teacher ensemble ranks better than the start on the ci cut too
    assert rows["teacher (BM25 + start)"]["dense"]["nDCG@10"] > rows["start"]["dense"]["nDCG@10"]
    settings = {(line["setting"], line["retrieval"]) for line in results["evaluation"]["summary"]}
    assert settings == {(s, r) for s in ("teacher", "self", "twin") for r in ("dense", "rerank")}
    teacher_line = next(line for line in results["evaluation"]["summary"] if line["setting"] == "teacher")
    assert set(teacher_line["comparisons"]) == {"start", "self", "twin"}
    tables = (ci_adaptation / "tables.md").read_text()
    assert "self control" in tables and "no-teacher twin" in tables and "p=" in tables
    # the students are ordinary checkpoints, trained in the precision the summary records
    model = AutoModel.from_pretrained(ci_adaptation / "students" / "bert_dot-teacher-s42")
    assert model.config.architecture == "bert_dot"
    assert model.config.max_query_length == 64  # long claims are read whole, as the start reads them
    summary = json.loads((ci_adaptation / "students" / "bert_dot-teacher-s42" / "train_summary.json").read_text())
    assert summary["arguments"]["training"]["bf16"] == results["bf16"]


def test_the_learning_curve_measures_every_checkpoint(ci_adaptation):
    results = json.loads((ci_adaptation / "results.json").read_text())
    evaluation = results["evaluation"]
    curve = evaluation["learning_curve"]
    line = [p for p in curve if p["setting"] == "teacher" and p["retrieval"] == "dense"]
    assert [p["step"] for p in line] == [0, 3, 6]
    assert [p["pairs_seen"] for p in line] == [0, 24, 48]
    assert 0 == line[0]["minutes"] < line[1]["minutes"] < line[2]["minutes"]
    # step 0 is the start, the last step the student itself, the middle its checkpoint (a model of its own)
    assert line[0]["ndcg@10"] == pytest.approx(evaluation["rows"]["start"]["dense"]["nDCG@10"])
    assert line[2]["ndcg@10"] == pytest.approx(evaluation["rows"]["bert_dot-teacher-s42"]["dense"]["nDCG@10"])
    middle = {
        r.retrieval: r for r in read_reports(ci_adaptation / "evaluation" / "bert_dot-teacher-s42@3" / "metrics.json")
    }
    assert line[1]["ndcg@10"] == pytest.approx(np.mean(list(middle["dense"].per_query_ndcg.values())))
    assert line[1]["ndcg@10"] == pytest.approx(middle["dense"].metrics["nDCG@10"])
    checkpoint = ci_adaptation / "students" / "bert_dot-teacher-s42" / "checkpoint-3"
    assert AutoModel.from_pretrained(checkpoint).config.architecture == "bert_dot"
    # the adapted student is compared with the self control at the same step
    assert set(line[1]["comparisons"]) == {"start", "self"}
    assert {(p["setting"], p["retrieval"]) for p in curve} == {
        (s, r) for s in ("teacher", "self", "twin") for r in ("dense", "rerank")
    }
    assert (ci_adaptation / "curve.png").stat().st_size > 10_000
    assert "### Learning curve" in (ci_adaptation / "tables.md").read_text()


def test_a_rerun_resumes_without_work_and_another_budget_is_refused(ci_adaptation, ci_data, capsys):
    before = json.loads((ci_adaptation / "results.json").read_text())
    assert (
        main(["adapt", "--corpus", str(ci_data / "scifact-small"), "--budget", "ci", "--out", str(ci_adaptation)]) == 0
    )
    after = json.loads((ci_adaptation / "results.json").read_text())
    assert after["evaluation"]["rows"] == before["evaluation"]["rows"]
    assert len(after["invocations"]) == 2 and after["invocations"][1]["wall_time_s"] < 30
    capsys.readouterr()
    code = main(
        [
            "adapt",
            "--corpus",
            str(ci_data / "scifact-small"),
            "--budget",
            "ci",
            "--set",
            "steps=7",
            "--out",
            str(ci_adaptation),
        ]
    )
    assert code == 1
    assert "holds another adaptation (budget.steps: 6 -> 7)" in capsys.readouterr().err
    # a folder written before a setting existed resumes where the setting is at its default, and not elsewhere
    record = json.loads((ci_adaptation / "adapt.json").read_text())
    del record["budget"]["pair_selection"]
    (ci_adaptation / "adapt.json").write_text(json.dumps(record))
    command = ["adapt", "--corpus", str(ci_data / "scifact-small"), "--budget", "ci", "--out", str(ci_adaptation)]
    assert main(command) == 0
    capsys.readouterr()
    assert main([*command, "--set", "pair_selection=disagreement"]) == 1
    assert "budget.pair_selection: random -> disagreement" in capsys.readouterr().err


def test_seeds_of_two_runs_pool_into_one_summary(ci_adaptation, ci_data, tmp_path, capsys):
    import shutil

    # a second run of the same adaptation with another seed: the kept stages are reused, one student is new
    other = tmp_path / "other"
    shutil.copytree(ci_adaptation, other)
    shutil.rmtree(other / "students")
    command = ["adapt", "--corpus", str(ci_data / "scifact-small"), "--budget", "ci", "--out", str(other)]
    assert main([*command, "--set", "seeds=[43]", "--set", "settings=[teacher]", "--set", "checkpoint_every=null"]) == 1
    assert "holds another adaptation (budget.checkpoint_every: 3 ->" in capsys.readouterr().err
    assert main([*command, "--set", "seeds=[43]", "--set", "settings=[teacher]"]) == 0
    first = json.loads((ci_adaptation / "results.json").read_text())
    second = json.loads((other / "results.json").read_text())
    assert list(second["students"]) == ["bert_dot-teacher-s43"]
    pooled_dir = tmp_path / "pooled"
    assert main(["adapt-pool", str(ci_adaptation), str(other), "--out", str(pooled_dir)]) == 0
    pooled = json.loads((pooled_dir / "results.json").read_text())
    assert pooled["budget"]["seeds"] == [42, 43]
    assert set(pooled["students"]) == {*first["students"], "bert_dot-teacher-s43"}
    per_query = pooled["evaluation"]["per_query_ndcg@10"]
    for kind in ("dense", "rerank"):
        line = next(x for x in pooled["evaluation"]["summary"] if x["setting"] == "teacher" and x["retrieval"] == kind)
        seeds = [per_query[f"bert_dot-teacher-s{seed}"][kind] for seed in (42, 43)]
        means = [float(np.mean(list(s.values()))) for s in seeds]
        assert line["seeds"] == 2 and line["seed_means"] == pytest.approx(means)
        assert line["ndcg@10"] == pytest.approx(np.mean(means))
        assert line["spread"] == pytest.approx(np.std(means, ddof=1))
        # the paired test against the self control (seed 42 only) is on per-query means over the teacher's seeds
        self_control = per_query["bert_dot-self-s42"][kind]
        differences = [(seeds[0][q] + seeds[1][q]) / 2 - self_control[q] for q in self_control]
        assert line["comparisons"]["self"]["difference"] == pytest.approx(np.mean(differences))
        assert line["comparisons"]["self"]["queries"] == len(differences)
        # a setting of one run only keeps its own summary
        self_line = next(
            x for x in pooled["evaluation"]["summary"] if x["setting"] == "self" and x["retrieval"] == kind
        )
        single = next(x for x in first["evaluation"]["summary"] if x["setting"] == "self" and x["retrieval"] == kind)
        assert self_line["ndcg@10"] == pytest.approx(single["ndcg@10"])
    tables = (pooled_dir / "tables.md").read_text()
    assert (
        "pooled from 2 runs" in tables and "| bert_dot | adapted (Margin-MSE from BM25 + start) | dense | 2 |" in tables
    )
    # a seed counts once; another adaptation is refused; both in one line
    capsys.readouterr()
    assert main(["adapt-pool", str(ci_adaptation), str(ci_adaptation), "--out", str(tmp_path / "twice")]) == 1
    assert "is in both" in capsys.readouterr().err
    # students of another precision pool only when asked to, and the pooled results say both
    record = json.loads((other / "results.json").read_text())
    (other / "results.json").write_text(json.dumps({**record, "bf16": not record["bf16"]}))
    assert main(["adapt-pool", str(ci_adaptation), str(other), "--out", str(tmp_path / "precisions")]) == 1
    assert "(bf16)" in capsys.readouterr().err
    command = ["adapt-pool", "--mixed-precision", str(ci_adaptation), str(other), "--out", str(tmp_path / "precisions")]
    assert main(command) == 0
    assert json.loads((tmp_path / "precisions" / "results.json").read_text())["bf16"] == [False, True]
    assert "float32 and bfloat16 (pooled runs)" in (tmp_path / "precisions" / "tables.md").read_text()
    capsys.readouterr()
    record["budget"]["learning_rate"] = 1.0
    (other / "results.json").write_text(json.dumps(record))
    assert main(["adapt-pool", str(ci_adaptation), str(other), "--out", str(tmp_path / "mixed")]) == 1
    err = capsys.readouterr().err
    assert "holds another adaptation" in err and "budget learning_rate" in err and len(err.strip().splitlines()) == 1
    assert main(["adapt-pool", str(ci_adaptation), "--out", str(tmp_path / "alone")]) == 1
    assert "at least two" in capsys.readouterr().err


def test_the_report_gives_one_seed_no_spread_and_says_why_a_query_log_has_no_twin(ci_adaptation):
    from hf_kd.adapt.report import write_adaptation_report

    results = json.loads((ci_adaptation / "results.json").read_text())
    assert results["budget"]["seeds"] == [42]
    tables = write_adaptation_report(results)
    teacher = next(line for line in results["evaluation"]["summary"] if line["setting"] == "teacher")
    assert f"| {teacher['ndcg@10']:.3f} (one seed) |" in tables and "± 0.000" not in tables
    assert "No no-teacher twin" not in tables  # pseudo-queries have their source documents
    log = {**results, "queries": {k: v for k, v in results["queries"].items() if k != "method"}}
    assert "No no-teacher twin: it learns each query's source document" in write_adaptation_report(log)
    teacher["comparisons"]["start"]["p"] = 1e-5
    assert f"{teacher['comparisons']['start']['difference']:+.3f}, p<0.001" in write_adaptation_report(results)


def test_the_report_says_whether_the_teacher_is_stronger_than_the_start(ci_adaptation):
    from hf_kd.adapt.report import write_adaptation_report
    from hf_kd.evaluation.significance import paired_test

    results = json.loads((ci_adaptation / "results.json").read_text())
    evaluation = results["evaluation"]
    start = evaluation["per_query_ndcg@10"]["start"]["dense"]
    queries = sorted(start)
    # a teacher up to 0.2 above the start on every query but one is stronger; the start's own ranking is not
    stronger = {q: min(1.0, start[q] + 0.2) if i else start[q] for i, q in enumerate(queries)}
    difference, p, _ = paired_test(stronger, start)
    assert difference > 0 and p < 0.05
    evaluation["per_query_ndcg@10"]["teacher (BM25 + start)"]["dense"] = stronger
    tables = write_adaptation_report(results)
    assert f"({difference:+.3f}, p" in tables and "the headroom the students learn from." in tables
    evaluation["per_query_ndcg@10"]["teacher (BM25 + start)"]["dense"] = dict(start)
    tables = write_adaptation_report(results)
    assert "(+0.000, p=1.000)" in tables
    assert "**the teacher is not measurably stronger than the students' start on this corpus**" in tables


def test_a_query_log_is_used_as_it_is_and_evaluation_queries_are_kept_out(tmp_path, ci_data, scifact_small):
    log = tmp_path / "log.tsv"
    test_queries = list(scifact_small.queries.items())
    train = read_beir(ci_data / "scifact-small", split="train").queries
    rows = list(train.items())[:12] + test_queries[:3]  # three evaluation queries leaked into the log
    log.write_text("".join(f"{q}\t{t}\n" for q, t in rows))
    out = tmp_path / "log-run"
    code = main(
        [
            "adapt",
            "--corpus",
            str(ci_data / "scifact-small"),
            "--queries",
            str(log),
            "--budget",
            "ci",
            "--set",
            "settings=[teacher]",
            "--set",
            "pair_selection=disagreement",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["queries"]["given"] == 15 and results["queries"]["dropped_evaluation_queries"] == 3
    assert results["queries"]["queries"] == 12 and not (out / "twin_triples.parquet").exists()
    assert {line["setting"] for line in results["evaluation"]["summary"]} == {"teacher"}
    # 4 x 2 pairs of each query labelled, the 2 farthest from the start's own margins trained on
    assert results["pairs"]["pairs"] == 12 * 8 and results["pairs"]["trained"] == 12 * 2
    scores = ScoreDataset.open(out / "teacher_scores")
    assert scores.num_rows == 24
    assert scores.provenance.parameters["pair_selection"] == {
        "method": "disagreement",
        "pairs_labelled": 96,
        "kept": 24,
    }
    assert "the 24 farthest from the start's own margins kept" in (out / "tables.md").read_text()


def test_a_killed_student_resumes_from_its_last_checkpoint(tmp_path, ci_data):
    import shutil

    command = ["adapt", "--corpus", str(ci_data / "scifact-small"), "--budget", "ci", "--out", str(tmp_path / "run")]
    command += ["--set", "settings=[teacher]", "--set", "max_documents=30"]
    assert main(command) == 0
    student = tmp_path / "run" / "students" / "bert_dot-teacher-s42"
    first = json.loads((student / "train_summary.json").read_text())
    assert first["global_step"] == 6 and first["resumed_from_checkpoint"] is None
    # as if the job was killed after the checkpoint of step 3: only it and the run's fingerprint are left
    for path in student.iterdir():
        if path.name not in ("checkpoint-3", "run_fingerprint.json"):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    shutil.rmtree(tmp_path / "run" / "evaluation" / "bert_dot-teacher-s42")
    assert main(command) == 0
    resumed = json.loads((student / "train_summary.json").read_text())
    assert resumed["global_step"] == 6 and resumed["steps_this_run"] == 3
    assert resumed["resumed_from_checkpoint"].endswith("checkpoint-3")
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert [p["step"] for p in results["evaluation"]["learning_curve"] if p["retrieval"] == "dense"] == [0, 3, 6]


def test_a_teacher_model_labels_as_the_same_model_inside_the_default_teacher(tmp_path, ci_data, minilm_path, capsys):
    # all-MiniLM-L6-v2 given as --teacher-model: encoded by sentence-transformers, fused with BM25, it must label
    # every pair and rank the corpus as the default teacher (BM25 + the start, encoded by hf-kd) does
    command = ["adapt", "--corpus", str(ci_data / "scifact-small"), "--budget", "ci"]
    command += ["--set", "settings=[teacher]", "--set", "max_documents=30", "--set", "checkpoint_every=null"]
    command += ["--set", "bf16=false"]  # the teacher model's vectors in float32, as the start's are
    assert main([*command, "--out", str(tmp_path / "start")]) == 0
    assert main([*command, "--teacher-model", minilm_path, "--out", str(tmp_path / "model")]) == 0
    default, given = (ScoreDataset.open(tmp_path / name / "teacher_scores") for name in ("start", "model"))
    assert given.teachers == ["bm25", "teacher_model", "minilm"]
    assert given.provenance.parameters["teacher"] == "bm25+model"
    assert given.provenance.parameters["rescale_to"] == "teacher_model"
    for column in ("pos_score", "neg_score", "pos_score_minilm"):
        np.testing.assert_allclose(given.table().column(column), default.table().column(column), atol=1e-4)
    table = given.table()
    np.testing.assert_allclose(table.column("pos_score_teacher_model"), table.column("pos_score_minilm"), atol=1e-4)
    results = {name: json.loads((tmp_path / name / "results.json").read_text()) for name in ("start", "model")}
    row = results["model"]["evaluation"]["teacher_row"]
    assert row == f"teacher (BM25 + {Path(minilm_path).name})" and results["start"]["evaluation"]["teacher_row"] == (
        "teacher (BM25 + start)"
    )
    measured = [results[name]["evaluation"]["per_query_ndcg@10"] for name in ("start", "model")]
    start_row, model_row = measured[0]["teacher (BM25 + start)"]["dense"], measured[1][row]["dense"]
    assert start_row.keys() == model_row.keys()
    assert max(abs(start_row[q] - model_row[q]) for q in start_row) < 1e-6
    # the teacher model on its own ranks as the start does (here they are one model)
    alone = measured[1][f"teacher ({Path(minilm_path).name}) alone"]["dense"]
    start = measured[0]["start"]["dense"]
    assert max(abs(alone[q] - start[q]) for q in start) < 1e-6
    tables = (tmp_path / "model" / "tables.md").read_text()
    assert f"- teacher: BM25 + {Path(minilm_path).name} ({minilm_path})" in tables
    assert f"adapted (Margin-MSE from BM25 + {Path(minilm_path).name})" in tables
    # a teacher model that is not a member of the teacher, or a member without its model, is refused in one line
    capsys.readouterr()
    unused = ["--teacher-model", minilm_path, "--set", "teacher=bm25+start"]
    assert main([*command, *unused, "--out", str(tmp_path / "x")]) == 1
    assert f"--teacher-model {minilm_path} is not a member of teacher='bm25+start'" in capsys.readouterr().err
    assert main([*command, "--set", "teacher=model", "--out", str(tmp_path / "y")]) == 1
    assert "teacher='model' has the member 'model': pass --teacher-model" in capsys.readouterr().err


def test_teacher_members_are_checked_and_one_member_ranks_alone():
    assert teacher_members("bm25+start") == ["bm25", "start"]
    assert teacher_members("start+model") == ["start", "model"]
    with pytest.raises(ValueError, match="must be a dense model \\(start or model\\), e.g. bm25\\+model"):
        teacher_members("model+bm25")
    with pytest.raises(ValueError, match="teacher='start' is the self control"):
        teacher_members("start")
    for bad in ("bm25+bm25", "bm25+start+model", "cross"):
        with pytest.raises(ValueError, match="each one of bm25, start, model"):
            teacher_members(bad)
    with pytest.raises(ValueError, match="must be a dense model"):
        get_adapt_budget("ci", {"teacher": "bm25"})
    assert get_adapt_budget("ci", {"bf16": False}).bf16 == "false"  # --set bf16=false, as YAML reads it

    class Scores:
        def __init__(self, matrix):
            self.matrix = np.array(matrix)

        def all_scores(self, queries):
            return self.matrix

    first, second = Scores([[3.0, 1.0, 0.0]]), Scores([[0.0, 0.5, 1.0]])
    alone, ranked = corpus_ranking([Member("m", vectors=second)], {"q": "a query"}, depth=1)
    assert alone.tolist() == [[0.0, 0.5, 1.0]] and ranked[0].tolist() == [0, 1, 2]
    fused, ranked = corpus_ranking([Member("a", vectors=first), Member("b", vectors=second)], {"q": "a query"}, depth=1)
    # the union of both top-1 (rows 0 and 2); z-scores over it: first (1, -1), second (-1, 1), in second's units
    assert ranked[0].tolist() == [0, 2]
    np.testing.assert_allclose(fused[0, [0, 2]], [0.5, 0.5])


def test_disagreement_keeps_each_querys_pairs_farthest_from_the_start():
    queries = ["a", "b", "a", "a", "b", "b", "a"]
    teacher = np.array([1.0, 0.5, -0.2, 0.3, 0.0, 2.0, 0.1])
    start = np.array([0.9, -0.5, 0.4, 0.3, 0.1, 0.0, -0.9])
    # squared differences: a: rows 0 0.01, 2 0.36, 3 0.0, 6 1.0; b: rows 1 1.0, 4 0.01, 5 4.0
    assert select_disagreeing_pairs(queries, teacher, start, 2).tolist() == [1, 2, 5, 6]
    assert select_disagreeing_pairs(queries, teacher, start, 3).tolist() == [0, 1, 2, 4, 5, 6]
    assert select_disagreeing_pairs(queries, teacher, start, 9).tolist() == list(range(7))
    with pytest.raises(ValueError, match="7 queries, 6 teacher margins"):
        select_disagreeing_pairs(queries, teacher[:6], start, 2)


def test_bad_input_fails_in_one_line(tmp_path, ci_data, capsys):
    empty = tmp_path / "empty.tsv"
    empty.write_text("")
    assert main(["adapt", "--corpus", str(empty), "--budget", "ci", "--out", str(tmp_path / "a")]) == 1
    assert "empty.tsv: the corpus holds no document" in capsys.readouterr().err
    duplicate = tmp_path / "duplicate.tsv"
    duplicate.write_text("d1\tsome text here\nd1\tother text\n")
    assert main(["adapt", "--corpus", str(duplicate), "--budget", "ci", "--out", str(tmp_path / "b")]) == 1
    assert "duplicate.tsv, line 2: duplicate pid 'd1'" in capsys.readouterr().err
    assert (
        main(
            [
                "adapt",
                "--corpus",
                str(ci_data / "scifact-small"),
                "--eval-queries",
                str(empty),
                "--budget",
                "ci",
                "--out",
                str(tmp_path / "c"),
            ]
        )
        == 1
    )
    assert "pass both --eval-queries and --qrels" in capsys.readouterr().err
