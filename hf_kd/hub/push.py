"""Publishing hf-kd checkpoints and teacher-score datasets on the Hugging Face Hub.

Each upload is made with `HfApi.upload_folder` from a temporary staging folder: the files of the checkpoint
are linked into it (teacher scores are rewritten into it as Parquet shards) next to the rendered card, so the
user's folder is only read, whether the upload succeeds or fails.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import CommitInfo, DatasetCard, HfApi, ModelCard
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils import get_token

from ..files import read_json_file
from .cards import render_model_card
from .dataset_card import render_dataset_card

try:
    import httpx2 as httpx
except ImportError:  # huggingface_hub 1.x sends its requests with httpx
    import httpx

__all__ = ["CHECKPOINT_IGNORE_PATTERNS", "HubTokenError", "HubUploadError", "push_model", "push_scores"]


CHECKPOINT_IGNORE_PATTERNS = (
    "*.bin",  # pickled weights or training arguments: the Hub copy holds safetensors only
    "*.pt",
    "*.pth",
    "*.pkl",
    "*.pickle",
    "checkpoint-*",
    "runs",
    ".*",
)
"""Files and folders of a checkpoint folder that are not uploaded (matched against each path component)."""
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json")


class HubTokenError(RuntimeError):
    """No Hugging Face token is available for an upload."""


class HubUploadError(RuntimeError):
    """The Hub refused or failed an upload; the cause is the `HfHubHTTPError`, network or LFS transfer error."""


def _upload(api: HfApi, source: Path, repo_id: str, repo_type: str, staging: Path, **kwargs: Any) -> CommitInfo:
    """`HfApi.upload_folder` of the staging folder, with failures reported as [`HubUploadError`]."""
    try:
        return api.upload_folder(repo_id=repo_id, repo_type=repo_type, folder_path=staging, **kwargs)
    except (HfHubHTTPError, httpx.HTTPError, RuntimeError) as error:  # huggingface_hub reports LFS failures as such
        raise HubUploadError(
            f"uploading {source} to the {repo_type} repository {repo_id} failed: {error}\n"
            f"{source} is unchanged; run the upload again to retry."
        ) from error


def _create_repo(api: HfApi, repo_id: str, repo_type: str, private: bool | None, revision: str | None) -> None:
    """Creates the repository (and branch) if needed; a network failure is reported as [`HubUploadError`]."""
    try:
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        if revision is not None:
            api.create_branch(repo_id, repo_type=repo_type, branch=revision, exist_ok=True)
    except httpx.TransportError as error:
        raise HubUploadError(
            f"cannot reach {api.endpoint} to create the {repo_type} repository {repo_id}: "
            f"{error or type(error).__name__}"
        ) from error


def _require_token(token: str | None) -> str:
    token = token or get_token()
    if not token:
        raise HubTokenError(
            "No Hugging Face token found: pass token=... (--token), set the HF_TOKEN environment variable or run "
            "`hf auth login`; uploads need a token with write access."
        )
    return token


def _is_ignored(relative: Path, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatch(part, pattern) for part in relative.parts for pattern in patterns)


def _inside(source: Path, folder: Path) -> Path:
    """The real path of `source`, which must lie inside `folder`; a symbolic link out of it is refused."""
    real = source.resolve()
    if not real.is_relative_to(folder.resolve()):
        raise ValueError(
            f"{source} is a symbolic link to {real}, outside {folder}; only files inside the folder are uploaded: "
            "copy the file into the folder or remove the link"
        )
    return real


def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.symlink(source.resolve(), target)
    except OSError:  # file systems without symbolic links
        shutil.copy2(source, target)


def _stage_folder(source: Path, staging: Path, ignore_patterns: tuple[str, ...]) -> list[str]:
    """Links every regular file of `source` not matched by `ignore_patterns` into `staging`; returns their paths.

    A symbolic link (to a file or a folder) is followed only when its target lies inside `source`; one that leads
    out of it raises `ValueError` naming it.
    """
    staged = []
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        if _is_ignored(relative, ignore_patterns):
            continue
        if path.is_symlink():
            real = _inside(path, source)
            if real.is_dir():
                for inner in sorted(p for p in real.rglob("*") if p.is_file()):
                    _link_or_copy(_inside(inner, source), staging / relative / inner.relative_to(real))
                    staged.append((relative / inner.relative_to(real)).as_posix())
                continue
        if path.is_file():
            _link_or_copy(path, staging / relative)
            staged.append(relative.as_posix())
    return staged


def check_checkpoint_folder(folder: Path) -> dict[str, Any]:
    """Checks that `folder` is a complete hf-kd checkpoint; returns its config.

    Raises:
        FileNotFoundError: the folder, its config, its safetensors weights, its tokenizer or the modeling
            code named by `auto_map` is missing.
        ValueError: the config has no `auto_map`.
    """
    if not folder.is_dir():
        raise FileNotFoundError(f"checkpoint folder {folder} does not exist")
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} not found: save the model with save_pretrained first")
    config = read_json_file(config_path)
    if not list(folder.glob("*.safetensors")):
        raise FileNotFoundError(
            f"{folder} has no *.safetensors weights; save with save_pretrained (safetensors is the default)"
        )
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise FileNotFoundError(
            f"{folder} has no tokenizer ({', '.join(TOKENIZER_FILES)}); pass tokenizer=... to save_pretrained"
        )
    auto_map = config.get("auto_map")
    if not isinstance(auto_map, dict) or "AutoModel" not in auto_map:
        raise ValueError(
            f"{config_path}: no auto_map with AutoModel, so the Hub copy would not load with trust_remote_code; "
            "save the model with an hf-kd model class (import hf_kd registers them)"
        )
    for reference in auto_map.values():
        module = str(reference).split("--")[-1].rsplit(".", 1)[0]
        if not (folder / f"{module}.py").is_file():
            raise FileNotFoundError(f"{config_path}: auto_map names {module}.py, which is not in {folder}")
    return config


def push_model(
    folder: str | os.PathLike,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    token: str | None = None,
    commit_message: str = "Upload hf-kd checkpoint",
    card: ModelCard | str | None = None,
    metrics: Sequence[str | os.PathLike] = (),
    **card_fields: Any,
) -> CommitInfo:
    """Uploads a checkpoint folder to a model repository of the Hub, with its model card, in one commit.

    The upload holds the safetensors weights, the tokenizer, `config.json` with its `auto_map`, the modeling
    code, the sentence-transformers files the checkpoint has, any `metrics.json`, `hf_kd_evaluations.json`,
    `latency.json` and `train_summary.json`, and a `README.md` rendered from `model_cards/<architecture>.md`.
    Pickled files (`*.bin`, `*.pt`, ...), `checkpoint-*` folders and hidden files are left out (see
    [`CHECKPOINT_IGNORE_PATTERNS`]). The folder itself is only read: a failed upload leaves it as it was.

    Args:
        folder (`str` or `os.PathLike`): a checkpoint saved by an hf-kd model's `save_pretrained`.
        repo_id (`str`): `ORG/NAME`; the repository is created if it does not exist.
        private (`bool`, *optional*, defaults to `False`): create the repository as private.
        revision (`str`, *optional*): the branch to commit to (created from `main` if missing); `main` by default.
        token (`str`, *optional*): a write token; defaults to `HF_TOKEN` or the stored login.
        commit_message (`str`, *optional*): the commit's summary.
        card (`ModelCard` or `str`, *optional*): the card to upload instead of the rendered one; a `README.md`
            inside the folder is replaced by the rendered card unless it is passed here.
        metrics (`Sequence[str | os.PathLike]`, *optional*): `metrics.json` files of `hf-kd evaluate` outside the
            folder for the card's model-index, besides those in the folder and those `hf-kd evaluate --model
            FOLDER` recorded in `hf_kd_evaluations.json`.
        **card_fields: user-given card fields: `license`, `base_model`, `datasets`, `teacher`, `language`
            (see [`hf_kd.hub.ModelCardInfo`]).

    Returns:
        `huggingface_hub.CommitInfo` of the commit (its `oid` is the revision to pin).

    Raises:
        HubTokenError: no token is available (raised before any request).
        FileNotFoundError, ValueError: the folder is not a complete checkpoint.
        huggingface_hub.errors.HfHubHTTPError: the repository cannot be created or written to (e.g. 401, 403).
        HubUploadError: the upload itself failed (server error, broken connection, LFS transfer), or the Hub cannot
            be reached; the folder is unchanged.
        ValueError: a symbolic link in the folder leads out of it (nothing is uploaded).
    """
    folder = Path(folder)
    check_checkpoint_folder(folder)
    if card is None:
        card = render_model_card(folder, repo_id, revision=revision or "main", metrics_files=metrics, **card_fields)
    token = _require_token(token)
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="hf-kd-push-") as staging:
        staging = Path(staging)
        _stage_folder(folder, staging, CHECKPOINT_IGNORE_PATTERNS + ("README.md",))  # before any request
        (staging / "README.md").write_text(str(card), encoding="utf-8")
        _create_repo(api, repo_id, "model", private, revision)
        return _upload(api, folder, repo_id, "model", staging, revision=revision, commit_message=commit_message)


# --------------------------------------------------------------------------------------------------------------------
# Teacher-score datasets
# --------------------------------------------------------------------------------------------------------------------


def push_scores(
    dataset_dir: str | os.PathLike,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    token: str | None = None,
    commit_message: str = "Upload hf-kd teacher scores",
    card: DatasetCard | str | None = None,
    max_shard_rows: int = 1_000_000,
    **card_fields: Any,
) -> CommitInfo:
    """Uploads a teacher-score dataset to a dataset repository of the Hub as Parquet shards, with its card.

    `datasets.load_dataset(repo_id)` then returns the same rows, in the same order, with the hf-kd schema's
    features (scores as float32), in memory-mapped and streaming mode. The rows are written as
    `data/train-XXXXX-of-YYYYY.parquet`; the texts of an id form (`texts/queries.parquet`,
    `texts/collection.parquet`) become the `queries` and `collection` configurations, and
    `hf_kd_provenance.json` is uploaded with its source files reduced to their names.

    Args:
        dataset_dir (`str` or `os.PathLike`): a teacher-score dataset written by `hf_kd.data` (Parquet shards
            or `save_to_disk`), or any such folder whose columns match an hf-kd schema.
        repo_id (`str`): `ORG/NAME`; the dataset repository is created if it does not exist.
        private (`bool`, *optional*, defaults to `False`): create the repository as private.
        revision (`str`, *optional*): the branch to commit to (created from `main` if missing).
        token (`str`, *optional*): a write token; defaults to `HF_TOKEN` or the stored login.
        commit_message (`str`, *optional*): the commit's summary.
        card (`DatasetCard` or `str`, *optional*): the card to upload instead of the rendered one.
        max_shard_rows (`int`, *optional*, defaults to 1,000,000): rows per Parquet shard.
        **card_fields: `license`, `pretty_name`, `teachers` (override the provenance), `language`.

    Returns:
        `huggingface_hub.CommitInfo` of the commit.

    Raises:
        HubTokenError: no token is available (raised before any request).
        FileNotFoundError, ValueError: the folder holds no teacher scores, or columns that match no schema.
        huggingface_hub.errors.HfHubHTTPError: the repository cannot be created or written to (e.g. 401, 403).
        HubUploadError: the upload itself failed (server error, broken connection); the folder is unchanged.
    """
    from ..data.schemas import SCHEMAS, schema_of_columns, with_per_teacher_columns
    from ..data.score_dataset import ScoreDataset

    dataset_dir = Path(dataset_dir)
    if not dataset_dir.is_dir():
        raise FileNotFoundError(f"dataset folder {dataset_dir} does not exist")
    scores = ScoreDataset(dataset_dir)
    features = scores.features
    schema_name = schema_of_columns(features)
    features = with_per_teacher_columns(SCHEMAS[schema_name], features)
    provenance = scores.provenance
    token = _require_token(token)
    texts = [path.relative_to(dataset_dir).as_posix() for path in scores.text_files().values()]
    api = HfApi(token=token)
    _create_repo(api, repo_id, "dataset", private, revision)
    with tempfile.TemporaryDirectory(prefix="hf-kd-push-scores-") as staging:
        staging = Path(staging)
        shards = ScoreDataset.write_shards(scores.record_batches(), features, staging, max_shard_rows)
        for text_file in texts:
            _link_or_copy(_inside(dataset_dir / text_file, dataset_dir), staging / text_file)
        if provenance is not None:
            provenance.source_files = [Path(path).name for path in provenance.source_files]
            provenance.save(staging)
        if card is None:
            card = render_dataset_card(
                repo_id,
                schema_name=schema_name,
                num_rows=scores.num_rows,
                shards=shards,
                text_files=texts,
                provenance=provenance,
                revision=revision or "main",
                features=features,
                **card_fields,
            )
        (staging / "README.md").write_text(str(card), encoding="utf-8")
        return _upload(api, dataset_dir, repo_id, "dataset", staging, revision=revision, commit_message=commit_message)
