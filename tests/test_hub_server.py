"""The local Hub server against the real huggingface_hub, transformers, sentence-transformers and datasets."""

from __future__ import annotations

import re
from pathlib import Path

import datasets
import httpx2
import pytest
import torch
from huggingface_hub import (
    HfApi,
    get_hf_file_metadata,
    hf_hub_download,
    hf_hub_url,
    model_info,
    snapshot_download,
)
from huggingface_hub.errors import (
    HfHubHTTPError,
    LocalTokenNotFoundError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel

from tests.hub_server import HubServer, hub_server_fixture, validate_card_metadata  # noqa: F401 - fixture

TINY_BERT = {
    "vocab_size": 30522,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory, tokenizer) -> Path:
    """A randomly initialised 2-layer BERT with the MiniLM tokenizer, saved as a checkpoint folder."""
    torch.manual_seed(0)
    model = BertModel(BertConfig(**TINY_BERT)).eval()
    folder = tmp_path_factory.mktemp("tiny-bert")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _write_files(folder: Path, files: dict[str, bytes]) -> Path:
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    return folder


def test_whoami_and_create_repo(hub_server: HubServer):
    api = HfApi()
    assert api.whoami()["name"] == hub_server.user

    url = api.create_repo("org/empty")
    assert url == f"{hub_server.endpoint}/org/empty"
    assert url.repo_id == "org/empty"
    with pytest.raises(HfHubHTTPError) as conflict:
        api.create_repo("org/empty")
    assert conflict.value.response.status_code == 409
    assert api.create_repo("org/empty", exist_ok=True).repo_id == "org/empty"

    info = api.model_info("org/empty")
    assert re.fullmatch(r"[0-9a-f]{40}", info.sha)
    assert [s.rfilename for s in info.siblings] == [".gitattributes"]

    dataset_url = api.create_repo("org/empty-scores", repo_type="dataset")
    assert dataset_url == f"{hub_server.endpoint}/datasets/org/empty-scores"
    assert api.dataset_info("org/empty-scores").id == "org/empty-scores"


def test_upload_folder_then_download(hub_server: HubServer, tmp_path: Path):
    files = {
        "README.md": b"---\nlicense: apache-2.0\ntags:\n- passage-ranking\n---\n# A model\n",
        "config.json": b'{"model_type": "bert", "architectures": ["BertModel"]}',
        "model.safetensors": bytes(range(256)) * 40,
        "nested/notes.txt": b"regular file in a folder",
    }
    folder = _write_files(tmp_path / "upload", files)
    api = HfApi()
    api.create_repo("org/model")
    commit = api.upload_folder(repo_id="org/model", folder_path=folder, commit_message="Add files")
    assert re.fullmatch(r"[0-9a-f]{40}", commit.oid)

    info = model_info("org/model", files_metadata=True)
    assert info.sha == commit.oid
    siblings = {s.rfilename: s for s in info.siblings}
    assert set(siblings) == {".gitattributes", *files}
    assert siblings["model.safetensors"].lfs.sha256 is not None  # *.safetensors goes through Git LFS
    assert siblings["model.safetensors"].size == len(files["model.safetensors"])
    assert siblings["config.json"].lfs is None
    assert info.card_data.license == "apache-2.0"
    assert "passage-ranking" in info.tags
    assert info.config["architectures"] == ["BertModel"]

    for name, content in files.items():
        assert Path(hf_hub_download("org/model", name)).read_bytes() == content
    snapshot = Path(snapshot_download("org/model"))
    assert snapshot.name == commit.oid
    for name, content in files.items():
        assert (snapshot / name).read_bytes() == content
    assert hub_server.repo_files("org/model")["model.safetensors"] == files["model.safetensors"]


def test_head_answers_like_the_hub(hub_server: HubServer, tmp_path: Path):
    folder = _write_files(tmp_path / "upload", {"a.txt": b"hello", "w.safetensors": b"\0" * 1000})
    api = HfApi()
    api.create_repo("org/heads")
    sha = api.upload_folder(repo_id="org/heads", folder_path=folder).oid

    regular = get_hf_file_metadata(hf_hub_url("org/heads", "a.txt"))
    assert regular.commit_hash == sha
    assert regular.size == 5
    assert regular.etag == api.get_paths_info("org/heads", "a.txt")[0].blob_id  # git blob sha1

    lfs = get_hf_file_metadata(hf_hub_url("org/heads", "w.safetensors"))
    assert lfs.commit_hash == sha
    assert lfs.size == 1000
    assert lfs.etag == api.get_paths_info("org/heads", "w.safetensors")[0].lfs.sha256
    assert lfs.location.startswith(hub_server.storage_url)  # a redirect to the blob storage

    partial = httpx2.get(hf_hub_url("org/heads", "a.txt"), headers={"Range": "bytes=1-3"})
    assert partial.status_code == 206
    assert partial.content == b"ell"


def test_revision_pinning(hub_server: HubServer, tmp_path: Path):
    api = HfApi()
    api.create_repo("org/versions")
    folder = tmp_path / "upload"
    first = api.upload_folder(repo_id="org/versions", folder_path=_write_files(folder, {"v.txt": b"one"})).oid
    api.create_tag("org/versions", tag="v1", revision=first)
    second = api.upload_folder(repo_id="org/versions", folder_path=_write_files(folder, {"v.txt": b"two"})).oid

    assert first != second
    assert Path(hf_hub_download("org/versions", "v.txt")).read_text() == "two"
    assert Path(hf_hub_download("org/versions", "v.txt", revision=first)).read_text() == "one"
    assert Path(hf_hub_download("org/versions", "v.txt", revision="v1")).read_text() == "one"
    assert Path(snapshot_download("org/versions", revision=first), "v.txt").read_text() == "one"
    assert api.model_info("org/versions", revision=first).sha == first
    assert [c.commit_id for c in api.list_repo_commits("org/versions")][:2] == [second, first]
    refs = api.list_repo_refs("org/versions")
    assert [(b.name, b.target_commit) for b in refs.branches] == [("main", second)]
    assert [(t.name, t.target_commit) for t in refs.tags] == [("v1", first)]

    api.create_branch("org/versions", branch="old", revision=first)
    assert Path(hf_hub_download("org/versions", "v.txt", revision="old")).read_text() == "one"
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("org/versions", "v.txt", revision="does-not-exist")
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download("org/versions", "missing.txt")


def test_tree_listing_is_paginated(hub_server: HubServer, tmp_path: Path):
    files = {f"shard-{i}.txt": str(i).encode() for i in range(5)} | {"sub/deep/x.txt": b"x"}
    api = HfApi()
    api.create_repo("org/tree")
    api.upload_folder(repo_id="org/tree", folder_path=_write_files(tmp_path / "upload", files))
    hub_server.tree_page_size = 2

    listed = sorted(f.path for f in api.list_repo_tree("org/tree", recursive=True))
    assert listed == sorted([".gitattributes", *files, "sub", "sub/deep"])
    assert sorted(f.path for f in api.list_repo_tree("org/tree", path_in_repo="sub")) == ["sub/deep"]
    assert sum("cursor=" in r.path for r in hub_server.requests) >= 3
    infos = api.get_paths_info("org/tree", ["sub", "shard-0.txt", "missing"], expand=True)
    assert [type(i).__name__ for i in infos] == ["RepoFolder", "RepoFile"]
    assert infos[1].last_commit.title == "Upload folder using huggingface_hub"


def test_transformers_from_pretrained(hub_server: HubServer, tiny_bert_dir: Path, tokenizer):
    api = HfApi()
    api.create_repo("org/tiny-bert")
    sha = api.upload_folder(repo_id="org/tiny-bert", folder_path=tiny_bert_dir).oid

    model = AutoModel.from_pretrained("org/tiny-bert").eval()
    hub_tokenizer = AutoTokenizer.from_pretrained("org/tiny-bert")
    local = BertModel.from_pretrained(tiny_bert_dir).eval()
    texts = ["what is knowledge distillation", "margin mse trains efficient rankers"]
    assert hub_tokenizer(texts)["input_ids"] == tokenizer(texts)["input_ids"]
    batch = hub_tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).last_hidden_state, local(**batch).last_hidden_state)

    pinned = AutoModel.from_pretrained("org/tiny-bert", revision=sha)
    torch.testing.assert_close(pinned.embeddings.word_embeddings.weight, local.embeddings.word_embeddings.weight)

    answered = len(hub_server.requests)
    offline = AutoModel.from_pretrained("org/tiny-bert", local_files_only=True)
    assert len(hub_server.requests) == answered  # served from the cache filled above
    torch.testing.assert_close(offline.pooler.dense.weight, local.pooler.dense.weight)


def test_sentence_transformers_loads_from_the_hub(hub_server: HubServer, tiny_bert_dir: Path, tmp_path: Path):
    from sentence_transformers import SentenceTransformer

    local = SentenceTransformer(str(tiny_bert_dir), device="cpu")
    local.save_pretrained(str(tmp_path / "st"))
    HfApi().create_repo("org/tiny-st")
    HfApi().upload_folder(repo_id="org/tiny-st", folder_path=tmp_path / "st")

    remote = SentenceTransformer("org/tiny-st", device="cpu")
    texts = ["dense retrieval", "cross-architecture distillation"]
    torch.testing.assert_close(
        remote.encode(texts, convert_to_tensor=True), local.encode(texts, convert_to_tensor=True)
    )


def test_dataset_repo_with_parquet(hub_server: HubServer, tmp_path: Path):
    rows = {
        "query": ["what is a cat", "capital of france", "speed of light"],
        "pos_score": [7.5, 9.25, 3.0],
        "neg_score": [-1.0, 0.5, 2.75],
    }
    table = datasets.Dataset.from_dict(rows)
    folder = tmp_path / "scores"
    (folder / "data").mkdir(parents=True)
    table.select([0, 1]).to_parquet(folder / "data" / "train-00000-of-00002.parquet")
    table.select([2]).to_parquet(folder / "data" / "train-00001-of-00002.parquet")
    api = HfApi()
    api.create_repo("org/scores", repo_type="dataset")
    api.upload_folder(repo_id="org/scores", repo_type="dataset", folder_path=folder)

    loaded = datasets.load_dataset("org/scores")
    assert list(loaded) == ["train"]
    assert loaded["train"].to_dict() == rows
    streamed = datasets.load_dataset("org/scores", split="train", streaming=True)
    assert list(streamed) == [dict(zip(rows, values)) for values in zip(*rows.values())]


def test_missing_or_invalid_token_is_refused(hub_server: HubServer, monkeypatch, tmp_path: Path):
    monkeypatch.delenv("HF_TOKEN")
    api = HfApi()
    with pytest.raises(LocalTokenNotFoundError, match="Token is required"):
        api.whoami()
    with pytest.raises(HfHubHTTPError, match="Authentication required") as missing:
        api.create_repo("org/no-token")
    assert missing.value.response.status_code == 401

    with pytest.raises(HfHubHTTPError, match="Invalid credentials") as invalid:
        HfApi(token="hf_not_a_token").create_repo("org/no-token")
    assert invalid.value.response.status_code == 401

    HfApi(token=hub_server.token).create_repo("org/read-only")
    folder = _write_files(tmp_path / "upload", {"a.txt": b"a"})
    with pytest.raises(HfHubHTTPError, match="read access only"):
        HfApi(token=hub_server.read_token).upload_folder(repo_id="org/read-only", folder_path=folder)
    assert hub_server.commit_count("org/read-only") == 1


def test_unknown_repo_raises_repository_not_found(hub_server: HubServer):
    with pytest.raises(RepositoryNotFoundError):
        model_info("org/does-not-exist")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("org/does-not-exist", "config.json")
    with pytest.raises(OSError, match="org/does-not-exist"):
        AutoModel.from_pretrained("org/does-not-exist")
    with pytest.raises(datasets.exceptions.DatasetNotFoundError):
        datasets.load_dataset("org/does-not-exist")
    answer = httpx2.get(f"{hub_server.endpoint}/api/models/org/does-not-exist")
    assert (answer.status_code, answer.headers["X-Error-Code"]) == (404, "RepoNotFound")


def test_private_repo_needs_the_owner_token(hub_server: HubServer, tmp_path: Path):
    api = HfApi()
    api.create_repo("org/secret", private=True)
    api.upload_folder(repo_id="org/secret", folder_path=_write_files(tmp_path / "up", {"a.txt": b"a"}))
    assert api.model_info("org/secret").private is True
    with pytest.raises(RepositoryNotFoundError):
        HfApi(token=False).model_info("org/secret")


def test_server_failures_leave_the_repo_unchanged(hub_server: HubServer, tmp_path: Path):
    api = HfApi()
    api.create_repo("org/flaky")
    folder = _write_files(tmp_path / "upload", {"a.txt": b"a", "w.safetensors": b"\0" * 2048})

    hub_server.fail_requests("POST", r"/commit/main$", status=500)
    with pytest.raises(HfHubHTTPError, match="500") as server_error:
        api.upload_folder(repo_id="org/flaky", folder_path=folder)
    assert server_error.value.response.status_code == 500
    assert hub_server.commit_count("org/flaky") == 1

    hub_server.fail_requests("POST", r"/commit/main$", status=None)
    with pytest.raises(httpx2.RemoteProtocolError):
        api.upload_folder(repo_id="org/flaky", folder_path=folder)
    assert hub_server.commit_count("org/flaky") == 1

    api.upload_folder(repo_id="org/flaky", folder_path=folder)  # the failures were one-off
    assert hub_server.commit_count("org/flaky") == 2


def test_card_metadata_validation(hub_server: HubServer, tmp_path: Path):
    valid = (
        "---\nmodel-index:\n- name: m\n  results:\n  - task: {type: text-ranking}\n"
        "    dataset: {name: DL20, type: msmarco}\n    metrics: [{type: ndcg_at_10, value: 0.7}]\n---\n"
    )
    assert validate_card_metadata(valid) == []
    assert validate_card_metadata("---\nmodel-index: {name: m}\n---\n") == ['"model-index" must be a list']
    assert validate_card_metadata("---\n[unclosed\n---\n")[0].startswith("YAML metadata could not be parsed")

    api = HfApi()
    api.create_repo("org/bad-card")
    folder = _write_files(tmp_path / "upload", {"README.md": b"---\nmodel-index: {name: m}\n---\n"})
    with pytest.raises(ValueError, match="model-index"):
        api.upload_folder(repo_id="org/bad-card", folder_path=folder)
    assert hub_server.commit_count("org/bad-card") == 1
