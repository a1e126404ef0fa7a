"""Scoring is safe to kill and rerun: resume keyed by what it computes, one job per output, one-line errors."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from hf_kd.cli import main
from hf_kd.data import ScoreDataset
from hf_kd.jobs import JobLockedError, file_fingerprint, fingerprint_changes, hash_files, output_lock
from hf_kd.teachers import load_teacher, score_triples

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def models(tmp_path_factory, tokenizer) -> dict[str, Path]:
    """Two tiny one-logit classifiers with different weights, each with the MiniLM tokenizer."""
    root = tmp_path_factory.mktemp("models")
    folders = {}
    for name, seed in (("a", 0), ("b", 1)):
        torch.manual_seed(seed)
        config = BertConfig(
            vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
            num_labels=1,
        )  # fmt: skip
        model = BertForSequenceClassification(config)
        with torch.no_grad():
            for parameter_name, parameter in model.named_parameters():
                if "LayerNorm" not in parameter_name:
                    parameter.normal_(0.0, 0.3)
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
        folders[name] = root / name
    return folders


@pytest.fixture(scope="module")
def triples(ci_data) -> Path:
    return ci_data / "msmarco-train-100.triples.tsv"


def _error(capsys) -> str:
    """The error line of a failed command (loading progress bars may come before it)."""
    return capsys.readouterr().err.splitlines()[-1]


def _scores(folder: Path) -> np.ndarray:
    table = ScoreDataset.open(folder).table()
    return np.stack([table.column("pos_score").to_numpy(), table.column("neg_score").to_numpy()])


def test_sigkill_then_teacher_swapped_at_the_same_path_refuses_to_mix(models, triples, tmp_path, capsys):
    teacher = tmp_path / "tX"
    shutil.copytree(models["a"], teacher)
    out = tmp_path / "rt"
    script = tmp_path / "slow.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import time, torch
            from hf_kd.teachers import load_teacher, score_triples
            torch.set_num_threads(1)
            teacher = load_teacher({str(teacher)!r}, device="cpu")
            score = teacher.score
            teacher.score = lambda q, p: (time.sleep(0.3), score(q, p))[1]
            score_triples([teacher], {str(triples)!r}, {str(out)!r}, batch_size=10, shard_size=20,
                          show_progress_bar=False)
            """
        )
    )
    process = subprocess.Popen([sys.executable, str(script)], cwd=REPO_ROOT, stderr=subprocess.DEVNULL)
    shards = tmp_path / "rt.partial" / "teacher-0"
    deadline = time.monotonic() + 60
    while not list(shards.glob("pairs-*.parquet")):
        assert process.poll() is None and time.monotonic() < deadline, "the scorer ended before it was killed"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()

    shutil.rmtree(teacher)
    shutil.copytree(models["b"], teacher)  # another model at the same path
    argv = ["score", "--teacher", str(teacher), "--triples", str(triples), "--out", str(out), "--device", "cpu"]
    argv += ["--batch-size", "10", "--shard-size", "20"]
    assert main(argv) == 1
    error = _error(capsys)
    old = "sha256:" + hash_files(models["a"], (".safetensors", ".bin", ".json", ".txt", ".model", ".py"))
    new = "sha256:" + hash_files(models["b"], (".safetensors", ".bin", ".json", ".txt", ".model", ".py"))
    assert error.startswith(f"hf-kd score: error: {tmp_path / 'rt.partial'} holds an unfinished scoring run of other ")
    assert f"teachers[0].weights: {old[:12]}…{old[-8:]} -> {new[:12]}…{new[-8:]}" in error
    assert not out.exists()

    assert main([*argv, "--overwrite"]) == 0
    assert "resumed" not in capsys.readouterr().out
    reference = score_triples([load_teacher(models["b"], device="cpu")], triples, tmp_path / "ref", batch_size=10,
                              shard_size=20, show_progress_bar=False)  # fmt: skip
    np.testing.assert_allclose(_scores(out), _scores(reference.out), atol=1e-6)


def test_work_folder_without_manifest_is_never_resumed(models, triples, tmp_path):
    teacher = load_teacher(models["a"], device="cpu")
    out = tmp_path / "scores"
    stray = tmp_path / "scores.partial" / "teacher-0"
    stray.mkdir(parents=True)
    shutil.copy(REPO_ROOT / "pyproject.toml", stray / "pairs-00000.parquet")  # not even a Parquet file
    result = score_triples([teacher], triples, out, batch_size=50, shard_size=100, show_progress_bar=False)
    assert (result.resumed_pairs, result.scored_pairs) == (0, 200)
    reference = score_triples([teacher], triples, tmp_path / "ref", batch_size=50, shard_size=100,
                              show_progress_bar=False)  # fmt: skip
    np.testing.assert_array_equal(_scores(out), _scores(reference.out))


def test_second_scorer_on_the_same_output_exits_naming_the_holder(models, triples, tmp_path, capsys):
    out = tmp_path / "scores"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"from hf_kd.jobs import output_lock\nwith output_lock({str(out)!r}):\n"
         "    print('locked', flush=True)\n    input()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT,
    )  # fmt: skip
    try:
        assert holder.stdout.readline() == "locked\n"
        argv = ["score", "--teacher", str(models["a"]), "--triples", str(triples), "--out", str(out)]
        assert main([*argv, "--device", "cpu"]) == 1
        error = _error(capsys)
        host = json.loads((tmp_path / "scores.lock.json").read_text(encoding="utf-8"))["host"]
        assert error.startswith(f"hf-kd score: error: {out} is being written by pid {holder.pid} on {host} ('-c', ")
        assert error.endswith(
            f"wait for that job to end or stop it (the lock is {out}.lock) (--debug shows the traceback)"
        )
        assert not out.exists() and not (tmp_path / "scores.partial").exists()
    finally:
        holder.communicate("\n", timeout=30)

    # the holder ended: its lock is free again
    with output_lock(out):
        with pytest.raises(JobLockedError, match=f"pid {os.getpid()} on "):
            subprocess_check_locked(out)


def subprocess_check_locked(out: Path) -> None:
    """Tries the lock of `out` from another process; raises JobLockedError with its message when it is held."""
    code = (
        f"from hf_kd.jobs import output_lock\ntry:\n    with output_lock({str(out)!r}): pass\n"
        "except Exception as e:\n    print(e)"
    )
    message = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT).stdout.strip()
    if message:
        raise JobLockedError(message)


def test_stale_lock_of_a_dead_process_is_taken_over(models, triples, tmp_path):
    out = tmp_path / "scores"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / "scores.lock").write_text("")
    (tmp_path / "scores.lock.json").write_text(json.dumps({"pid": int(dead.stdout), "host": "h", "command": "x"}))
    result = score_triples([load_teacher(models["a"], device="cpu")], triples, out, show_progress_bar=False)
    assert result.triples == 100
    assert not (tmp_path / "scores.lock.json").exists()


def test_one_line_errors_for_user_mistakes(models, triples, tmp_path, capsys, monkeypatch):
    out = tmp_path / "scores"
    out.mkdir()
    (out / "x").write_text("x")
    argv = ["score", "--triples", str(triples), "--device", "cpu"]
    assert main([*argv, "--teacher", str(models["a"]), "--out", str(out)]) == 1
    assert _error(capsys) == (
        f"hf-kd score: error: {out} already exists and is not empty; pass overwrite=True (--overwrite) to replace it "
        "(--debug shows the traceback)"
    )
    missing = tmp_path / "no" / "such" / "teacher"
    assert main([*argv, "--teacher", str(missing), "--out", str(tmp_path / "o")]) == 1
    assert _error(capsys) == f"hf-kd score: error: teacher folder not found: {missing} (--debug shows the traceback)"
    truncated = tmp_path / "truncated"
    shutil.copytree(models["a"], truncated)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    assert main([*argv, "--teacher", str(truncated), "--out", str(tmp_path / "o")]) == 1
    assert _error(capsys) == (
        f"hf-kd score: error: {weights} is not a valid safetensors file (truncated?): Error while deserializing "
        "header: invalid header length; copy or download it again (--debug shows the traceback)"
    )

    with pytest.raises(FileExistsError):
        main([*argv, "--teacher", str(models["a"]), "--out", str(out), "--debug"])
    monkeypatch.setenv("HF_KD_DEBUG", "1")
    with pytest.raises(FileExistsError):
        main([*argv, "--teacher", str(models["a"]), "--out", str(out)])


def test_fingerprint_changes_names_each_changed_value():
    recorded = {"bf16": False, "teachers": [{"weights": "sha256:" + "a" * 64}], "source": "/x"}
    current = {"bf16": True, "teachers": [{"weights": "sha256:" + "b" * 64}], "source": "/x"}
    assert fingerprint_changes(recorded, current) == [
        "bf16: false -> true",
        f"teachers[0].weights: sha256:aaaaa…{'a' * 8} -> sha256:bbbbb…{'b' * 8}",
    ]


def test_file_fingerprint_follows_content_not_modification_time(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(b'{"_id": "1", "text": "a"}\n' * 1000)
    first = file_fingerprint(path)
    assert first["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    # the same bytes copied back (another modification time and inode), as a copy to another machine would be
    copy = tmp_path / "copy.jsonl"
    shutil.copyfile(path, copy)
    os.utime(copy, ns=(1, 1))
    os.replace(copy, path)
    assert fingerprint_changes(first, file_fingerprint(path)) == []
    # one byte changed at the end, the size kept
    data = bytearray(path.read_bytes())
    data[-2] = ord("b")
    path.write_bytes(bytes(data))
    assert [change.split(":")[0] for change in fingerprint_changes(first, file_fingerprint(path))] == ["sha256"]
