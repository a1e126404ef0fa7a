"""Paired significance (`hf-kd compare`): the tests by hand, and two real DL20 runs through the command."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from scipy.stats import t as student_t
from scipy.stats import ttest_rel

from hf_kd.cli import main
from hf_kd.data.ir_files import read_qrels, read_run
from hf_kd.evaluation.metrics import evaluate_run
from hf_kd.evaluation.reports import EvaluationReport
from hf_kd.evaluation.significance import adjust_p_values, compare_reports, paired_test, read_compared_reports

A = {"q1": 0.5, "q2": 0.7, "q3": 0.9, "only-a": 1.0}
B = {"q1": 0.4, "q2": 0.7, "q3": 0.6, "only-b": 0.0}
DIFFERENCES = [0.1, 0.0, 0.3]  # over the common queries only


def test_paired_t_test_by_hand():
    mean = sum(DIFFERENCES) / 3
    sd = (sum((d - mean) ** 2 for d in DIFFERENCES) / 2) ** 0.5
    t = mean / (sd / 3**0.5)
    difference, p, n = paired_test(A, B)
    assert n == 3 and difference == pytest.approx(mean)
    assert p == pytest.approx(2 * student_t.sf(t, df=2))
    assert paired_test(A, A) == (0.0, 1.0, 4)


def test_paired_permutation_test_enumerates_every_sign_pattern():
    observed = abs(np.mean(DIFFERENCES))
    means = [
        abs(np.mean([s * d for s, d in zip(signs, DIFFERENCES)])) for signs in itertools.product((1, -1), repeat=3)
    ]
    expected = sum(m >= observed - 1e-12 for m in means) / len(means)  # 4 of 8: the zero difference flips to itself
    difference, p, n = paired_test(A, B, test="permutation")
    assert (n, p) == (3, pytest.approx(expected)) and expected == 0.5
    with pytest.raises(ValueError, match="unknown test 'wilcoxon'"):
        paired_test(A, B, test="wilcoxon")


def test_holm_and_bonferroni_by_hand():
    p = [0.01, 0.04, 0.03]
    # Holm: sorted 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> kept monotone at 0.06
    assert adjust_p_values(p, "holm") == pytest.approx([0.03, 0.06, 0.06])
    assert adjust_p_values(p, "bonferroni") == pytest.approx([0.03, 0.12, 0.09])
    assert adjust_p_values([0.6, 0.9], "bonferroni") == [1.0, 1.0]
    assert adjust_p_values(p, "none") == p


def _report(shared_data, run_name: str, out) -> str:
    dl20 = shared_data / "msmarco-dl20"
    qrels = read_qrels(dl20 / "qrels.txt")
    result = evaluate_run(read_run(dl20 / "runs" / run_name), qrels, rel_threshold=2)
    report = EvaluationReport.from_evaluate_run(
        result, name=run_name.split(".")[0], dataset="msmarco-dl20", retrieval="rerank", run=run_name
    )
    folder = out / run_name.split(".")[0]
    folder.mkdir()
    report.write(folder / "metrics.json")
    return str(folder)


def test_compare_two_real_runs_matches_scipy_over_the_per_query_values(shared_data, tmp_path, capsys):
    bm25 = _report(shared_data, "bm25.top100.trec", tmp_path)
    splade = _report(shared_data, "splade_p_p_ensemble_distil.top100.trec", tmp_path)
    rm3 = _report(shared_data, "bm25_rm3.top100.trec", tmp_path)
    out, plot = tmp_path / "compare.json", tmp_path / "compare.png"
    args = ["compare", bm25, splade, f"{rm3}/metrics.json", "--out", str(out), "--plot", str(plot)]
    assert main([*args, "--correction", "holm"]) == 0

    printed = capsys.readouterr().out
    written = json.loads(out.read_text())
    splade_row, rm3_row = written["comparisons"]
    base = {q: v["nDCG@10"] for q, v in EvaluationReport.read(f"{bm25}/metrics.json").per_query.items()}
    for row, folder in ((splade_row, splade), (rm3_row, rm3)):
        other = {q: v["nDCG@10"] for q, v in EvaluationReport.read(f"{folder}/metrics.json").per_query.items()}
        queries = sorted(base)
        differences = np.array([other[q] - base[q] for q in queries])
        assert row["num_queries"] == len(queries) == 54
        assert row["difference"] == pytest.approx(differences.mean())
        assert row["p_value"] == pytest.approx(
            ttest_rel([other[q] for q in queries], [base[q] for q in queries]).pvalue
        )
        half = student_t.ppf(0.975, 53) * differences.std(ddof=1) / np.sqrt(54)
        assert (row["ci_low"], row["ci_high"]) == (
            pytest.approx(differences.mean() - half),
            pytest.approx(differences.mean() + half),
        )
        assert row["differences"] == pytest.approx(dict(zip(queries, differences)))
    # SPLADE++ is far above BM25 on DL20 (0.72 against 0.49 nDCG@10): real even after Holm
    assert splade_row["candidate_mean"] > splade_row["baseline_mean"] + 0.15 and splade_row["adjusted_p_value"] < 1e-3
    smaller, larger = sorted((splade_row, rm3_row), key=lambda r: r["p_value"])
    assert smaller["adjusted_p_value"] == pytest.approx(2 * smaller["p_value"])
    assert larger["adjusted_p_value"] == pytest.approx(max(smaller["adjusted_p_value"], larger["p_value"]))
    assert f"| splade_p_p_ensemble_distil | msmarco-dl20 | 54 | {splade_row['baseline_mean']:.3f}" in printed
    assert "real (p < 0.05)" in printed and "p (holm)" in printed
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_errors_name_the_file_and_what_is_missing(shared_data, tmp_path, capsys):
    bm25 = _report(shared_data, "bm25.top100.trec", tmp_path)
    report = EvaluationReport.read(f"{bm25}/metrics.json")
    (tmp_path / "summary").mkdir()
    EvaluationReport(**{**report.__dict__, "per_query": None, "name": "summary"}).write(
        tmp_path / "summary" / "metrics.json"
    )
    assert main(["compare", bm25, str(tmp_path / "summary")]) == 1
    assert "summary: the report of msmarco-dl20 has no per-query values" in capsys.readouterr().err
    (tmp_path / "other").mkdir()
    EvaluationReport(**{**report.__dict__, "dataset": "scifact", "split": "test", "name": "other"}).write(
        tmp_path / "other" / "metrics.json"
    )
    assert main(["compare", bm25, str(tmp_path / "other")]) == 1
    assert (
        "other: no evaluation set in common with bm25 (scifact (test) against msmarco-dl20)" in capsys.readouterr().err
    )
    assert main(["compare", bm25, str(tmp_path / "absent")]) == 1
    assert "absent: no such metrics file" in capsys.readouterr().err


def test_compare_reports_over_the_reproductions_two_evaluation_sets():
    def reports(values: dict[str, dict[str, float]]) -> list[EvaluationReport]:
        return [
            EvaluationReport(metrics={"nDCG@10": float(np.mean(list(v.values())))}, dataset=d, per_query={
                q: {"nDCG@10": x} for q, x in v.items()
            })
            for d, v in values.items()
        ]  # fmt: skip

    base = reports({"dl20-dev": A, "scifact-test": {"s1": 0.2, "s2": 0.4}})
    other = reports({"scifact-test": {"s1": 0.3, "s2": 0.4}, "dl20-dev": B})
    first, second = compare_reports(("base", base), [("other", other)])
    assert (first.evaluation, second.evaluation) == ("dl20-dev", "scifact-test")
    assert first.difference == pytest.approx(-np.mean(DIFFERENCES)) and first.num_queries == 3
    assert second.difference == pytest.approx(0.05) and second.differences == pytest.approx({"s1": 0.1, "s2": 0.0})


def test_reports_of_the_same_name_go_by_their_paths(shared_data, tmp_path):
    first = _report(shared_data, "bm25.top100.trec", tmp_path)
    (tmp_path / "again").mkdir()
    second = _report(shared_data, "bm25.top100.trec", tmp_path / "again")
    rm3 = _report(shared_data, "bm25_rm3.top100.trec", tmp_path)
    named = read_compared_reports([first, second, f"{rm3}/metrics.json"])
    assert [name for name, _ in named] == [first, second, "bm25_rm3"]
