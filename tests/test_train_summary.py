"""`train_summary.json` has one owner, `TrainSummary`: what it writes it reads back, older and partial files load."""

from __future__ import annotations

import json

import pytest

from hf_kd.training.summary import SUMMARY_FILE, TrainSummary


def test_a_summary_round_trips_through_its_folder(tmp_path):
    summary = TrainSummary(
        architecture="bert_dot",
        loss="margin_mse",
        loss_config={"scale": 1.0},
        global_step=100,
        examples_seen=1600,
        train_loss=0.0123,
        log_history=[{"loss": 0.02, "step": 10}],
        arguments={"hf_kd": {"loss": "margin_mse"}, "training": {"learning_rate": 2e-5}},
    )
    path = summary.save(tmp_path)
    assert path == tmp_path / SUMMARY_FILE
    assert json.loads(path.read_text())["examples_seen"] == 1600
    assert TrainSummary.load(tmp_path) == summary


def test_no_finished_run_no_summary(tmp_path):
    assert TrainSummary.load(tmp_path) is None


def test_partial_and_newer_summaries_load_with_defaults(tmp_path):
    (tmp_path / SUMMARY_FILE).write_text(json.dumps({"loss": "ranknet", "global_step": 3, "a_later_field": 1}))
    summary = TrainSummary.load(tmp_path)
    assert (summary.loss, summary.global_step, summary.examples_seen, summary.loss_config) == ("ranknet", 3, None, {})


@pytest.mark.parametrize(
    ("text", "message"),
    [('{\n  "loss": ', r"train_summary.json:2:\d+: invalid JSON"), ("[1, 2]", "expected a JSON object, got list")],
)
def test_a_broken_summary_names_its_file(tmp_path, text, message):
    (tmp_path / SUMMARY_FILE).write_text(text)
    with pytest.raises(ValueError, match=message):
        TrainSummary.load(tmp_path)
