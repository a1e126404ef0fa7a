"""hf_kd.hub: model and dataset cards, `push_model`, `push_scores` and the CLI, against the local Hub server."""

from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

import datasets
import httpx2
import huggingface_hub
import pytest
import torch
from huggingface_hub import DatasetCard, HfApi, ModelCard, hf_hub_download, model_info
from huggingface_hub.errors import HfHubHTTPError
from transformers import AutoModel, BertConfig

import hf_kd
from hf_kd.cli import build_parser, main
from hf_kd.data import Provenance
from hf_kd.hub import (
    HubTokenError,
    HubUploadError,
    push_model,
    push_scores,
    read_evaluation_results,
    render_model_card,
)
from tests.hub_server import HubServer, hub_server_fixture  # noqa: F401 - fixture

ARCHITECTURES = ("bert_cat", "bert_dot", "colbert", "prett", "tk")
TINY_BACKBONE = {"vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2}
QUERIES = ["what is the boiling point of water", "who wrote hamlet", "what is the boiling point of water"]
PASSAGES = [
    "Water boils at 100 degrees Celsius at sea level.",
    "Hamlet is a tragedy written by William Shakespeare.",
    "The Nile is the longest river in Africa.",
]
DL20_REPORT = {
    "name": "tiny",
    "run": "../shared/data/msmarco-dl20/runs/bm25.top100.trec",
    "qrels": "../shared/data/msmarco-dl20/qrels.txt",
    "top_k": 100,
    "metrics": {"MRR@10": 0.8125, "nDCG@10": 0.6875, "Recall@100": 0.5, "Recall@1000": 0.625, "MAP": 0.375},
    "num_queries": 54,
}
LATENCY = {
    "name": "tiny",
    "architecture": "bert_dot",
    "num_queries": 5,
    "num_candidates": 100,
    "median_ms": 12.5,
    "p90_ms": 15.0,
    "mean_ms": 13.0,
    "peak_memory_bytes": 123_456_789,
    "storage_bytes_per_passage": 3072.0,
    "device": "cpu",
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, tokenizer) -> dict[str, tuple[hf_kd.models.RankingPreTrainedModel, Path]]:
    """A tiny, randomly initialised model of every architecture, saved with its tokenizer, an evaluation
    report (`metrics.json`), a latency measurement and a training summary."""
    saved = {}
    for architecture in ARCHITECTURES:
        model_class = hf_kd.model_class_for(architecture)
        overrides = {"split_layer": 1} if architecture == "prett" else {}
        torch.manual_seed(0)
        backbone = BertConfig(**TINY_BACKBONE, intermediate_size=64)
        model = model_class(model_class.config_class(backbone_config=backbone, **overrides)).eval()
        folder = tmp_path_factory.mktemp(architecture)
        model.save_pretrained(folder, tokenizer=tokenizer)
        (folder / "metrics.json").write_text(json.dumps(DL20_REPORT))
        (folder / "latency.json").write_text(json.dumps({**LATENCY, "architecture": architecture}))
        summary = {"loss": "margin_mse", "loss_config": {}, "global_step": 100, "examples_seen": 3200}
        (folder / "train_summary.json").write_text(json.dumps(summary))
        saved[architecture] = (model, folder)
    return saved


@pytest.fixture
def staging_under_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keeps the upload staging folders (`tempfile`) under the test's tmp_path."""
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))


def _folder_state(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()
    }


# ---- cards ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_model_card_metadata_and_body(architecture, checkpoints, hub_server: HubServer):
    _, folder = checkpoints[architecture]
    card = render_model_card(folder, f"org/tiny-{architecture}", datasets=["org/scores"], teacher="BERT-Base_CAT")

    data = ModelCard(str(card), ignore_metadata_errors=False).data  # huggingface_hub's own parsing
    assert data.library_name == "transformers"
    assert {"passage-ranking", "knowledge-distillation", "margin-mse", architecture.replace("_", "-")} <= set(data.tags)
    assert data.license == "apache-2.0"
    assert data.datasets == ["org/scores"]
    assert data.pipeline_tag == ("sentence-similarity" if architecture == "bert_dot" else "text-ranking")
    assert data.model_name == f"org/tiny-{architecture}"
    read_back = {(r.dataset_type, r.metric_name): r.metric_value for r in data.eval_results}
    expected = {("msmarco-passage/trec-dl-2020", k): v for k, v in DL20_REPORT["metrics"].items()}
    assert read_back == expected
    card.validate()  # the Hub's metadata validation endpoint (the local server's)

    text = card.text
    for section in (
        "Architecture",
        "Teacher and loss",
        "Training hyper-parameters",
        "Evaluation",
        "Usage",
        "Limitations",
        "Citation",
    ):
        assert f"\n## {section}\n" in text
    assert "BERT-Base_CAT" in text and "Margin-MSE" in text
    assert "| TREC Deep Learning 2020 (passages) (test) | bm25 top-100 | 54 | 0.8125 | 0.6875 |" in text
    assert "| 12.5 | 15.0 | 117.7 MB | 3.0 KB |" in text  # latency, memory and storage from latency.json
    assert "| `global_step` | 100 |" in text
    assert f'AutoModel.from_pretrained("org/tiny-{architecture}", revision="main", trust_remote_code=True)' in text
    assert "import hf_kd" in text
    assert ("SentenceTransformer(" in text) == (architecture == "bert_dot")
    assert ("CrossEncoder(" in text) == (architecture == "bert_cat")
    assert "{{" not in str(card) and "{%" not in str(card)


def test_evaluation_results_from_several_files(tmp_path: Path):
    beir = {**DL20_REPORT, "qrels": "data/scifact-small/qrels/test.tsv", "run": None, "top_k": None}
    (tmp_path / "metrics.json").write_text(json.dumps([DL20_REPORT, beir]))
    (tmp_path / "eval-extra").mkdir()
    (tmp_path / "eval-extra" / "metrics.json").write_text(json.dumps({"dataset": "msmarco-dev", "MRR@10": 0.33}))

    results = read_evaluation_results(tmp_path)
    assert [(r.dataset_type, r.split, r.first_stage) for r in results] == [
        ("msmarco-passage/trec-dl-2020", "test", "bm25"),
        ("BeIR/scifact", "test", None),
        ("msmarco-passage/dev/small", "test", None),
    ]
    assert results[2].metrics == {"MRR@10": 0.33}

    (tmp_path / "metrics.json").write_text('{\n  "metrics": {\n    "nDCG@10": 0.5,\n  }\n}')
    with pytest.raises(ValueError, match=r"metrics.json:4:\d+: invalid JSON"):
        read_evaluation_results(tmp_path)
    (tmp_path / "metrics.json").write_text(json.dumps({"metrics": {"nDCG@10": "high"}}))
    with pytest.raises(ValueError, match=r"metric 'nDCG@10' is 'high', expected a number"):
        read_evaluation_results(tmp_path)


REPRODUCE_METRICS = {
    "dl20-dev": {"MRR@10": 0.7, "nDCG@10": 0.6, "Recall@100": 1.0, "Recall@1000": 1.0, "MAP": 0.5, "num_queries": 5.0},
    "scifact-test": {"MRR@10": 0.4, "nDCG@10": 0.45, "Recall@100": 0.9, "Recall@1000": 0.9, "MAP": 0.4},
}
# the `metrics.json` that `hf-kd reproduce` wrote into each checkpoint before the shared report shape
OLD_REPRODUCE_METRICS_FILE = """{
  "name": "colbert-T2",
  "evaluations": [
    {"dataset": "dl20-dev", "run": "out/data/dl20-dev.bm25.trec", "top_k": 30, "rel_threshold": 2, "num_queries": 5,
     "metrics": {"MRR@10": 0.7, "nDCG@10": 0.6, "Recall@100": 1.0, "Recall@1000": 1.0, "MAP": 0.5,
                 "num_queries": 5.0, "num_queries_missing_from_run": 0.0, "num_run_queries_without_qrels": 0.0,
                 "rel_threshold": 2.0}},
    {"dataset": "scifact-test", "run": "out/data/scifact-test.bm25.trec", "top_k": 30, "rel_threshold": 1,
     "num_queries": 10, "metrics": {"MRR@10": 0.4, "nDCG@10": 0.45, "Recall@100": 0.9, "Recall@1000": 0.9, "MAP": 0.4}}
  ],
  "metrics": {"MRR@10": 0.7, "nDCG@10": 0.6, "Recall@100": 1.0, "Recall@1000": 1.0, "MAP": 0.5}
}"""


@pytest.mark.parametrize("written_by", ["this version", "an earlier version"])
def test_card_of_a_reproduced_checkpoint_names_its_evaluation_sets(written_by, checkpoints, tmp_path: Path):
    from hf_kd.evaluation.reports import write_reports
    from hf_kd.evaluation.rerank_set import RerankSet
    from hf_kd.reproduce.stages import _model_metrics_file

    model, saved = checkpoints["colbert"]
    folder = tmp_path / "students" / "colbert-T2"
    shutil.copytree(saved, folder)
    if written_by == "this version":
        eval_sets = [
            RerankSet(
                queries={},
                collection={},
                run={},
                qrels={str(q): {"p": 1} for q in range(n)},
                top_k=30,
                rel_threshold=t,
                name=name,
                run_file=f"out/data/{name}.bm25.trec",
                qrels_file=f"out/data/{name}.qrels.txt",
            )  # fmt: skip
            for name, t, n in (("dl20-dev", 2, 5), ("scifact-test", 1, 10))
        ]
        reports = _model_metrics_file("colbert-T2", str(folder), model, REPRODUCE_METRICS, eval_sets)
        write_reports(folder / "metrics.json", reports)
    else:
        (folder / "metrics.json").write_text(OLD_REPRODUCE_METRICS_FILE)

    results = read_evaluation_results(folder)
    assert [(r.test_set, r.dataset_type, r.first_stage, r.top_k, r.num_queries) for r in results] == [
        ("TREC Deep Learning 2020 (passages), held-out queries", "msmarco-passage/trec-dl-2020", "dl20-dev", 30, 5),
        ("BEIR SciFact (test queries)", "BeIR/scifact", "scifact-test", 30, 10),
    ]
    card = render_model_card(folder, "org/colbert-t2")
    index = {(r.dataset_name, r.metric_name): r.metric_value for r in card.data.eval_results}
    assert index[("TREC Deep Learning 2020 (passages), held-out queries", "nDCG@10")] == 0.6
    assert index[("BEIR SciFact (test queries)", "nDCG@10")] == 0.45
    assert len(index) == 10 and not any("colbert-T2" in name for name, _ in index)  # not named after the folder
    assert "| BEIR SciFact (test queries) (test) | dl20-dev top-30 |" not in card.text
    assert "| BEIR SciFact (test queries) (test) | scifact-test top-30 | 10 | 0.4000 | 0.4500 |" in card.text


def test_card_reads_training_records(checkpoints, tmp_path: Path):
    _, saved = checkpoints["tk"]
    folder = tmp_path / "tk"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        (folder / name).write_bytes((saved / name).read_bytes())
    scores = tmp_path / "scores"
    scores.mkdir()
    Provenance(format="paper-ids", schema="scored_triples_ids", source_files=[], teachers=["org/cat@abc1234"]).save(
        scores
    )
    arguments = {"learning_rate": 7e-06, "per_device_train_batch_size": 32, "seed": 42, "train_files": [str(scores)]}
    (folder / "training_args.json").write_text(json.dumps(arguments))
    summary = {"loss": "listwise_kl", "loss_config": {"temperature": 2.0}, "examples_seen": 64}
    (folder / "train_summary.json").write_text(json.dumps(summary))

    card = render_model_card(folder, "org/tk")
    assert "- **Teacher:** org/cat@abc1234" in card.text
    assert "- **Loss:** listwise KL divergence (`temperature=2.0`)" in card.text
    assert "| `learning_rate` | 7e-06 |" in card.text and "| `per_device_train_batch_size` | 32 |" in card.text
    assert "listwise-kl" in card.data.tags
    assert "hinton2015distilling" in card.text  # the loss's own reference
    assert "No evaluation results were recorded" in card.text and "### Efficiency" not in card.text


def test_card_of_a_folder_that_is_not_an_hf_kd_checkpoint(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        render_model_card(tmp_path, "org/x")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="model_type 'bert' is not an hf-kd architecture"):
        render_model_card(tmp_path, "org/x")


# ---- push_model ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_push_model_then_load_by_repo_id(architecture, checkpoints, hub_server, tokenizer, staging_under_tmp_path):
    model, folder = checkpoints[architecture]
    repo_id = f"org/{architecture}"
    commit = push_model(folder, repo_id, datasets=["org/scores"])

    files = hub_server.repo_files(repo_id)
    config = json.loads(files["config.json"])
    assert files["model.safetensors"] == (folder / "model.safetensors").read_bytes()
    assert {"tokenizer.json", "README.md", "metrics.json"} <= set(files)
    assert {f"{ref.rsplit('.', 1)[0]}.py" for ref in config["auto_map"].values()} <= set(files)
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in files)
    info = model_info(repo_id)
    assert info.sha == commit.oid
    assert info.card_data.eval_results[1].metric_value == DL20_REPORT["metrics"]["nDCG@10"]

    loaded = AutoModel.from_pretrained(repo_id).eval()
    assert type(loaded) is type(model)
    torch.testing.assert_close(loaded.score(QUERIES, PASSAGES, tokenizer), model.score(QUERIES, PASSAGES, tokenizer))

    snippets = re.findall(r"```python\n(.*?)```", files["README.md"].decode(), flags=re.DOTALL)
    assert len(snippets) == (3 if architecture in ("bert_cat", "bert_dot") else 2)
    for snippet in snippets:  # every usage snippet of the card runs against the pushed repository
        namespace: dict = {}
        exec(snippet, namespace)
        assert torch.as_tensor(namespace["scores"]).isfinite().all()


def _hide_hf_kd(monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulates an environment without hf-kd: the package cannot be imported, and the Auto classes do not know
    its architectures, so only the code stored with each checkpoint can load it."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    monkeypatch.setitem(sys.modules, "hf_kd", None)
    for model_class in hf_kd.MODEL_CLASSES.values():
        monkeypatch.delitem(CONFIG_MAPPING._extra_content, model_class.config_class.model_type)
        monkeypatch.delitem(MODEL_MAPPING._extra_content, model_class.config_class)


def test_loading_paths_without_hf_kd(checkpoints, hub_server, tokenizer, staging_under_tmp_path, monkeypatch):
    from sentence_transformers import CrossEncoder, SentenceTransformer
    from transformers import AutoTokenizer

    for architecture in ARCHITECTURES:
        push_model(checkpoints[architecture][1], f"org/{architecture}")
    _hide_hf_kd(monkeypatch)
    for architecture in ARCHITECTURES:
        model = checkpoints[architecture][0]
        remote = AutoModel.from_pretrained(f"org/{architecture}", trust_remote_code=True).eval()
        assert type(remote).__module__.startswith("transformers_modules."), type(remote).__module__
        remote_tokenizer = AutoTokenizer.from_pretrained(f"org/{architecture}", trust_remote_code=True)
        torch.testing.assert_close(
            remote.score(QUERIES, PASSAGES, remote_tokenizer), model.score(QUERIES, PASSAGES, tokenizer)
        )

    dot = checkpoints["bert_dot"][0]
    st = SentenceTransformer("org/bert_dot", trust_remote_code=True, device="cpu")
    torch.testing.assert_close(
        st.encode_query(QUERIES, convert_to_tensor=True), dot.encode_queries(QUERIES, tokenizer).embeddings
    )
    torch.testing.assert_close(
        st.encode_document(PASSAGES, convert_to_tensor=True), dot.encode_passages(PASSAGES, tokenizer).embeddings
    )
    cat = checkpoints["bert_cat"][0]
    cross_encoder = CrossEncoder("org/bert_cat", trust_remote_code=True, device="cpu")
    torch.testing.assert_close(
        cross_encoder.predict(list(zip(QUERIES, PASSAGES)), convert_to_tensor=True),
        cat.score(QUERIES, PASSAGES, tokenizer),
    )


def test_sentence_transformers_and_cross_encoder_by_repo_id(checkpoints, hub_server, tokenizer, staging_under_tmp_path):
    from sentence_transformers import CrossEncoder, SentenceTransformer

    dot, dot_folder = checkpoints["bert_dot"]
    cat, cat_folder = checkpoints["bert_cat"]
    push_model(dot_folder, "org/dot")
    push_model(cat_folder, "org/cat")

    st = SentenceTransformer("org/dot", device="cpu")
    query_vectors = st.encode_query(QUERIES, convert_to_tensor=True)
    passage_vectors = st.encode_document(PASSAGES, convert_to_tensor=True)
    torch.testing.assert_close(query_vectors, dot.encode_queries(QUERIES, tokenizer).embeddings)
    torch.testing.assert_close(passage_vectors, dot.encode_passages(PASSAGES, tokenizer).embeddings)
    torch.testing.assert_close(
        st.similarity(query_vectors, passage_vectors).diagonal(), dot.score(QUERIES, PASSAGES, tokenizer)
    )

    predicted = CrossEncoder("org/cat", device="cpu").predict(list(zip(QUERIES, PASSAGES)), convert_to_tensor=True)
    torch.testing.assert_close(predicted, cat.score(QUERIES, PASSAGES, tokenizer))


def test_revision_pinning_and_offline_cache(checkpoints, hub_server, tokenizer, staging_under_tmp_path, tmp_path):
    model, folder = checkpoints["tk"]
    first = push_model(folder, "org/tk-versions").oid
    changed = tmp_path / "changed"
    torch.manual_seed(1)
    retrained = type(model)(model.config).eval()
    retrained.save_pretrained(changed, tokenizer=tokenizer)
    second = push_model(changed, "org/tk-versions", revision="v2", commit_message="Retrain").oid

    branches = {b.name: b.target_commit for b in HfApi().list_repo_refs("org/tk-versions").branches}
    assert branches == {"main": first, "v2": second}
    on_main = AutoModel.from_pretrained("org/tk-versions")
    pinned = AutoModel.from_pretrained("org/tk-versions", revision=second)
    torch.testing.assert_close(on_main.score(QUERIES, PASSAGES, tokenizer), model.score(QUERIES, PASSAGES, tokenizer))
    torch.testing.assert_close(
        pinned.score(QUERIES, PASSAGES, tokenizer), retrained.score(QUERIES, PASSAGES, tokenizer)
    )
    on_branch = AutoModel.from_pretrained("org/tk-versions", revision="v2")
    torch.testing.assert_close(
        on_branch.score(QUERIES, PASSAGES, tokenizer), pinned.score(QUERIES, PASSAGES, tokenizer)
    )

    answered = len(hub_server.requests)
    offline = AutoModel.from_pretrained("org/tk-versions", revision=first, local_files_only=True)
    assert len(hub_server.requests) == answered
    torch.testing.assert_close(offline.score(QUERIES, PASSAGES, tokenizer), model.score(QUERIES, PASSAGES, tokenizer))


@pytest.mark.parametrize("failure", [500, None], ids=["server-error", "connection-dropped"])
def test_failed_upload_leaves_the_checkpoint_untouched(
    failure, checkpoints, hub_server, staging_under_tmp_path, tmp_path
):
    _, folder = checkpoints["bert_dot"]
    before = _folder_state(folder)
    hub_server.fail_requests("POST", r"/api/models/org/flaky/commit/", status=failure)
    with pytest.raises(HubUploadError, match="is unchanged; run the upload again") as failed:
        push_model(folder, "org/flaky")
    if failure == 500:
        assert failed.value.__cause__.response.status_code == 500
    else:
        assert isinstance(failed.value.__cause__, httpx2.RemoteProtocolError)
    assert _folder_state(folder) == before
    assert hub_server.commit_count("org/flaky") == 1  # only the repository's initial commit
    assert list((tmp_path / "tmp").iterdir()) == []  # the staging folder is gone
    assert push_model(folder, "org/flaky").oid == model_info("org/flaky").sha  # the next try goes through


def test_push_without_a_token_fails_before_any_request(checkpoints, hub_server, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(HubTokenError, match="No Hugging Face token found: pass token=.*HF_TOKEN"):
        push_model(checkpoints["bert_dot"][1], "org/no-token")
    assert hub_server.requests == []
    with pytest.raises(HfHubHTTPError, match="Invalid credentials"):
        push_model(checkpoints["bert_dot"][1], "org/no-token", token="hf_not_a_token")


def test_push_rejects_incomplete_checkpoints(checkpoints, tmp_path):
    _, folder = checkpoints["colbert"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        push_model(tmp_path / "missing", "org/x")
    incomplete = tmp_path / "no-tokenizer"
    incomplete.mkdir()
    for name in ("config.json", "model.safetensors"):
        (incomplete / name).write_bytes((folder / name).read_bytes())
    with pytest.raises(FileNotFoundError, match="has no tokenizer"):
        push_model(incomplete, "org/x")
    (incomplete / "tokenizer.json").write_bytes((folder / "tokenizer.json").read_bytes())
    with pytest.raises(FileNotFoundError, match=r"auto_map names configuration_colbert.py, which is not in"):
        push_model(incomplete, "org/x")
    config = json.loads((folder / "config.json").read_text())
    del config["auto_map"]
    (incomplete / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="no auto_map"):
        push_model(incomplete, "org/x")


# ---- push_scores --------------------------------------------------------------------------------------------------

SCORE_ROWS = {
    "query": ["what is a cat", "capital of france", "speed of light", "who wrote hamlet", "boiling point"],
    "positive": ["a cat is a small mammal", "paris is the capital", "about 300000 km/s", "shakespeare", "100 C"],
    "negative": ["dogs bark", "lyon is a city", "sound is slower", "marlowe", "ice melts at 0 C"],
    "pos_score": [7.5, 9.25, 3.0, 6.125, 4.5],
    "neg_score": [-1.0, 0.5, 2.75, 1.25, -3.5],
}


def _rows(columns: dict[str, list]) -> list[dict]:
    return [dict(zip(columns, values)) for values in zip(*columns.values())]


@pytest.mark.parametrize("layout", ["save_to_disk", "parquet"])
def test_push_scores_then_load_dataset(layout, hub_server, tmp_path, staging_under_tmp_path):
    folder = tmp_path / "scores"
    table = datasets.Dataset.from_dict(SCORE_ROWS)  # float64 scores: cast to the schema's float32 on upload
    if layout == "save_to_disk":
        table.save_to_disk(str(folder))
    else:
        (folder / "data").mkdir(parents=True)
        table.select(range(3)).to_parquet(folder / "data" / "part-0.parquet")
        table.select(range(3, 5)).to_parquet(folder / "data" / "part-1.parquet")
    Provenance(
        format="paper-text",
        schema="scored_triples",
        source_files=["/home/someone/msmarco/scores.tsv"],
        teachers=["org/bert-cat-teacher@0123abc"],
        rows=5,
    ).save(folder)

    push_scores(folder, "org/scores", max_shard_rows=2)
    files = hub_server.repo_files("org/scores", repo_type="dataset")
    assert sorted(name for name in files if name.startswith("data/")) == [
        f"data/train-0000{i}-of-00003.parquet" for i in range(3)
    ]
    assert json.loads(files["hf_kd_provenance.json"])["source_files"] == ["scores.tsv"]

    loaded = datasets.load_dataset("org/scores")
    assert list(loaded) == ["train"]
    assert loaded["train"].features["pos_score"] == datasets.Value("float32")
    assert loaded["train"].to_dict() == SCORE_ROWS
    assert list(datasets.load_dataset("org/scores", split="train", streaming=True)) == _rows(SCORE_ROWS)

    card = DatasetCard(files["README.md"].decode())
    assert card.data.license == "other"
    assert "org/bert-cat-teacher@0123abc" in card.text and "`scores.tsv`" in card.text
    assert "5 rows of the hf-kd schema `scored_triples`, in 3 Parquet shards" in card.text
    card.validate()


def test_push_scores_id_form_with_texts(hub_server, tmp_path, staging_under_tmp_path):
    folder = tmp_path / "ids"
    (folder / "data").mkdir(parents=True)
    (folder / "texts").mkdir()
    ids = {
        "query_id": ["q1", "q2"],
        "positive_id": ["p1", "p2"],
        "negative_id": ["p2", "p1"],
        "pos_score": [1.5, 2.0],
        "neg_score": [0.5, -1.0],
    }
    datasets.Dataset.from_dict(ids).to_parquet(folder / "data" / "train-00000-of-00001.parquet")
    datasets.Dataset.from_dict({"id": ["q1", "q2"], "text": ["cat?", "dog?"]}).to_parquet(
        folder / "texts" / "queries.parquet"
    )
    datasets.Dataset.from_dict({"id": ["p1", "p2"], "text": ["a cat", "a dog"]}).to_parquet(
        folder / "texts" / "collection.parquet"
    )

    push_scores(folder, "org/score-ids")
    assert datasets.load_dataset("org/score-ids", split="train").to_dict() == ids
    queries = datasets.load_dataset("org/score-ids", "queries", split="train")
    assert queries.to_dict() == {"id": ["q1", "q2"], "text": ["cat?", "dog?"]}
    card = DatasetCard(hub_server.repo_files("org/score-ids", repo_type="dataset")["README.md"].decode())
    assert "ScoreDataset.open(" in card.text


def test_push_scores_keeps_each_teachers_columns(hub_server, tmp_path, staging_under_tmp_path):
    folder = tmp_path / "ensemble"
    rows = {**SCORE_ROWS, "pos_score_a": [1.0, 2.0, 3.0, 4.0, 5.0], "neg_score_a": [0.5, 1.5, 2.5, 3.5, 4.5]}
    rows.update(pos_score_b=[2.0] * 5, neg_score_b=[0.0] * 5)
    datasets.Dataset.from_dict(rows).save_to_disk(str(folder))

    push_scores(folder, "org/ensemble")
    loaded = datasets.load_dataset("org/ensemble", split="train")
    assert loaded.to_dict() == rows
    assert loaded.features["pos_score_b"] == datasets.Value("float32")
    card = DatasetCard(hub_server.repo_files("org/ensemble", repo_type="dataset")["README.md"].decode())
    assert "teacher `a`'s raw score of (query, positive)" in card.text
    card.validate()


def test_push_scores_rejects_unknown_columns(hub_server, tmp_path):
    folder = tmp_path / "other"
    datasets.Dataset.from_dict({"question": ["q"], "answer": ["a"]}).save_to_disk(str(folder))
    with pytest.raises(ValueError, match=r"columns \['answer', 'question'\] match no teacher-score schema"):
        push_scores(folder, "org/other")
    with pytest.raises(FileNotFoundError, match="holds no teacher scores"):
        push_scores(tmp_path, "org/other")
    assert hub_server.requests == []


# ---- command line -------------------------------------------------------------------------------------------------


def test_cli_push_and_push_scores(checkpoints, hub_server, tmp_path, staging_under_tmp_path, capsys, monkeypatch):
    parser = build_parser()
    args = parser.parse_args(["push", "DIR", "--repo-id", "org/m", "--dataset", "a/b", "--dataset", "c/d"])
    assert (args.folder, args.repo_id, args.dataset, args.private) == ("DIR", "org/m", ["a/b", "c/d"], False)
    assert callable(args.func)

    _, folder = checkpoints["bert_cat"]
    assert main(["push", str(folder), "--repo-id", "org/cli-cat", "--dataset", "org/cli-scores", "--private"]) == 0
    info = HfApi().model_info("org/cli-cat")
    assert info.private is True
    assert info.card_data.datasets == ["org/cli-scores"]
    assert info.sha in capsys.readouterr().out

    datasets.Dataset.from_dict(SCORE_ROWS).save_to_disk(str(tmp_path / "scores"))
    monkeypatch.delenv("HF_TOKEN")
    assert main(["push-scores", str(tmp_path / "scores"), "--repo-id", "org/cli-scores"]) == 2
    assert "error: No Hugging Face token found" in capsys.readouterr().err
    monkeypatch.setenv("HF_TOKEN", hub_server.token)
    assert main(["push-scores", str(tmp_path / "scores"), "--repo-id", "org/cli-scores", "--teacher", "t/a"]) == 0
    assert datasets.load_dataset("org/cli-scores", split="train").to_dict() == SCORE_ROWS


def test_push_refuses_a_symlink_out_of_the_folder_and_follows_one_inside(
    checkpoints, hub_server, tmp_path, staging_under_tmp_path
):
    folder = tmp_path / "checkpoint"
    shutil.copytree(checkpoints["bert_dot"][1], folder)
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the Hub")
    (folder / "notes.txt").symlink_to(secret)
    with pytest.raises(ValueError) as refused:
        push_model(folder, "org/links")
    assert str(refused.value) == (
        f"{folder / 'notes.txt'} is a symbolic link to {secret}, outside {folder}; only files inside the folder are "
        "uploaded: copy the file into the folder or remove the link"
    )
    assert hub_server.requests == []  # refused before any request

    (folder / "notes.txt").unlink()
    (folder / "metrics-copy.json").symlink_to(folder / "metrics.json")
    push_model(folder, "org/links")
    local = hf_hub_download("org/links", "metrics-copy.json")
    assert Path(local).read_text() == (folder / "metrics.json").read_text()


def test_unreachable_endpoint_is_one_line(checkpoints, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", "hf_x")
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(
        HubUploadError, match=r"^cannot reach http://127.0.0.1:9 to create the model repository org/x: "
    ):
        push_model(checkpoints["bert_dot"][1], "org/x")
    assert main(["push", str(checkpoints["bert_dot"][1]), "--repo-id", "org/x"]) == 1
    assert (
        capsys.readouterr()
        .err.splitlines()[-1]
        .startswith("error: cannot reach http://127.0.0.1:9 to create the model repository org/x: ")
    )


def test_the_colbert_card_describes_the_scoring_of_its_config(tmp_path, tokenizer):
    backbone = BertConfig(**TINY_BACKBONE, intermediate_size=64)
    cards = {}
    for name, overrides in {
        "paper": {},
        "cosine": {"normalize_embeddings": True, "mean_maxsim": True, "query_augmentation_tokens": 0},
    }.items():
        model = hf_kd.ColBERTModel(hf_kd.ColBERTConfig(backbone_config=backbone, compression_dim=16, **overrides))
        model.save_pretrained(tmp_path / name, tokenizer=tokenizer)
        cards[name] = render_model_card(tmp_path / name, f"org/{name}").text
    assert "(followed by 8 `[MASK]` tokens" in cards["paper"] and "`sum_i max_j q_i . p_j`" in cards["paper"]
    assert "L2-normalised" not in cards["paper"] and "MeanMaxSim" not in cards["paper"]
    assert "[MASK]" not in cards["cosine"] and "L2-normalised" in cards["cosine"]
    assert "`(1/|q|) sum_i max_j q_i . p_j` (MeanMaxSim" in cards["cosine"]
