"""`hf-kd score` under `accelerate launch --num_processes 2` on CPU: the processes share the shards, the main process
writes the dataset of a one-process run; a killed run resumes; a missing or foreign shard is never merged."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import launch_two_processes, wide_random_cat_teacher

from hf_kd.data import ScoreDataset
from hf_kd.processes import job_processes
from hf_kd.teachers import load_teacher, score_triples, scoring, shards

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARD_SIZE = 30  # 200 distinct pairs: shards 0-5 of 30 pairs and shard 6 of 20
SCORE_ARGS = ["--shard-size", str(SHARD_SIZE), "--batch-size", "16", "--device", "cpu"]

INTERRUPTED_BEFORE_MERGING = """
import sys

from hf_kd import cli
from hf_kd.teachers import shards


def interrupted(*args, **kwargs):
    raise RuntimeError("interrupted before merging")


shards._read_shards = interrupted
sys.exit(cli.main(sys.argv[1:]))
"""

REPORTING_THE_PROCESS_GROUP = """
import sys

import torch

from hf_kd import cli

status = cli.main(sys.argv[1:])
print(f"process group open at exit: {torch.distributed.is_initialized()}")
sys.exit(status)
"""


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def teachers(tmp_path_factory, tokenizer) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("teachers")
    return {name: wide_random_cat_teacher(root / name, tokenizer, seed) for seed, name in enumerate(("cat_a", "cat_b"))}


@pytest.fixture(scope="module")
def triples_tsv(ci_data) -> Path:
    return ci_data / "msmarco-train-100.triples.tsv"


@pytest.fixture(scope="module")
def reference(teachers, triples_tsv, tmp_path_factory) -> Path:
    """The dataset of one process."""
    out = tmp_path_factory.mktemp("reference") / "scores"
    teacher = load_teacher(teachers["cat_a"], device="cpu")
    score_triples([teacher], triples_tsv, out, batch_size=16, shard_size=SHARD_SIZE, show_progress_bar=False)
    return out


def score_args(teacher: Path, triples: Path, out: Path) -> list[str]:
    return ["score", "--teacher", str(teacher), "--triples", str(triples), "--out", str(out), *SCORE_ARGS]


def assert_same_dataset(out: Path, reference: Path) -> None:
    table = ScoreDataset.open(out).table()
    expected = ScoreDataset.open(reference).table()
    assert table.num_rows == expected.num_rows == 100
    for column in ("query", "positive", "negative"):
        assert table.column(column).equals(expected.column(column))
    for column in ("pos_score", "neg_score"):
        np.testing.assert_allclose(table.column(column).to_numpy(), expected.column(column).to_numpy(), atol=1e-6)


def test_one_process_leaves_the_accelerate_state_alone(monkeypatch, reference):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert job_processes("cpu") is None
    assert ScoreDataset.open(reference).provenance.parameters["scoring"]["processes"] == [{"rank": 0, "pairs": 200}]


def test_two_processes_write_the_dataset_of_one_process(teachers, triples_tsv, reference, tmp_path):
    out, script = tmp_path / "scores", tmp_path / "reporting.py"
    script.write_text(REPORTING_THE_PROCESS_GROUP)
    done = launch_two_processes([str(script), *score_args(teachers["cat_a"], triples_tsv, out)], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("distinct pairs") == 1  # the main process alone reports
    # both processes close their gloo group: one left open can abort the process at interpreter shutdown
    assert done.stdout.count("process group open at exit: False") == 2, done.stdout[-3000:]
    assert "110 by process 0, 90 by process 1" in done.stdout

    assert_same_dataset(out, reference)
    # shards 0, 2, 4, 6 to the main process, 1, 3, 5 to the other
    processes = ScoreDataset.open(out).provenance.parameters["scoring"]["processes"]
    assert processes == [{"rank": 0, "pairs": 110}, {"rank": 1, "pairs": 90}]
    assert not (tmp_path / "scores.partial").exists()


def test_killed_run_scores_only_the_missing_shards(teachers, triples_tsv, reference, tmp_path):
    out, work = tmp_path / "scores", tmp_path / "scores.partial"
    script = tmp_path / "interrupted.py"
    script.write_text(INTERRUPTED_BEFORE_MERGING)
    interrupted = launch_two_processes([str(script), *score_args(teachers["cat_a"], triples_tsv, out)], tmp_path)
    assert interrupted.returncode != 0
    assert "process 1 stopped: the main process failed (RuntimeError: interrupted before merging)" in interrupted.stderr
    shards = sorted(path.name for path in (work / "teacher-0").glob("pairs-*.parquet"))
    assert shards == [f"pairs-{shard:05d}.parquet" for shard in range(7)]
    assert not out.exists()

    for shard in (1, 3, 5):  # the shards of the process that was killed
        (work / "teacher-0" / f"pairs-{shard:05d}.parquet").unlink()
    resumed = launch_two_processes(["-m", "hf_kd.cli", *score_args(teachers["cat_a"], triples_tsv, out)], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "90 pairs scored, 110 resumed from an earlier run" in resumed.stdout

    assert_same_dataset(out, reference)
    # the missing shards 1, 3, 5 dealt out in turn: 1 and 5 to the main process, 3 to the other
    processes = ScoreDataset.open(out).provenance.parameters["scoring"]["processes"]
    assert processes == [{"rank": 0, "pairs": 60}, {"rank": 1, "pairs": 30}]
    assert not work.exists()


def interrupt_before_merging(monkeypatch, teacher: Path, triples_tsv: Path, out: Path) -> Path:
    """Scores every shard into `out.partial`, which is kept: the run stops before merging."""
    with monkeypatch.context() as patch:
        patch.setattr(shards, "_read_shards", lambda *args: (_ for _ in ()).throw(RuntimeError("stopped")))
        with pytest.raises(RuntimeError, match="stopped"):
            score_triples([str(teacher)], triples_tsv, out, batch_size=16, shard_size=SHARD_SIZE,
                          show_progress_bar=False)  # fmt: skip
    return out.with_name(f"{out.name}.partial")


def test_shard_of_another_teacher_is_refused_naming_it(monkeypatch, teachers, triples_tsv, tmp_path):
    work = interrupt_before_merging(monkeypatch, teachers["cat_a"], triples_tsv, tmp_path / "a")
    other = interrupt_before_merging(monkeypatch, teachers["cat_b"], triples_tsv, tmp_path / "b")
    foreign = work / "teacher-0" / "pairs-00002.parquet"
    shutil.copyfile(other / "teacher-0" / "pairs-00002.parquet", foreign)

    with pytest.raises(ValueError, match=rf"{foreign} is not a shard of teacher .*cat_a.* it holds scores of teacher "
                                         r".*cat_b.* of another scoring run; nothing was merged"):  # fmt: skip
        score_triples([str(teachers["cat_a"])], triples_tsv, tmp_path / "a", batch_size=16, shard_size=SHARD_SIZE,
                      show_progress_bar=False)  # fmt: skip
    assert not (tmp_path / "a").exists() and foreign.is_file()


def test_missing_shard_is_refused_naming_it(monkeypatch, teachers, triples_tsv, tmp_path):
    write_shard = shards._write_shard

    def losing_shard_3(path, *args):
        if path.name != "pairs-00003.parquet":
            write_shard(path, *args)

    monkeypatch.setattr(scoring, "_write_shard", losing_shard_3)
    missing = tmp_path / "scores.partial" / "teacher-0" / "pairs-00003.parquet"
    with pytest.raises(FileNotFoundError, match=rf"{missing} is missing: no process wrote that shard; nothing was"):
        score_triples([str(teachers["cat_a"])], triples_tsv, tmp_path / "scores", batch_size=16,
                      shard_size=SHARD_SIZE, show_progress_bar=False)  # fmt: skip
    assert not (tmp_path / "scores").exists()
