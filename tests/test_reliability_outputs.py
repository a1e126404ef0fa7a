"""Conversion and index building are safe to kill and rerun: one job per output, outputs appear whole or not at all,
index encoding resumes only work of the same fingerprint."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from hf_kd.cli import main
from hf_kd.data import ScoreDataset, convert
from hf_kd.files import atomic_folder, remove_staging_leftovers

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def paper_text(ci_data, tmp_path_factory) -> Path:
    """Forty ci triples in the paper's text format."""
    lines = (ci_data / "msmarco-train-100.triples.tsv").read_text(encoding="utf-8").splitlines()[:40]
    path = tmp_path_factory.mktemp("inputs") / "scores.tsv"
    path.write_text("".join(f"{9 + i * 0.5}\t{-1 - i * 0.25}\t{line}\n" for i, line in enumerate(lines)))
    return path


def _error(capsys) -> str:
    return capsys.readouterr().err.splitlines()[-1]


def _stalled_job(tmp_path: Path, code: str) -> subprocess.Popen:
    """Runs `code` in another process and returns once it printed `stalled` (it then sleeps until killed)."""
    script = tmp_path / "stalled_job.py"
    script.write_text(textwrap.dedent(code))
    process = subprocess.Popen(
        [sys.executable, str(script)], cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    line = process.stdout.readline()
    if line != "stalled\n":
        process.kill()
        pytest.fail(f"the job ended before it stalled (printed {line!r})")
    return process


def _stalled_convert(tmp_path: Path, source: Path, out: Path, overwrite: bool = False) -> subprocess.Popen:
    """A conversion that stops (holding its lock) once its Parquet shards are written, before the rename."""
    return _stalled_job(
        tmp_path,
        f"""
        import time
        from hf_kd.data import convert, writers
        close = writers.ParquetShardWriter.close
        def stall(self):
            close(self)
            print("stalled", flush=True)
            time.sleep(600)
        writers.ParquetShardWriter.close = stall
        convert("paper-text", {str(source)!r}, {str(out)!r}, shard_rows=7, overwrite={overwrite})
        """,
    )


def _kill(process: subprocess.Popen) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


def test_convert_killed_before_its_rename_leaves_no_output_and_holds_off_a_second_job(
    paper_text, tmp_path, capsys
):  # fmt: skip
    out = tmp_path / "scores"
    job = _stalled_convert(tmp_path, paper_text, out)
    try:
        argv = ["data", "convert", "--format", "paper-text", str(paper_text), "--out", str(out)]
        assert main(argv) == 1
        error = _error(capsys)
        host = json.loads((tmp_path / "scores.lock.json").read_text(encoding="utf-8"))["host"]
        assert error.startswith(
            f"hf-kd data convert: error: {out} is being written by pid {job.pid} on {host} ('stalled_job.py', since "
        )
        assert error.endswith(f"; wait for that job to end or stop it (the lock is {out}.lock)")
        staging = [p.name for p in tmp_path.iterdir() if p.name.startswith(".scores.tmp-")]
        assert len(staging) == 1 and not out.exists()
    finally:
        _kill(job)
    assert not out.exists()

    report = convert("paper-text", paper_text, out, shard_rows=7)  # the rerun starts over and clears the leftover
    assert report.rows == 40
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".scores.")]
    fresh = convert("paper-text", paper_text, tmp_path / "fresh", shard_rows=7)
    assert fresh.rows == 40
    assert ScoreDataset.open(out).load().to_list() == ScoreDataset.open(tmp_path / "fresh").load().to_list()


def test_convert_with_overwrite_killed_keeps_the_previous_output(paper_text, tmp_path):
    out = tmp_path / "scores"
    previous = tmp_path / "previous.tsv"
    previous.write_text("".join(paper_text.read_text().splitlines(keepends=True)[:5]))
    convert("paper-text", previous, out)
    job = _stalled_convert(tmp_path, paper_text, out, overwrite=True)
    _kill(job)
    assert len(ScoreDataset.open(out).load()) == 5
    assert convert("paper-text", paper_text, out, overwrite=True).rows == 40
    assert len(ScoreDataset.open(out).load()) == 40
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".scores.")]


def test_atomic_folder_replaces_whole_or_not_at_all(tmp_path):
    out = tmp_path / "out"
    with atomic_folder(out) as staging:
        (staging / "a").write_text("1")
    assert sorted(p.name for p in out.iterdir()) == ["a"]
    with pytest.raises(RuntimeError, match="boom"), atomic_folder(out) as staging:
        (staging / "b").write_text("2")
        raise RuntimeError("boom")
    assert sorted(p.name for p in out.iterdir()) == ["a"]
    with atomic_folder(out) as staging:
        (staging / "c").write_text("3")
    assert sorted(p.name for p in out.iterdir()) == ["c"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]

    leftovers = [tmp_path / ".out.tmp-x1", tmp_path / ".out.old-x2"]
    for leftover in leftovers:
        leftover.mkdir()
    (tmp_path / ".out.partial.tmp-x3").mkdir()  # another job's staging folder: not ours
    assert sorted(remove_staging_leftovers(out)) == sorted(leftovers)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.partial.tmp-x3", "out"]


# --------------------------------------------------------------------------------------------------------------------
# hf-kd index
# --------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dot_models(tmp_path_factory, tokenizer) -> dict[str, Path]:
    """Two tiny BERT_DOT models with different weights."""
    import torch
    from transformers import BertConfig

    from hf_kd import BertDotConfig, BertDotModel

    root = tmp_path_factory.mktemp("dot")
    folders = {}
    for name, seed in (("a", 0), ("b", 1)):
        torch.manual_seed(seed)
        backbone = BertConfig(
            vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
            initializer_range=1.0,
        )  # fmt: skip
        BertDotModel(BertDotConfig(backbone_config=backbone)).save_pretrained(root / name, tokenizer=tokenizer)
        folders[name] = root / name
    return folders


@pytest.fixture(scope="module")
def collection(ci_data) -> Path:
    return ci_data / "msmarco-dl20" / "collection.tsv"


def _stalled_index_build(tmp_path: Path, model: Path, collection: Path, out: Path) -> subprocess.Popen:
    """An index build that stops (holding its lock) once two shards of 50 passages are written."""
    return _stalled_job(
        tmp_path,
        f"""
        import time, torch
        from hf_kd.data import read_collection_tsv
        from hf_kd.evaluation import indexing
        torch.set_num_threads(1)
        write, written = indexing._write_shard, []
        def stall(path, vectors):
            write(path, vectors)
            written.append(path)
            if len(written) == 2:
                print("stalled", flush=True)
                time.sleep(600)
        indexing._write_shard = stall
        indexing.build_dense_index({str(model)!r}, read_collection_tsv({str(collection)!r}), {str(out)!r},
                                   shard_size=50, device="cpu", source={str(collection)!r}, show_progress=False)
        """,
    )


def _index_argv(model: Path, collection: Path, out: Path) -> list[str]:
    argv = ["index", "--model", str(model), "--collection", str(collection), "--out", str(out)]
    return [*argv, "--shard-size", "50", "--device", "cpu"]


def _vectors_and_ids(folder: Path):
    from hf_kd.evaluation import DenseIndex

    index = DenseIndex.load(folder)
    return index.index.reconstruct_n(0, len(index)), index.ids


def test_index_build_killed_resumes_its_shards_into_the_same_index(dot_models, collection, tmp_path, capsys):
    out = tmp_path / "index"
    job = _stalled_index_build(tmp_path, dot_models["a"], collection, out)
    try:
        assert main(_index_argv(dot_models["a"], collection, out)) == 1
        error = _error(capsys)
        host = json.loads((tmp_path / "index.lock.json").read_text(encoding="utf-8"))["host"]
        assert error.startswith(
            f"hf-kd index: error: {out} is being written by pid {job.pid} on {host} ('stalled_job.py', since "
        )
        assert error.endswith(f"(the lock is {out}.lock) (--debug shows the traceback)")
    finally:
        _kill(job)
    work = tmp_path / "index.partial"
    assert not out.exists()
    assert sorted(p.name for p in work.iterdir()) == ["manifest.json", "vectors-00000.npy", "vectors-00001.npy"]

    assert main(_index_argv(dot_models["a"], collection, out)) == 0
    assert "indexed 300 passages (Flat, 32-d, 100 resumed from an earlier run): " in capsys.readouterr().out
    assert not work.exists()
    assert main(_index_argv(dot_models["a"], collection, tmp_path / "fresh")) == 0
    assert "resumed" not in capsys.readouterr().out
    resumed_vectors, resumed_ids = _vectors_and_ids(out)
    fresh_vectors, fresh_ids = _vectors_and_ids(tmp_path / "fresh")
    assert resumed_ids == fresh_ids and len(resumed_ids) == 300
    assert np.array_equal(resumed_vectors, fresh_vectors)

    assert main(_index_argv(dot_models["a"], collection, out)) == 1
    assert _error(capsys) == (
        f"hf-kd index: error: {out} already exists and is not empty; pass overwrite=True (--overwrite) to replace it "
        "(--debug shows the traceback)"
    )


def test_index_build_refuses_to_resume_the_work_of_another_model_or_options(dot_models, collection, tmp_path, capsys):
    from hf_kd.jobs import model_files_fingerprint

    model = tmp_path / "model"
    shutil.copytree(dot_models["a"], model)
    out = tmp_path / "index"
    _kill(_stalled_index_build(tmp_path, model, collection, out))
    shutil.rmtree(model)
    shutil.copytree(dot_models["b"], model)  # another model at the same path

    work = tmp_path / "index.partial"
    old, new = model_files_fingerprint(dot_models["a"]), model_files_fingerprint(dot_models["b"])
    assert main(_index_argv(model, collection, out)) == 1
    assert _error(capsys) == (
        f"hf-kd index: error: {work} holds an unfinished index build of other work (model_weights: "
        f"{old[:12]}…{old[-8:]} -> {new[:12]}…{new[-8:]}); rerun with the same model, collection and options to "
        "resume it, or pass overwrite=True (--overwrite) to start over (--debug shows the traceback)"
    )
    shutil.rmtree(model)
    shutil.copytree(dot_models["a"], model)
    assert main([*_index_argv(model, collection, out), "--fp16"]) == 1
    assert "index build of other work (fp16: false -> true); rerun with the same" in _error(capsys)
    assert not out.exists() and len(list(work.glob("vectors-*.npy"))) == 2

    shutil.rmtree(model)
    shutil.copytree(dot_models["b"], model)
    assert main([*_index_argv(model, collection, out), "--overwrite"]) == 0
    assert "resumed" not in capsys.readouterr().out
    assert main(_index_argv(dot_models["b"], collection, tmp_path / "fresh")) == 0
    assert np.array_equal(_vectors_and_ids(out)[0], _vectors_and_ids(tmp_path / "fresh")[0])
