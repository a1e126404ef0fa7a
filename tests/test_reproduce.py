"""`hf-kd reproduce --budget ci`: every stage on the ci cut, every cell filled, and the same numbers on a rerun."""

from __future__ import annotations

import json

import pytest
from transformers import AutoModel

import hf_kd
from hf_kd.cli import main
from hf_kd.reproduce import get_budget
from hf_kd.reproduce.data import dl20_split


def test_dl20_split_is_fixed_and_disjoint():
    ids = ["1030303", "23849", "42255", "1037496", "47210"]
    dev, train = dl20_split(ids)
    assert dev == ["23849", "47210", "1037496"] and train == ["42255", "1030303"]
    assert not set(dev) & set(train)


def test_bad_budget_settings_are_rejected():
    with pytest.raises(ValueError, match="unknown budget"):
        get_budget("huge")
    with pytest.raises(ValueError, match="unknown student"):
        get_budget("ci", {"students": ["bert_dott"]})
    with pytest.raises(ValueError, match="T2 setting needs at least two teachers"):
        get_budget("ci", {"teacher_layers": [2]})
    with pytest.raises(ValueError, match="unknown budget settings"):
        get_budget("ci", {"epochs": 3})


@pytest.fixture(scope="module")
def ci_reproduction(tmp_path_factory, shared_data):
    out = tmp_path_factory.mktemp("reproduce") / "run"
    assert main(["reproduce", "--budget", "ci", "--data-dir", str(shared_data), "--out", str(out)]) == 0
    return out


def test_every_stage_runs_and_every_cell_is_filled(ci_reproduction):
    out = ci_reproduction
    results = json.loads((out / "results.json").read_text())
    metrics = results["metrics"]
    budget = results["budget"]
    expected = [f"{a}-{s}" for a in budget["students"] for s in budget["settings"]]
    expected += [f"bert_dot-T2-{loss}" for loss in budget["loss_comparison"]]
    expected += ["BM25", "teacher_1", "teacher_2", "T2 (teacher mean)"]
    for name in expected:
        for dataset in ("dl20-dev", "scifact-test"):
            assert 0.0 <= metrics[name][dataset]["nDCG@10"] <= 1.0, (name, dataset)
            assert 0.0 <= metrics[name][dataset]["MRR@10"] <= 1.0, (name, dataset)
    # the dev queries are never trained on, and BM25 on them matches its known order of magnitude
    assert results["data"]["dl20_dev"]["num_queries"] == 5
    assert metrics["BM25"]["dl20-dev"]["nDCG@10"] > 0.2
    assert {row["name"] for row in results["latency"]} >= {"BERT_DOT", "ColBERT", "PreTT", "TK"}
    assert set(results["environment"]) >= {"torch", "transformers", "hf_kd", "device"}
    tables = (out / "tables.md").read_text()
    assert "## Students and teachers" in tables and "## Loss comparison" in tables and "## Efficiency" in tables
    assert (out / "efficiency.png").stat().st_size > 1000
    # checkpoints load with AutoModel and carry the metrics their model card needs
    student = out / "students" / "colbert-T2"
    assert isinstance(AutoModel.from_pretrained(student), hf_kd.ColBERTModel)
    assert json.loads((student / "metrics.json").read_text())["metrics"]["nDCG@10"] >= 0.0


def test_a_rerun_with_the_same_seed_gives_the_same_numbers(ci_reproduction, tmp_path, shared_data):
    first = json.loads((ci_reproduction / "results.json").read_text())["metrics"]
    out = tmp_path / "again"
    args = ["reproduce", "--budget", "ci", "--data-dir", str(shared_data), "--out", str(out)]
    assert main([*args, "--set", "students=[bert_dot, tk]", "--set", "loss_comparison=[]"]) == 0
    second = json.loads((out / "results.json").read_text())["metrics"]
    for name in ["teacher_1", "teacher_2", "bert_dot-none", "bert_dot-T1", "bert_dot-T2", "tk-T2"]:
        for dataset in ("dl20-dev", "scifact-test"):
            assert second[name][dataset] == pytest.approx(first[name][dataset], abs=1e-6), (name, dataset)
