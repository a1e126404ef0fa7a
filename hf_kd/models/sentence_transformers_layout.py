"""The sentence-transformers files of a checkpoint folder: JSON files that make a saved BERT_DOT, BERT_CAT or ColBERT
folder loadable by sentence-transformers as well (`SentenceTransformer`, `CrossEncoder`, `MultiVectorEncoder`).

Each layout is a function of the model's config, keyed by its `model_type`; `RankingPreTrainedModel.save_pretrained`
writes them with `write_sentence_transformers_files`. Only the standard library: this file is copied with the
modeling code into every checkpoint folder, so it also holds the folder's own file helpers: an atomic JSON writer
whose files get the mode a plain `open()` gives under the user's umask, and [`give_plain_file_modes`], which gives
that mode to the files a library wrote through a private temporary file (safetensors writes `model.safetensors`
with mode 0o600).
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from collections.abc import Callable
from typing import Any

from .configuration_ranking import RankingConfig

Layout = dict[str, Any]  # relative path in the checkpoint folder -> JSON content

TRANSFORMER = "sentence_transformers.base.modules.transformer.Transformer"
NORMALIZE = "sentence_transformers.base.modules.normalize.Normalize"


def bert_dot_layout(config: RankingConfig) -> Layout:
    """A `SentenceTransformer` pipeline: Transformer over `embed_tokens` -> CLS or mean pooling -> [Normalize when
    `normalize_embeddings`], dot-product similarity."""
    query_length = config.max_query_length + 2
    document_length = config.max_passage_length + 2
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": TRANSFORMER},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.sentence_transformer.modules.pooling.Pooling",
        },
    ]
    if config.normalize_embeddings:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": NORMALIZE})
    return {
        "modules.json": modules,
        "sentence_bert_config.json": {
            "transformer_task": "feature-extraction",
            "modality_config": {"text": {"method": "embed_tokens", "method_output_name": "last_hidden_state"}},
            "module_output_name": "token_embeddings",
            "max_seq_length": document_length,
            "query_length": query_length,
            "document_length": document_length,
        },
        "1_Pooling/config.json": {
            "embedding_dimension": config.embedding_dim,
            "pooling_mode": config.pooling,
            "include_prompt": True,
        },
        "config_sentence_transformers.json": {
            "model_type": "SentenceTransformer",
            "prompts": {"query": "", "document": ""},
            "default_prompt_name": None,
            "similarity_fn_name": "dot",
        },
    }


def bert_cat_layout(config: RankingConfig) -> Layout:
    """A `CrossEncoder` pipeline over `forward`: raw scores (identity activation), pairs truncated to the lengths of
    `prepare_inputs`."""
    return {
        "modules.json": [{"idx": 0, "name": "0", "path": "", "type": TRANSFORMER}],
        "sentence_bert_config.json": {
            "transformer_task": "feature-extraction",
            "modality_config": {"text": {"method": "forward", "method_output_name": "scores"}},
            "module_output_name": "scores",
            "max_seq_length": config.max_query_length + config.max_passage_length + 3,
        },
        "config_sentence_transformers.json": {
            "model_type": "CrossEncoder",
            "activation_fn": "torch.nn.modules.linear.Identity",
            "prompts": {},
            "default_prompt_name": None,
        },
    }


def colbert_chat_template(query_augmentation_tokens: int) -> str:
    """The Jinja template through which sentence-transformers' `MultiVectorEncoder` tokenises a ColBERT checkpoint:
    `[CLS] text [SEP]`, followed for queries (`task == "query"`) by `query_augmentation_tokens` [MASK] tokens.

    Message contents are concatenated in order, so a prompt (a system message) is prepended to the text as it
    would be on the plain-text path. The special tokens are the tokenizer's own (`cls_token`, `sep_token`,
    `mask_token` are template variables of `apply_chat_template`).
    """
    augmentation = f"{{{{ mask_token * {query_augmentation_tokens} }}}}" if query_augmentation_tokens else ""
    return (
        "{{ cls_token }}{% for message in messages %}{{ message['content'] }}{% endfor %}{{ sep_token }}"
        f"{{% if task == 'query' %}}{augmentation}{{% endif %}}"
    )


def colbert_layout(config: RankingConfig) -> Layout:
    """A `MultiVectorEncoder` pipeline whose token vectors and MaxSim scores equal the model's (see the
    `ColBERTModel` docstring for how queries are tokenised)."""
    query_length = config.max_query_length + 2 + config.query_augmentation_tokens
    document_length = config.max_passage_length + 2
    module_types = [("", TRANSFORMER)]
    if config.normalize_embeddings:
        module_types.append(("Normalize", NORMALIZE))
    module_types.append(
        ("MultiVectorMask", "sentence_transformers.multi_vector_encoder.modules.multi_vector_mask.MultiVectorMask")
    )
    modules, layout = [], {}
    for idx, (name, class_ref) in enumerate(module_types):
        path = f"{idx}_{name}" if name else ""
        modules.append({"idx": idx, "name": str(idx), "path": path, "type": class_ref})
        if name == "Normalize":
            layout[f"{path}/config.json"] = {
                "module_input_name": "token_embeddings",
                "module_output_name": "token_embeddings",
            }
        elif name == "MultiVectorMask":
            layout[f"{path}/config.json"] = {
                "skiplist_words": [],
                "skiplist_tasks": ["document"],
                "keep_only_token_ids": None,
            }
    embed = {"method": "embed_tokens", "method_output_name": "last_hidden_state"}
    layout.update(
        {
            "modules.json": modules,
            "sentence_bert_config.json": {
                "transformer_task": "feature-extraction",
                "modality_config": {"text": embed, "message": {**embed, "format": "flat"}},
                "module_output_name": "token_embeddings",
                "processor_kwargs": {"chat_template": colbert_chat_template(config.query_augmentation_tokens)},
                "max_seq_length": document_length,
                "query_length": query_length,
                "document_length": document_length,
                "query_expansion": None,
            },
            "config_sentence_transformers.json": {
                "model_type": "MultiVectorEncoder",
                "prompts": {"query": "", "document": ""},
                "default_prompt_name": None,
                "similarity_fn_name": "meanmaxsim" if config.mean_maxsim else "maxsim",
            },
        }
    )
    return layout


# config `model_type` -> layout builder; the architectures sentence-transformers has no class for (PreTT, TK) are
# absent. The keys are written out rather than read from the config classes so that this file imports no
# architecture's configuration (each checkpoint folder gets only its own architecture's code).
LAYOUTS: dict[str, Callable[[RankingConfig], Layout]] = {
    "hfkd_bert_dot": bert_dot_layout,
    "hfkd_bert_cat": bert_cat_layout,
    "hfkd_colbert": colbert_layout,
}


def sentence_transformers_files(config: RankingConfig) -> Layout:
    """Files (relative path -> JSON content) that make the checkpoint folder of a model with this config loadable by
    sentence-transformers as well; empty for architectures it has no class for."""
    builder = LAYOUTS.get(config.model_type)
    return {} if builder is None else builder(config)


_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)


def _open_new_file(folder: str, suffix: str) -> tuple[int, str]:
    """Opens a new file `folder/.<random><suffix>` for writing, with the mode a plain `open()` gives (0o666 less the
    umask; `tempfile.mkstemp` would give 0o600, kept by the rename into place)."""
    for _ in range(10_000):
        path = os.path.join(folder, f".{secrets.token_hex(6)}{suffix}")
        try:
            return os.open(path, _NEW_FILE_FLAGS, 0o666), path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name .*{suffix} in {folder}")


def write_json_atomic(path: str, content: Any) -> None:
    """Writes JSON through a temporary file in the same folder, so a crash never leaves a half-written file; the file
    gets the mode a plain `open()` gives under the current umask."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fd, tmp = _open_new_file(os.path.dirname(path) or ".", ".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(content, f, indent=2)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def file_versions(folder: str | os.PathLike) -> dict[str, tuple[int, int]]:
    """(inode, modification time) of each file directly in `folder` (none when it does not exist): what
    [`give_plain_file_modes`] compares with to find the files written since."""
    if not os.path.isdir(folder):
        return {}
    with os.scandir(folder) as entries:
        return {
            entry.path: (info.st_ino, info.st_mtime_ns)
            for entry in entries
            if entry.is_file(follow_symlinks=False)
            for info in [entry.stat(follow_symlinks=False)]
        }


def _plain_file_mode(folder: str | os.PathLike) -> int:
    """The permission bits a file created with a plain `open()` gets in `folder` (the umask, or the folder's default
    ACL), read from a probe file that is removed at once."""
    fd, probe = _open_new_file(os.fspath(folder), ".mode")
    try:
        return stat.S_IMODE(os.fstat(fd).st_mode)
    finally:
        os.close(fd)
        os.unlink(probe)


def give_plain_file_modes(folder: str | os.PathLike, before: dict[str, tuple[int, int]]) -> list[str]:
    """Gives the files directly in `folder` that were created or replaced since [`file_versions`] returned `before`
    the mode a plain `open()` gives there, where theirs differs (a file written through `tempfile` is 0o600 whatever
    the umask); returns the paths changed."""
    changed = []
    mode = None
    for path, version in file_versions(folder).items():
        if before.get(path) == version:
            continue
        mode = _plain_file_mode(folder) if mode is None else mode
        if stat.S_IMODE(os.stat(path, follow_symlinks=False).st_mode) != mode:
            os.chmod(path, mode)
            changed.append(path)
    return changed


def write_sentence_transformers_files(model_or_config, save_directory: str | os.PathLike) -> list[str]:
    """Writes the sentence-transformers files of a model (or of its config) into `save_directory`; returns their
    relative paths (none for PreTT and TK)."""
    config = getattr(model_or_config, "config", model_or_config)
    files = sentence_transformers_files(config)
    for relative_path, content in files.items():
        write_json_atomic(os.path.join(save_directory, relative_path), content)
    return list(files)


__all__ = [
    "LAYOUTS",
    "bert_cat_layout",
    "bert_dot_layout",
    "colbert_chat_template",
    "colbert_layout",
    "file_versions",
    "give_plain_file_modes",
    "sentence_transformers_files",
    "write_json_atomic",
    "write_sentence_transformers_files",
]
