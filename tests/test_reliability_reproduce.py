"""`hf-kd reproduce` continues where it stopped: each stage is skipped when its result file exists."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from hf_kd.evaluation.rerank_set import RerankSet
from hf_kd.jobs import JobLockedError, output_lock
from hf_kd.reproduce.budgets import get_budget
from hf_kd.reproduce.data import prepare_data
from hf_kd.reproduce.evaluation import evaluate_and_keep
from hf_kd.reproduce.recipe import _check_same_budget, run_reproduction
from hf_kd.reproduce.stages import make_backbone
from hf_kd.training.stage import train_model


def test_finished_stages_are_read_back_not_run_again(shared_data, tmp_path):
    budget = get_budget("ci")
    data = prepare_data(budget, shared_data, tmp_path / "data")
    # data.json marks the stage done: the source data is not read again
    assert prepare_data(budget, tmp_path / "no-such-data", tmp_path / "data") == data

    backbone = make_backbone(budget, 1, tmp_path / "backbone", seed=0)
    weights = tmp_path / "backbone" / "model.safetensors"
    written = weights.stat().st_mtime_ns
    assert make_backbone(budget, 1, tmp_path / "backbone", seed=1) == backbone
    assert weights.stat().st_mtime_ns == written

    student = tmp_path / "student"
    student.mkdir()
    (student / "train_summary.json").write_text(json.dumps({"global_step": 3}), encoding="utf-8")
    summary = train_model(
        budget, student, architecture="bert_dot", backbone="no-such-backbone", loss="margin_mse",
        train_file="no-such-file", steps=3, seed=0, learning_rate=1e-3,
    )  # fmt: skip
    assert summary.global_step == 3 and summary.examples_seen is None


def test_an_evaluation_measured_before_is_not_measured_again(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    record = {"name": "model", "metrics": {"dl20-dev": {"nDCG@10": 0.5}}, "per_query_ndcg@10": {}}
    (folder / "metrics.json").write_text(json.dumps(record), encoding="utf-8")
    (folder / "runs.json").write_text(json.dumps({"dl20-dev": {}}), encoding="utf-8")

    dev = RerankSet(queries={}, collection={}, run={}, qrels={}, name="dl20-dev")

    def rerank_one(data):
        raise AssertionError("re-ranked again")

    assert evaluate_and_keep("model", [dev], tmp_path, rerank_one) == {"dl20-dev": {"nDCG@10": 0.5}}


def test_the_data_record_is_read_again_from_another_working_directory(shared_data, tmp_path, monkeypatch):
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    monkeypatch.chdir(tmp_path / "first")
    relative_shared = Path(os.path.relpath(shared_data, tmp_path / "first"))
    data = prepare_data(get_budget("ci"), relative_shared, Path("out"))
    monkeypatch.chdir(tmp_path / "second")
    again = prepare_data(get_budget("ci"), Path("no-such-data"), tmp_path / "first" / "out")
    assert again == data
    for path in (again.train_triples, again.dl20_dev.run, again.dl20_dev.queries, again.scifact_test.collection):
        assert Path(path).is_absolute() and Path(path).is_file()


def test_a_second_reproduction_into_the_same_folder_stops_naming_the_first(shared_data, tmp_path):
    out = tmp_path / "reproduce"
    with output_lock(out):
        with pytest.raises(JobLockedError, match=rf"{out} is being written by pid {os.getpid()} on "):
            run_reproduction(get_budget("ci"), shared_data, out)
    assert not (out / "data").exists()  # nothing was started


def test_a_reproduction_of_another_budget_in_the_same_folder_is_refused(shared_data, tmp_path):
    out = tmp_path / "reproduce"
    out.mkdir()
    _check_same_budget(get_budget("ci"), out)
    _check_same_budget(get_budget("ci", {"teacher_eval_sets": ["dl20-dev"]}), out)  # evaluation sets only add
    with pytest.raises(ValueError, match=r"holds a reproduction of another budget \(student_steps: 8 -> 9\)"):
        run_reproduction(get_budget("ci", {"student_steps": 9}), shared_data, out)
    assert not (out / "data").exists()


def test_a_folder_written_before_a_budget_setting_existed_is_read_back_at_its_default(tmp_path):
    out = tmp_path / "reproduce"
    out.mkdir()
    older = get_budget("ci").to_dict()
    del older["student_learning_rates"], older["teacher_eval_sets"]
    (out / "budget.json").write_text(json.dumps(older), encoding="utf-8")
    _check_same_budget(get_budget("ci", {"student_learning_rates": {}}), out)  # the default: same computation
    (out / "budget.json").write_text(json.dumps(older), encoding="utf-8")
    with pytest.raises(ValueError, match=r"student_learning_rates.bert_cat: \(none\) -> 0.002"):
        _check_same_budget(get_budget("ci"), out)
