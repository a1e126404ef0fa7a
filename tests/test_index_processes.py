"""`hf-kd index` under `accelerate launch --num_processes 2` on CPU: the processes share the shards, the main process
builds the index of a one-process build; a killed build resumes with the shards already written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import faiss
import numpy as np
import pytest
from conftest import launch_two_processes

from hf_kd.data import read_collection_tsv
from hf_kd.evaluation.dense import DenseIndex
from hf_kd.evaluation.indexing import BUILD_FILE, build_dense_index

SHARD_SIZE = 40

BUILD = """
import os
import sys
from pathlib import Path

from hf_kd.data import read_collection_tsv
from hf_kd.evaluation import indexing
from hf_kd.processes import end_job_processes

model, collection, out, interrupt, reports = sys.argv[1:6]
if interrupt == "interrupt":
    def interrupted(*args, **kwargs):
        raise RuntimeError("interrupted before assembling")

    indexing._read_shards = interrupted
result = indexing.build_dense_index(
    model, read_collection_tsv(collection), out, shard_size=SHARD_SIZE_VALUE, batch_size=16, device="cpu",
    show_progress=False,
)
# one file per process: lines printed by two processes into one pipe can interleave
held = "held" if result.index is not None else "none"
(Path(reports) / f"{os.getpid()}.txt").write_text(f"encoded {result.encoded_passages} index {held}")
end_job_processes()
""".replace("SHARD_SIZE_VALUE", str(SHARD_SIZE))


@pytest.fixture(scope="module")
def collection_tsv(ci_data) -> Path:
    return ci_data / "msmarco-dl20" / "collection.tsv"


@pytest.fixture(scope="module")
def reference(tiny_dot_folder, collection_tsv, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference") / "index"
    collection = read_collection_tsv(collection_tsv)
    build_dense_index(
        tiny_dot_folder, collection, out, shard_size=SHARD_SIZE, batch_size=16, device="cpu", show_progress=False
    )
    return out


def vectors_of(folder: Path) -> np.ndarray:
    index = DenseIndex.load(folder).index
    return faiss.rev_swig_ptr(faiss.downcast_index(index).get_xb(), index.ntotal * index.d).reshape(index.ntotal, -1)


def assert_same_index(out: Path, reference: Path) -> None:
    assert json.loads((out / "ids.json").read_text()) == json.loads((reference / "ids.json").read_text())
    np.testing.assert_allclose(vectors_of(out), vectors_of(reference), atol=1e-6)
    assert json.loads((out / BUILD_FILE).read_text()) == json.loads((reference / BUILD_FILE).read_text())
    assert not out.with_name(f"{out.name}.partial").exists()


def process_reports(folder: Path) -> list[str]:
    reports = sorted(p.read_text() for p in folder.glob("*.txt"))
    for report in folder.glob("*.txt"):
        report.unlink()
    return reports


def test_two_processes_build_the_index_of_one_process(tiny_dot_folder, collection_tsv, reference, tmp_path):
    script = tmp_path / "build.py"
    script.write_text(BUILD)
    out = tmp_path / "index"
    reports = tmp_path / "reports"
    reports.mkdir()
    args = [str(script), str(tiny_dot_folder), str(collection_tsv), str(out), "-", str(reports)]
    done = launch_two_processes(args, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    passages = len(read_collection_tsv(collection_tsv))
    assert process_reports(reports) == [f"encoded {passages} index held", f"encoded {passages} index none"]
    assert_same_index(out, reference)


def test_a_killed_two_process_build_resumes_from_its_shards(tiny_dot_folder, collection_tsv, reference, tmp_path):
    script = tmp_path / "build.py"
    script.write_text(BUILD)
    out = tmp_path / "index"
    reports = tmp_path / "reports"
    reports.mkdir()
    args = [str(script), str(tiny_dot_folder), str(collection_tsv), str(out)]
    interrupted = launch_two_processes([*args, "interrupt", str(reports)], tmp_path)
    assert interrupted.returncode != 0 and "interrupted before assembling" in interrupted.stderr
    work = out.with_name("index.partial")
    shards = sorted(p.name for p in work.glob("vectors-*.npy"))
    passages = len(read_collection_tsv(collection_tsv))
    assert len(shards) == -(-passages // SHARD_SIZE) and not out.exists()
    (work / shards[-1]).unlink()  # as if that shard's process had been killed before writing it
    resumed = launch_two_processes([*args, "-", str(reports)], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    last = passages - (len(shards) - 1) * SHARD_SIZE
    # only the missing shard was encoded again
    assert f"encoded {last} index held" in process_reports(reports)
    assert_same_index(out, reference)
    shutil.rmtree(out)
