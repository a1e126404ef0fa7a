"""Files and folders the jobs write get the modes a plain `open()` / `mkdir` gives under the user's umask: the atomic
writes (temporary file or staging folder, then a rename) must not keep `tempfile`'s private 0o600 / 0o700, and a
saved checkpoint's weights (written by safetensors through a private temporary file) must not either."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

import pytest
import torch
from transformers import BertConfig

from hf_kd import BertDotConfig, BertDotModel
from hf_kd.cli import main
from hf_kd.data.ir_files import write_run
from hf_kd.data.texts import TextStore
from hf_kd.evaluation.report import EfficiencyRow, write_efficiency_report
from hf_kd.files import (
    atomic_folder,
    atomic_path,
    create_temp_file,
    create_temp_folder,
    write_json_atomic,
    write_text_atomic,
)
from hf_kd.jobs import open_work_folder
from hf_kd.models.sentence_transformers_layout import write_json_atomic as layout_write_json_atomic

MASKS = [0o022, 0o077, 0o002]


@pytest.fixture(scope="module", autouse=True)
def single_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@contextlib.contextmanager
def umask(mask: int):
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def current_umask() -> int:
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def modes(folder: Path) -> dict[str, str]:
    """Relative path (folders end with `/`) -> octal permission bits of everything under `folder`."""
    found = {}
    for path in sorted(folder.rglob("*")):
        name = str(path.relative_to(folder)) + ("/" if path.is_dir() else "")
        found[name] = oct(stat.S_IMODE(path.lstat().st_mode))
    return found


def expected_modes(found: dict[str, str], mask: int) -> dict[str, str]:
    return {name: oct((0o777 if name.endswith("/") else 0o666) & ~mask) for name in found}


def tiny_dot() -> BertDotModel:
    torch.manual_seed(0)
    backbone = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    return BertDotModel(BertDotConfig(backbone_config=backbone))


@pytest.mark.parametrize("mask", MASKS, ids=oct)
def test_atomic_writes_honour_the_umask(tmp_path, mask):
    out = tmp_path / "out"
    out.mkdir()
    with umask(mask):
        write_text_atomic(out / "tables.md", "| a |\n")
        write_json_atomic(out / "results.json", {"a": 1})
        with atomic_path(out / "efficiency.bin") as tmp:
            tmp.write_bytes(b"\0")  # a writer that opens the temporary file it is given
        with atomic_path(out / "opened.txt") as tmp, open(tmp, "w", encoding="utf-8") as f:
            f.write("x")
        with atomic_folder(out / "dataset") as staging:
            (staging / "data").mkdir()
            write_json_atomic(staging / "data" / "state.json", {})
        with atomic_folder(out / "replaced") as staging:
            (staging / "old.txt").write_text("old", encoding="utf-8")
        with atomic_folder(out / "replaced") as staging:  # an existing folder is replaced by a new staging folder
            write_text_atomic(staging / "new.txt", "new")
        write_run({"q1": {"p1": 1.0, "p2": 0.5}}, out / "run.trec")
        layout_write_json_atomic(str(out / "1_Pooling" / "config.json"), {"pooling_mode_cls_token": True})
        open_work_folder(out / "work.partial", {"inputs": 1}, False, "test job", "inputs")
        (out / "scratch").mkdir()
        temporary_file, temporary_folder = create_temp_file(out / "scratch"), create_temp_folder(out / "scratch")
        tsv = out / "collection.tsv"
        tsv.write_text("p1\tsome text\np2\tother text\n", encoding="utf-8")
        TextStore.from_tsv(tsv, "collection", cache_dir=out / "cache")  # the Arrow cache of a TSV file
        assert current_umask() == mask  # read, never left changed
    assert temporary_file.stat().st_size == 0 and not any(temporary_folder.iterdir())
    found = modes(out)
    assert {
        "tables.md",
        "results.json",
        "efficiency.bin",
        "opened.txt",
        "dataset/",
        "dataset/data/state.json",
        "replaced/new.txt",
        "run.trec",
        "1_Pooling/config.json",
        "work.partial/",
        "work.partial/manifest.json",
    } <= set(found)
    assert "replaced/old.txt" not in found
    leftovers = [name for name in found if name.endswith(".tmp") or ".tmp-" in name or ".old-" in name]
    assert [name for name in leftovers if not name.startswith("scratch/")] == []
    assert len([name for name in found if name.startswith("cache/") and name.endswith(".arrow")]) == 1
    assert found == expected_modes(found, mask)


@pytest.mark.parametrize("mask", [0o022, 0o077], ids=oct)
def test_a_saved_checkpoint_honours_the_umask(tmp_path, tokenizer, mask):
    model = tiny_dot()
    folder = tmp_path / "tiny-dot"
    with umask(mask):
        model.save_pretrained(folder, tokenizer=tokenizer)
        model.save_pretrained(folder, tokenizer=tokenizer)  # saved again over itself: the replaced files too
    found = modes(folder)
    for name in ("model.safetensors", "config.json", "modules.json", "1_Pooling/", "1_Pooling/config.json"):
        assert name in found
    assert not [name for name in found if Path(name).name.startswith(".")]  # no temporary or probe file left
    assert found == expected_modes(found, mask)


def test_each_save_takes_the_umask_of_its_time(tmp_path, tokenizer):
    model = tiny_dot()
    with umask(0o077):
        model.save_pretrained(tmp_path / "private", tokenizer=tokenizer)
    with umask(0o022):
        model.save_pretrained(tmp_path / "shared", tokenizer=tokenizer)
    private, shared = modes(tmp_path / "private"), modes(tmp_path / "shared")
    assert private == expected_modes(private, 0o077) and shared == expected_modes(shared, 0o022)


def test_evaluation_outputs_honour_the_umask(tmp_path, ci_data, tokenizer, capsys):
    dl20 = ci_data / "msmarco-dl20"
    data = ["--queries", dl20 / "queries.tsv", "--collection", dl20 / "collection.tsv"]
    model_dir, evaluation, index = tmp_path / "tiny-dot", tmp_path / "eval", tmp_path / "index"
    with umask(0o022):
        tiny_dot().save_pretrained(model_dir, tokenizer=tokenizer)
        argv = ["evaluate", "--model", model_dir, *data, "--qrels", dl20 / "qrels.txt"]
        argv += ["--run", dl20 / "runs" / "bm25.top30.trec", "--out", evaluation, "--top-k", "3", "--device", "cpu"]
        assert main([str(arg) for arg in argv]) == 0
        argv = ["index", "--model", model_dir, "--collection", dl20 / "collection.tsv", "--out", index]
        assert main([str(arg) for arg in [*argv, "--shard-size", "5000", "--device", "cpu"]]) == 0
        row = EfficiencyRow(name="tiny-dot", median_ms=1.0, p90_ms=2.0, metrics={"nDCG@10": 0.5})
        paths = write_efficiency_report([row], tmp_path / "benchmark")
    capsys.readouterr()
    assert paths["plot"].is_file()
    found = modes(tmp_path)
    for name in (
        "tiny-dot/model.safetensors",
        "tiny-dot/hf_kd_evaluations.json",
        "eval/metrics.json",
        "eval/run.trec",
        "index/",
        "index/index.faiss",
        "index/ids.json",
        "index/index_build.json",
        "benchmark/efficiency.png",
        "benchmark/efficiency.json",
    ):
        assert name in found
    assert found == expected_modes(found, 0o022)
