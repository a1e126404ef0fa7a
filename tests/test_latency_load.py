"""A latency records the machine's load around its timing, and the efficiency note warns when other work ran."""

from __future__ import annotations

import os

import pytest
import torch
from transformers import BertConfig

from hf_kd import BertDotConfig, BertDotModel
from hf_kd.evaluation.latency import LatencyResult, load_average, measure_rerank_latency, timed_while_busy
from hf_kd.evaluation.report import machine_load_note


@pytest.fixture(scope="module", autouse=True)
def single_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_dot() -> BertDotModel:
    torch.manual_seed(0)
    backbone = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    return BertDotModel(BertDotConfig(backbone_config=backbone))


def test_the_load_before_and_after_the_timing_is_recorded(tokenizer, monkeypatch):
    loads = iter([(0.5, 0.4, 0.3), (2.5, 1.0, 0.5)])  # before, after: the second exceeds the one thread used
    monkeypatch.setattr(os, "getloadavg", lambda: next(loads))
    result = measure_rerank_latency(
        tiny_dot(), tokenizer, ["a cat", "a dog"], [["cats purr", "dogs bark"]] * 2, show_progress=False
    )
    assert result.cpu_threads == 1
    assert result.load_average_before == [0.5, 0.4, 0.3] and result.load_average_after == [2.5, 1.0, 0.5]
    assert timed_while_busy(result) is True and timed_while_busy(result.to_dict()) is True
    assert next(loads, None) is None  # read exactly twice, around the timing


def test_busy_means_a_load_above_the_threads_used():
    def result(before, after, threads=2) -> dict:
        row = LatencyResult("TK", "tk", 5, 100, 8.0, 9.0, 8.2, 2**20, 0.0, "cpu").to_dict()
        return {**row, "cpu_threads": threads, "load_average_before": before, "load_average_after": after}

    assert timed_while_busy(result([1.2, 1, 1], [2.0, 1, 1])) is False  # its own two threads: load 2
    assert timed_while_busy(result([2.3, 1, 1], [1.9, 1, 1])) is True  # other work ran before the end
    assert timed_while_busy(result(None, [3.0, 1, 1])) is True
    assert timed_while_busy(result(None, None)) is None  # a platform without load averages
    old = LatencyResult("TK", "tk", 5, 100, 8.0, 9.0, 8.2, 2**20, 0.0, "cpu")  # written before loads were recorded
    assert timed_while_busy(old) is None and machine_load_note([old]) == ""
    note = machine_load_note([result([0.2, 1, 1], [1.5, 1, 1]), {**result([1.0, 1, 1], [4.0, 1, 1]), "name": "CAT"}])
    assert note.startswith(
        "**Warning: timed on a busy machine.** The load average exceeded the CPU threads used while CAT was timed: "
        "other work ran at the same time, so its latency is too high. On an idle machine, measure again."
    )
    assert note.endswith(
        "Machine load (1-minute load average before / after each timing, against the CPU threads used): "
        "TK 0.20 / 1.50 on 2 threads; CAT 1.00 / 4.00 on 2 threads."
    )
    assert "Warning" not in machine_load_note([result([0.2, 1, 1], [1.5, 1, 1])])


def test_no_load_average_on_a_platform_without_one(monkeypatch):
    def unavailable():
        raise OSError("no load average")

    monkeypatch.setattr(os, "getloadavg", unavailable)
    assert load_average() is None
    monkeypatch.delattr(os, "getloadavg")
    assert load_average() is None
