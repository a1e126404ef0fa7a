"""Training from id-form teacher scores: converted folders, TSV texts, Hub datasets in the hf-kd, sentence-transformers
and PyLate layouts, the per-batch join, missing ids, bad Hub ids, one and two processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import torch
import yaml
from huggingface_hub import DatasetCard, HfApi
from transformers import AutoModel, BertConfig, BertModel

from hf_kd.cli import main as cli_main
from hf_kd.data import MissingIdError, TextStore, load_train_dataset, read_collection_tsv, read_queries_tsv
from hf_kd.data.sources import DataSourceError, parse_hub_id
from hf_kd.data.texts import MissingIdRows
from hf_kd.hub import push_scores
from hf_kd.training import ConfigError
from tests.hub_server import HubServer, hub_server_fixture  # noqa: F401 - fixture

REPO_ROOT = Path(__file__).resolve().parents[1]
BERT_DOT_YAML = REPO_ROOT / "train_scripts" / "configs" / "bert_dot.yaml"
TINY = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
ENV = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def dl20(ci_data) -> dict:
    """Real ids and texts of the ci DL20 cut: rows `(qid, pos_pid, neg_pid, pos_score, neg_score)` from the BM25
    run (the first candidate with text as positive, the next eight as negatives, BM25 scores as teacher scores)."""
    folder = ci_data / "msmarco-dl20"
    queries, collection = read_queries_tsv(folder / "queries.tsv"), read_collection_tsv(folder / "collection.tsv")
    run: dict[str, list[tuple[int, str, float]]] = {}
    for line in (folder / "runs" / "bm25.top30.trec").read_text().splitlines():
        qid, _, pid, rank, score, _ = line.split()
        if pid in collection:
            run.setdefault(qid, []).append((int(rank), pid, float(score)))
    rows = []
    for qid, candidates in run.items():
        candidates.sort()
        _, positive, pos_score = candidates[0]
        rows += [(qid, positive, pid, pos_score, score) for _, pid, score in candidates[1:9]]
    return {"folder": folder, "queries": queries, "collection": collection, "rows": rows}


@pytest.fixture(scope="module")
def paper_ids_file(dl20, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("paper") / "scores.tsv"
    path.write_text("".join(f"{p:.4f}\t{n:.4f}\t{q}\t{pos}\t{neg}\n" for q, pos, neg, p, n in dl20["rows"]))
    return path


@pytest.fixture(scope="module")
def converted(dl20, paper_ids_file, tmp_path_factory) -> Path:
    """`hf-kd data convert --format paper-ids` of the ci rows."""
    out = tmp_path_factory.mktemp("converted") / "scores"
    argv = ["data", "convert", "--format", "paper-ids", str(paper_ids_file), "--out", str(out)]
    argv += ["--queries", str(dl20["folder"] / "queries.tsv"), "--collection", str(dl20["folder"] / "collection.tsv")]
    assert cli_main(argv) == 0
    return out


@pytest.fixture(scope="module")
def backbone(tmp_path_factory, tokenizer) -> str:
    folder = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    BertModel(BertConfig(**TINY)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def hand_joined(dl20, rows) -> list[tuple[str, str, str]]:
    return [(dl20["queries"][q], dl20["collection"][p], dl20["collection"][n]) for q, p, n, *_ in rows]


def texts_of(dataset, n: int) -> list[tuple[str, ...]]:
    batch = dataset.__getitems__(list(range(n)))  # what the DataLoader asks for: one batch, joined at once
    if "passages" in batch[0]:
        return [(row["query"], *row["passages"]) for row in batch]
    return [(row["query"], row["positive"], row["negative"]) for row in batch]


def train_argv(backbone: str, out: Path, *extra: str) -> list[str]:
    return [
        "train", "--architecture", "bert_dot", "--backbone", backbone, "--max_query_length", "16",
        "--max_passage_length", "48", "--per_device_train_batch_size", "8", "--max_steps", "2",
        "--logging_steps", "1", "--save_strategy", "no", "--report_to", "none", "--disable_tqdm", "true",
        "--use_cpu", "true", "--output_dir", str(out), *extra,
    ]  # fmt: skip


# --------------------------------------------------------------------------------------------------------------------
# The store and the join
# --------------------------------------------------------------------------------------------------------------------


def test_text_store_from_tsv_is_memory_mapped_and_indexed_once(dl20, tmp_path):
    store = TextStore.from_tsv(dl20["folder"] / "collection.tsv", "collection", cache_dir=tmp_path)
    assert len(store) == len(dl20["collection"]) == 300
    pids = list(dl20["collection"])[::37]
    assert store.lookup(pids + [pids[0]]) == [dl20["collection"][p] for p in pids + [pids[0]]]
    assert store.lookup([int(pids[1])]) == [dl20["collection"][pids[1]]]  # integer ids match their decimal form
    assert store._dataset.cache_files and store.index_bytes == 16 * len(store)  # int64 key + row per text
    assert list(tmp_path.glob("collection-*.arrow"))  # converted once, reused by the next open
    assert list(store.rows(["007", pids[2], "x"])) == [-1, list(dl20["collection"]).index(pids[2]), -1]
    with pytest.raises(MissingIdError, match=r"scores, row 3: id 'x' not found in the collection \(.*collection.tsv"):
        store.lookup(["x"], where=["scores, row 3"])
    words = TextStore.from_mapping({"b": "two", "a": "one"}, "queries")
    assert words.lookup(["a", "b", "a"]) == ["one", "two", "one"] and list(words.rows(["c"])) == [-1]


def test_converted_paper_ids_train_as_they_are(dl20, converted):
    dataset = load_train_dataset([str(converted)])
    assert isinstance(dataset, datasets.Dataset) and len(dataset) == len(dl20["rows"]) == 80
    assert dataset.column_names == ["query_id", "positive_id", "negative_id", "pos_score", "neg_score"]  # ids on disk
    assert texts_of(dataset, 8) == hand_joined(dl20, dl20["rows"][:8])
    row = dataset[5]
    assert row["pos_score"] == pytest.approx(dl20["rows"][5][3], abs=1e-4)
    assert set(row) == {"query", "positive", "negative", "pos_score", "neg_score"}
    streamed = load_train_dataset([str(converted)], streaming=True)
    assert isinstance(streamed, datasets.IterableDataset)
    assert [(r["query"], r["positive"], r["negative"]) for r in streamed] == hand_joined(dl20, dl20["rows"])


def test_paper_ids_file_with_tsv_texts_and_missing_ids(dl20, tmp_path):
    folder = dl20["folder"]
    rows = [*dl20["rows"][:6], (dl20["rows"][0][0], "999999999", dl20["rows"][0][2], 1.0, 0.0), *dl20["rows"][6:9]]
    source = tmp_path / "ids.parquet"
    datasets.Dataset.from_dict(
        {
            "query_id": [r[0] for r in rows],
            "positive_id": [r[1] for r in rows],
            "negative_id": [r[2] for r in rows],
            "pos_score": [r[3] for r in rows],
            "neg_score": [r[4] for r in rows],
        }
    ).to_parquet(source)
    texts = {"queries": str(folder / "queries.tsv"), "collection": str(folder / "collection.tsv")}
    with pytest.raises(MissingIdError) as error:
        load_train_dataset([str(source)], **texts)
    assert str(error.value) == (
        f"{source}, row 6: id '999999999' not found in the collection ({folder / 'collection.tsv'} has no text for it)"
    )
    with pytest.raises(ConfigError, match=r"holds ids .* give --train_queries and --train_collection"):
        load_train_dataset([str(source)])

    rejected = MissingIdRows(tmp_path / "missing.tsv")
    dataset = load_train_dataset([str(source)], **texts, missing_ids=rejected)
    assert rejected.count == 1 and len(dataset) == 9
    assert (tmp_path / "missing.tsv").read_text().splitlines()[1].split("\t")[:4] == [
        str(source), "6", "positive_id", "999999999"
    ]  # fmt: skip
    assert texts_of(dataset, 9) == hand_joined(dl20, rows[:6] + rows[7:])

    streamed_rejects = MissingIdRows(tmp_path / "streamed.tsv")
    streamed = load_train_dataset([str(source)], **texts, streaming=True, missing_ids=streamed_rejects)
    assert len(list(streamed)) == 9 and streamed_rejects.count == 1
    with pytest.raises(MissingIdError, match=r"row 6: id '999999999' not found"):
        list(load_train_dataset([str(source)], **texts, streaming=True))

    empty = tmp_path / "empty.parquet"
    datasets.Dataset.from_dict({k: [] for k in ("query_id", "positive_id", "negative_id", "margin")}).to_parquet(empty)
    with pytest.raises(ConfigError, match=r"empty.parquet holds no training rows"):
        load_train_dataset([str(empty)], **texts)


# --------------------------------------------------------------------------------------------------------------------
# The shipped config, one and two processes
# --------------------------------------------------------------------------------------------------------------------


def run_shipped_config(backbone: str, converted: Path, dl20, cwd: Path, launcher=(), extra=()):
    folder = dl20["folder"]
    overrides = ["--backbone", backbone, "--train_files", str(converted), *extra]
    overrides += ["--dev_queries", str(folder / "queries.tsv"), "--dev_collection", str(folder / "collection.tsv")]
    overrides += ["--dev_run", str(folder / "runs" / "bm25.top30.trec"), "--dev_qrels", str(folder / "qrels.txt")]
    script = [str(REPO_ROOT / "train_scripts" / "train.py"), "--config", str(BERT_DOT_YAML), *overrides]
    command = [*launcher, *script] if launcher else [sys.executable, *script]
    return subprocess.run(command, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=900)


def check_trained(out: Path, world_size: int) -> None:
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["world_size"] == world_size
    assert summary["examples_seen"] == 80 and summary["global_step"] == 3  # 80 rows, 32 a step, one epoch
    assert summary["arguments"]["hf_kd"]["loss"] == "margin_mse" and summary["rows_left_out_for_missing_ids"] == 0
    assert 0.0 <= summary["final_dev_metrics"]["eval_nDCG@10"] <= 1.0
    assert type(AutoModel.from_pretrained(out)).__name__ == "BertDotModel"


def test_shipped_bert_dot_config_trains_from_converted_paper_ids(backbone, converted, dl20, tmp_path):
    result = run_shipped_config(backbone, converted, dl20, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    check_trained(tmp_path / "outputs" / "bert_dot", world_size=1)


@pytest.mark.slow
@pytest.mark.parametrize("launch", ["--cpu", "--multi_gpu"])
def test_shipped_bert_dot_config_with_accelerate_launch(launch, backbone, converted, dl20, tmp_path):
    """`--cpu --num_processes 2` (accelerate starts one CPU process without MPI) and two gloo processes."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    accelerate = str(Path(sys.executable).with_name("accelerate"))
    launcher = (accelerate, "launch", launch, "--num_processes", "2", "--main_process_port", port)
    extra = ("--use_cpu", "true") if launch == "--multi_gpu" else ()  # gloo processes on the CPU
    result = run_shipped_config(backbone, converted, dl20, tmp_path, launcher, extra)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "outputs" / "bert_dot" / "train_summary.json").read_text())
    world_size = summary["world_size"]
    assert world_size == (2 if launch == "--multi_gpu" else 1)
    if world_size == 2:  # 32 rows a process per step, each process reads its own rows: 2 steps cover the 80
        assert summary["global_step"] == 2 and summary["examples_seen"] >= 80, summary["examples_seen"]
        assert type(AutoModel.from_pretrained(tmp_path / "outputs" / "bert_dot")).__name__ == "BertDotModel"
    else:
        check_trained(tmp_path / "outputs" / "bert_dot", world_size=1)


# --------------------------------------------------------------------------------------------------------------------
# Hub datasets by id
# --------------------------------------------------------------------------------------------------------------------


def upload_subsets(repo_id: str, subsets: dict[str, datasets.Dataset], tmp_path: Path) -> None:
    """A dataset repository with one folder of Parquet per subset and the `configs` of its card, as
    `Dataset.push_to_hub(repo_id, config_name=...)` writes them (the layout of sentence-transformers/msmarco and
    of PyLate's datasets)."""
    folder = tmp_path / repo_id.replace("/", "--")
    configs = []
    for name, dataset in subsets.items():
        (folder / name).mkdir(parents=True)
        dataset.to_parquet(folder / name / "train-00000-of-00001.parquet")
        configs.append({"config_name": name, "data_files": [{"split": "train", "path": f"{name}/train-*"}]})
    (folder / "README.md").write_text(f"---\n{yaml.safe_dump({'configs': configs})}---\n\n# {repo_id}\n")
    HfApi().create_repo(repo_id, repo_type="dataset")
    HfApi().upload_folder(repo_id=repo_id, repo_type="dataset", folder_path=folder)


def sentence_transformers_layout(dl20) -> dict[str, datasets.Dataset]:
    rows = dl20["rows"]
    return {
        "bert-ensemble-margin-mse": datasets.Dataset.from_dict(
            {
                "query_id": [r[0] for r in rows],
                "positive_id": [r[1] for r in rows],
                "negative_id": [r[2] for r in rows],
                "score": [r[3] - r[4] for r in rows],  # float64 margins, as on the Hub
            }
        ),
        "corpus": datasets.Dataset.from_dict(
            {"passage_id": list(dl20["collection"]), "passage": list(dl20["collection"].values())}
        ),
        "queries": datasets.Dataset.from_dict(
            {"query_id": list(dl20["queries"]), "query": list(dl20["queries"].values())}
        ),
    }


def pylate_layout(dl20) -> tuple[dict[str, datasets.Dataset], list[tuple[str, list[str]]]]:
    by_query: dict[str, list] = {}
    for qid, positive, negative, pos_score, neg_score in dl20["rows"]:
        entry = by_query.setdefault(qid, [[positive], [pos_score]])
        entry[0].append(negative)
        entry[1].append(neg_score)
    qids = list(by_query)
    train = datasets.Dataset.from_dict(
        {
            "query_id": [int(q) for q in qids],  # PyLate's query ids are integers
            "document_ids": [by_query[q][0][:5] for q in qids],
            "scores": [by_query[q][1][:5] for q in qids],
        }
    )
    documents = datasets.Dataset.from_dict(
        {"document_id": list(dl20["collection"]), "text": list(dl20["collection"].values())}
    )
    queries = datasets.Dataset.from_dict(
        {"query_id": [int(q) for q in dl20["queries"]], "text": list(dl20["queries"].values())}
    )
    return {"train": train, "queries": queries, "documents": documents}, [(q, by_query[q][0][:5]) for q in qids]


def test_trains_from_sentence_transformers_msmarco_layout_by_repo_id(hub_server, dl20, backbone, tmp_path):
    upload_subsets("org/msmarco", sentence_transformers_layout(dl20), tmp_path)
    hub_id = "hf://datasets/org/msmarco/bert-ensemble-margin-mse"
    dataset = load_train_dataset([hub_id])
    assert texts_of(dataset, 8) == hand_joined(dl20, dl20["rows"][:8])
    assert dataset[3]["margin"] == pytest.approx(dl20["rows"][3][3] - dl20["rows"][3][4])

    out = tmp_path / "st"
    assert cli_main(train_argv(backbone, out, "--train_files", hub_id)) == 0
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["global_step"] == 2 and summary["examples_seen"] == 16
    assert type(AutoModel.from_pretrained(out)).__name__ == "BertDotModel"
    # the texts can also be named: another dataset's corpus subset, at a pinned revision
    revision = HfApi().dataset_info("org/msmarco").sha
    pinned = load_train_dataset(
        [f"hf://datasets/org/msmarco@{revision}/bert-ensemble-margin-mse"],
        collection=f"hf://datasets/org/msmarco@{revision}/corpus",
    )
    assert texts_of(pinned, 2) == hand_joined(dl20, dl20["rows"][:2])


def test_trains_from_pylate_layout_by_repo_id(hub_server, dl20, backbone, tmp_path):
    subsets, expected = pylate_layout(dl20)
    upload_subsets("org/pylate-kd", subsets, tmp_path)
    dataset = load_train_dataset(["hf://datasets/org/pylate-kd/train"])
    first = texts_of(dataset, 4)
    assert first == [(dl20["queries"][q], *[dl20["collection"][p] for p in pids]) for q, pids in expected[:4]]
    assert len(dataset[0]["scores"]) == 5
    out = tmp_path / "pylate"
    argv = train_argv(backbone, out, "--train_files", "hf://datasets/org/pylate-kd/train")
    assert cli_main([*argv, "--per_device_train_batch_size", "4"]) == 0
    assert json.loads((out / "train_summary.json").read_text())["examples_seen"] == 8


def test_push_scores_round_trips_through_training_by_repo_id(hub_server, converted, dl20, tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    push_scores(converted, "org/paper-scores")
    dataset = load_train_dataset(["hf://datasets/org/paper-scores"])
    assert texts_of(dataset, 8) == hand_joined(dl20, dl20["rows"][:8])
    streamed = load_train_dataset(["hf://datasets/org/paper-scores"], streaming=True)
    assert [(r["query"], r["positive"], r["negative"]) for r in streamed] == hand_joined(dl20, dl20["rows"])
    card = DatasetCard(hub_server.repo_files("org/paper-scores", repo_type="dataset")["README.md"].decode())
    assert "Layout: **hf-kd `scored_triples_ids`**" in card.text
    assert "--train_files hf://datasets/org/paper-scores@main" in card.text


def test_bad_hub_ids_are_one_line_errors(hub_server, dl20, backbone, tmp_path, capsys):
    upload_subsets("org/msmarco", sentence_transformers_layout(dl20), tmp_path)
    assert parse_hub_id("hf://datasets/a/b@v1/c") == parse_hub_id("hf://datasets/a/b@v1/c/")
    cases = {
        "hf://datasets/org/nothing/x": "dataset org/nothing not found on the Hub",
        "hf://datasets/org/msmarco/triplets": "subset 'triplets' not found; the subsets are",
        "hf://datasets/org/msmarco@v9/bert-ensemble-margin-mse": "revision 'v9' not found in org/msmarco",
    }
    for hub_id, message in cases.items():
        with pytest.raises(DataSourceError, match=message):
            load_train_dataset([hub_id])
        assert cli_main(train_argv(backbone, tmp_path / "bad", "--train_files", hub_id)) == 2
        stderr = capsys.readouterr().err
        assert "Traceback" not in stderr
        (line,) = [line for line in stderr.splitlines() if line.startswith("error: ")]
        assert line.startswith(f"error: {hub_id}: ") and message in line
    # without a subset, the only one that is not texts is taken
    assert texts_of(load_train_dataset(["hf://datasets/org/msmarco"]), 2) == hand_joined(dl20, dl20["rows"][:2])
