"""Importing the four students the paper released on the Hub into hf-kd checkpoints.

Hofstätter et al. released their Margin-MSE students (T2 teacher ensemble) as pickled `pytorch_model.bin` files
whose classes were pasted into the model cards. [`import_released`] reads such a checkpoint (a local folder or a
Hub id), recognises which of the four layouts its state dict has, renames its tensors into the matching hf-kd
architecture and saves a complete hf-kd checkpoint (safetensors, config with `auto_map`, modeling code,
tokenizer), so the paper's own weights load with `AutoModel`, sentence-transformers, `hf-kd evaluate` and
`hf-kd push`.

The layouts, read from the model cards' classes and the paper's public code (sebastian-hofstaetter/matchmaker,
neural-ranking-kd). `D` is DistilBERT's module layout: `embeddings.{word_embeddings,position_embeddings}.weight`,
`embeddings.LayerNorm.{weight,bias}` and, per layer N, `transformer.layer.N.attention.{q,k,v,out}_lin`,
`.sa_layer_norm`, `.ffn.lin1`, `.ffn.lin2`, `.output_layer_norm` (weight and bias each).

- `distilbert-dot-margin_mse-T2-msmarco`: keys `D`; config.json a DistilBERT config. Becomes `BertDotModel`
  (CLS pooling, no compression).
- `distilbert-cat-margin_mse-T2-msmarco` (card class `BERT_Cat`): keys `bert_model.D` and
  `_classification_layer.{weight,bias}` (1 x dim); config.json names the backbone in `bert_model`. Becomes
  `BertCatModel` (`classifier` = `_classification_layer`).
- `colbert-distilbert-margin_mse-T2-msmarco` (card class `ColBERT`): keys `bert_model.D` and
  `compressor.{weight,bias}` (compression_dim x dim, 768 in the release); config.json `bert_model`,
  `compression_dim`. Becomes `ColBERTModel`.
- `prettr-distilbert-split_at_3-margin_mse-T2-msmarco` (card class `PreTTR(DistilBertModel)`): keys `D` and
  `_classification_layer.weight` (1 x dim, no bias); config.json a DistilBERT config (`model_type: distilbert`),
  with `join_layer_idx` when it was set on the instance. Becomes `PreTTModel`.

What each import keeps, and the assumptions behind it:

- **Backbone configuration.** DOT and PreTTR carry a DistilBERT config. CAT and ColBERT carry only `bert_model`
  (their classes called `AutoModel.from_pretrained(cfg.bert_model)`): `distilbert-base-uncased` is the
  configuration `transformers.DistilBertConfig()` holds by default; another name or folder is read with
  `AutoConfig`. Either way the vocabulary, width, number of layers, feed-forward size and position table are
  checked against the weights' shapes.
- **ColBERT.** The released vectors are 768-d (no compression): `compression_dim` is read from `compressor.weight`.
  The card appends 8 [MASK] tokens (id 103) after `[CLS] q [SEP]` with attention 1, which take part in the MaxSim
  sum: `query_augmentation_tokens=8`. Scores are raw dot products (`normalize_embeddings=False`). The release
  masked passage padding with -10000 before the max, hf-kd with -inf (equal unless every similarity < -10000).
- **PreTTR.** Query `[CLS] q [SEP]` and passage `p [SEP]` (the passage's `[CLS]` dropped) run separately through
  layers `0..join_layer_idx-1`, then jointly; CLS -> Linear(dim, 1, no bias). The release had no compression
  layer ("we skipped compression present in the original"), so none is mapped. Its passage positions continued
  after the *padded* query tensor (`PosOffsetEmbeddings(document, query_input_ids.shape[-1])`): scoring one query
  at a time, as the card does, that is the query's own length. The imported model sets
  `passage_positions="after_query"` and uses each query's own length, so a batch scores every pair as the
  release scored it alone (the release's batched scores depended on the longest query in the batch).
  `join_layer_idx` was a class attribute of `PreTTRConfig` and is usually absent from `config.json`: 3 then.
- **Lengths.** The release left truncation to the caller; the imported models truncate at the paper's 30 query
  and 200 passage word pieces (`max_query_length`, `max_passage_length`).
- **Tokenizer.** The releases were used with `distilbert-base-uncased`'s tokenizer. The tokenizer files of the
  source are used when it has them, otherwise `tokenizer=` (a folder or Hub id).
- `embeddings.position_ids` buffers, which some transformers versions saved, are dropped; any other extra or
  missing tensor is an error that names the closest layout.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = ["RELEASED_LAYOUTS", "ReleasedLayoutError", "detect_layout", "import_released", "load_released"]

DISTILBERT_EMBEDDING_KEYS = (
    "embeddings.word_embeddings.weight",
    "embeddings.position_embeddings.weight",
    "embeddings.LayerNorm.weight",
    "embeddings.LayerNorm.bias",
)
DISTILBERT_LAYER_MODULES = (
    "attention.q_lin",
    "attention.k_lin",
    "attention.v_lin",
    "attention.out_lin",
    "sa_layer_norm",
    "ffn.lin1",
    "ffn.lin2",
    "output_layer_norm",
)
IGNORED_KEYS = ("embeddings.position_ids",)
KNOWN_BACKBONES = ("distilbert-base-uncased", "distilbert/distilbert-base-uncased")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")


@dataclass(frozen=True)
class ReleasedLayout:
    """One released model's state-dict layout.

    Attributes:
        name: `dot`, `cat`, `colbert` or `prettr`.
        repo_id: the paper's Hub repository of that model.
        architecture: the hf-kd architecture it becomes.
        backbone_prefix: prefix of the DistilBERT keys (`""` or `"bert_model."`).
        head: the head's keys in the release -> their hf-kd names.
    """

    name: str
    repo_id: str
    architecture: str
    backbone_prefix: str
    head: dict[str, str]


RELEASED_LAYOUTS = {
    layout.name: layout
    for layout in (
        ReleasedLayout("dot", "sebastian-hofstaetter/distilbert-dot-margin_mse-T2-msmarco", "bert_dot", "", {}),
        ReleasedLayout(
            "cat",
            "sebastian-hofstaetter/distilbert-cat-margin_mse-T2-msmarco",
            "bert_cat",
            "bert_model.",
            {"_classification_layer.weight": "classifier.weight", "_classification_layer.bias": "classifier.bias"},
        ),
        ReleasedLayout(
            "colbert",
            "sebastian-hofstaetter/colbert-distilbert-margin_mse-T2-msmarco",
            "colbert",
            "bert_model.",
            {"compressor.weight": "compressor.weight", "compressor.bias": "compressor.bias"},
        ),
        ReleasedLayout(
            "prettr",
            "sebastian-hofstaetter/prettr-distilbert-split_at_3-margin_mse-T2-msmarco",
            "prett",
            "",
            {"_classification_layer.weight": "classifier.weight"},
        ),
    )
}
"""The paper's four released layouts by name."""


class ReleasedLayoutError(ValueError):
    """A state dict that matches none of the released layouts (the message names the closest one)."""


# ---------------------------------------------------------------------------------------------------------------------
# Layout detection
# ---------------------------------------------------------------------------------------------------------------------


def _num_layers(keys: set[str], prefix: str) -> int:
    indices = {
        int(key[len(prefix) :].split(".")[2])
        for key in keys
        if key.startswith(f"{prefix}transformer.layer.") and key[len(prefix) :].split(".")[2].isdigit()
    }
    return max(indices) + 1 if indices else 0


def expected_keys(layout: ReleasedLayout, num_layers: int) -> list[str]:
    """The state-dict keys of `layout` with a `num_layers`-layer DistilBERT, in module order."""
    backbone = list(DISTILBERT_EMBEDDING_KEYS)
    for layer in range(num_layers):
        for module in DISTILBERT_LAYER_MODULES:
            backbone += [f"transformer.layer.{layer}.{module}.weight", f"transformer.layer.{layer}.{module}.bias"]
    return [layout.backbone_prefix + key for key in backbone] + list(layout.head)


def _mismatch(layout: ReleasedLayout, keys: set[str]) -> tuple[list[str], list[str]]:
    expected = expected_keys(layout, _num_layers(keys, layout.backbone_prefix))
    missing = [key for key in expected if key not in keys]
    expected_set = set(expected)
    unexpected = sorted(key for key in keys if key not in expected_set)
    return missing, unexpected


def detect_layout(state_dict: dict[str, torch.Tensor], source: str = "the state dict") -> ReleasedLayout:
    """The released layout whose keys `state_dict` has exactly.

    Raises:
        ReleasedLayoutError: no layout matches; the message names the closest layout and the first missing and
            unexpected keys.
    """
    keys = {key for key in state_dict if not key.endswith(IGNORED_KEYS)}
    ranked = []
    for layout in RELEASED_LAYOUTS.values():
        missing, unexpected = _mismatch(layout, keys)
        if not missing and not unexpected and _num_layers(keys, layout.backbone_prefix) > 0:
            return layout
        ranked.append((len(missing) + len(unexpected), layout.name, layout, missing, unexpected))
    _, _, closest, missing, unexpected = min(ranked, key=lambda entry: entry[:2])
    raise ReleasedLayoutError(
        f"{source} matches none of the paper's released layouts ({', '.join(RELEASED_LAYOUTS)}); closest: "
        f"{closest.name} ({closest.repo_id}): missing {missing[:3]}, unexpected {unexpected[:3]}"
    )


# ---------------------------------------------------------------------------------------------------------------------
# Reading a released checkpoint
# ---------------------------------------------------------------------------------------------------------------------


def _resolve_folder(source: str | os.PathLike, revision: str | None) -> Path:
    """A local folder, or the snapshot of a Hub model repository (config, weights, tokenizer files only)."""
    path = Path(source)
    if path.is_dir():
        return path
    if path.exists() or str(source).count("/") > 1 or not str(source).strip():
        raise FileNotFoundError(f"{source} is neither a checkpoint folder nor a Hub model id (ORG/NAME)")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        import httpx2 as httpx
    except ImportError:  # huggingface_hub 1.x sends its requests with httpx
        import httpx

    try:
        return Path(
            snapshot_download(
                str(source), revision=revision, allow_patterns=["*.json", "*.safetensors", "*.bin", "*.txt"]
            )
        )
    except (RepositoryNotFoundError, RevisionNotFoundError) as error:
        what = f"revision {revision!r} of " if isinstance(error, RevisionNotFoundError) else ""
        raise FileNotFoundError(f"{what}Hub model {source} not found (or not accessible with your token)") from None
    except (HfHubHTTPError, httpx.HTTPError, FileNotFoundError) as error:  # refused, unreachable, or offline
        raise FileNotFoundError(f"cannot download Hub model {source}: {str(error).splitlines()[0]}") from None


def _read_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    if (folder / "model.safetensors").is_file():
        from safetensors.torch import load_file

        return load_file(str(folder / "model.safetensors"))
    if (folder / "pytorch_model.bin").is_file():
        # weights_only: tensors and containers only, no code runs while unpickling
        return torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{folder} has no weights ({' or '.join(WEIGHT_FILES)})")


def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: a released checkpoint has a config.json")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}:{error.lineno}:{error.colno}: invalid JSON ({error.msg})") from None


def _backbone_config(layout: ReleasedLayout, config: dict[str, Any], folder: Path, state: dict[str, torch.Tensor]):
    """The DistilBERT configuration of the released backbone, checked against the weights' shapes."""
    from transformers import AutoConfig, DistilBertConfig

    if layout.backbone_prefix:  # CAT, ColBERT: the backbone is named by `bert_model`
        name = config.get("bert_model")
        if not isinstance(name, str) or not name:
            raise ValueError(f"{folder / 'config.json'}: no `bert_model` naming the backbone")
        if name in KNOWN_BACKBONES:
            backbone = DistilBertConfig()
        else:
            try:
                backbone = AutoConfig.from_pretrained(name)
            except (OSError, ValueError) as error:
                raise ValueError(
                    f"{folder / 'config.json'}: cannot read the backbone config {name!r} named by `bert_model` "
                    f"({str(error).splitlines()[0]}); pass backbone_config=... (--backbone-config)"
                ) from None
    else:
        if config.get("model_type") != "distilbert":
            raise ValueError(
                f"{folder / 'config.json'}: model_type {config.get('model_type')!r}, expected 'distilbert' for the "
                f"{layout.name} layout"
            )
        fields = {k: v for k, v in config.items() if k not in ("architectures", "join_layer_idx", "model_type")}
        backbone = DistilBertConfig(**fields)
    if backbone.model_type != "distilbert":
        raise ValueError(f"the released {layout.name} model has a DistilBERT backbone, got {backbone.model_type!r}")
    _check_shapes(layout, backbone, state)
    return backbone


def _check_shapes(layout: ReleasedLayout, backbone, state: dict[str, torch.Tensor]) -> None:
    prefix = layout.backbone_prefix
    vocab, dim = state[f"{prefix}embeddings.word_embeddings.weight"].shape
    positions = state[f"{prefix}embeddings.position_embeddings.weight"].shape[0]
    hidden = state[f"{prefix}transformer.layer.0.ffn.lin1.weight"].shape[0]
    layers = _num_layers(set(state), prefix)
    found = {"vocab_size": vocab, "dim": dim, "max_position_embeddings": positions, "hidden_dim": hidden}
    found["n_layers"] = layers
    differing = {k: (getattr(backbone, k), v) for k, v in found.items() if getattr(backbone, k) != v}
    if differing:
        details = ", ".join(f"{k} {value} vs {actual} in the weights" for k, (value, actual) in differing.items())
        raise ValueError(f"the backbone config does not fit the released {layout.name} weights: {details}")


def _hf_kd_state(layout: ReleasedLayout, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    renamed = {}
    for key, tensor in state.items():
        if key.endswith(IGNORED_KEYS):
            continue
        if key in layout.head:
            renamed[layout.head[key]] = tensor
        else:
            renamed["backbone." + key[len(layout.backbone_prefix) :]] = tensor
    return renamed


def load_released(
    source: str | os.PathLike,
    revision: str | None = None,
    backbone_config: dict[str, Any] | None = None,
    split_layer: int | None = None,
):
    """Reads a released checkpoint into the matching hf-kd model (in eval mode, not saved).

    Args:
        source: a folder with `config.json` and `pytorch_model.bin` or `model.safetensors`, or a Hub model id.
        revision: the Hub revision to read.
        backbone_config: DistilBERT configuration values, used instead of the backbone named by the config.
        split_layer: PreTTR's join layer, instead of the config's `join_layer_idx` (3 when absent).

    Returns:
        `(model, layout, folder)`: the hf-kd model, the [`ReleasedLayout`] found and the folder read.

    Raises:
        FileNotFoundError: the folder, its files or the Hub repository do not exist.
        ReleasedLayoutError: the state dict matches none of the four layouts.
        ValueError: the configuration does not fit the weights.
    """
    from transformers import DistilBertConfig

    from ..models import model_class_for

    folder = _resolve_folder(source, revision)
    config = _read_config(folder)
    state = _read_state_dict(folder)
    layout = detect_layout(state, source=str(source))
    if backbone_config is not None:
        backbone = DistilBertConfig(**{k: v for k, v in backbone_config.items() if k != "model_type"})
        _check_shapes(layout, backbone, state)
    else:
        backbone = _backbone_config(layout, config, folder, state)
    backbone_name = config.get("bert_model") if layout.backbone_prefix else None
    settings: dict[str, Any] = {"backbone_name_or_path": backbone_name or str(source)}
    if layout.name == "dot":
        settings.update(pooling="cls", compression_dim=None, normalize_embeddings=False)
    elif layout.name == "colbert":
        compression_dim = state["compressor.weight"].shape[0]
        if config.get("compression_dim") not in (None, compression_dim):
            raise ValueError(
                f"{folder / 'config.json'}: compression_dim {config['compression_dim']} but compressor.weight has "
                f"{compression_dim} rows"
            )
        settings.update(compression_dim=compression_dim, query_augmentation_tokens=8, normalize_embeddings=False)
    elif layout.name == "prettr":
        join = split_layer if split_layer is not None else config.get("join_layer_idx", 3)
        settings.update(split_layer=join, passage_positions="after_query")
    model_class = model_class_for(layout.architecture)
    model = model_class(model_class.config_class(backbone_config=backbone, **settings))
    missing, unexpected = model.load_state_dict(_hf_kd_state(layout, state), strict=False)
    if missing or unexpected:  # the layout check makes this unreachable unless hf-kd's modules change
        raise ValueError(
            f"{source}: the renamed weights do not fit {model_class.__name__}: {missing[:3]} {unexpected[:3]}"
        )
    return model.eval(), layout, folder


def import_released(
    source: str | os.PathLike,
    out: str | os.PathLike,
    tokenizer: str | os.PathLike | None = None,
    revision: str | None = None,
    backbone_config: dict[str, Any] | None = None,
    split_layer: int | None = None,
):
    """Turns one of the paper's released checkpoints into an hf-kd checkpoint folder.

    Args:
        source: a local folder or a Hub id, e.g. `sebastian-hofstaetter/colbert-distilbert-margin_mse-T2-msmarco`.
        out: the folder to write (safetensors, config with `auto_map`, modeling code, tokenizer, and the
            sentence-transformers files of the architecture).
        tokenizer: a folder or Hub id of the tokenizer, when the source has none (the releases were used with
            `distilbert-base-uncased`).
        revision, backbone_config, split_layer: see [`load_released`].

    Returns:
        `(model, layout)`: the imported model and the [`ReleasedLayout`] it came from.

    Raises:
        FileNotFoundError: the source, its files, the Hub repository or a tokenizer is missing.
        ReleasedLayoutError, ValueError: see [`load_released`].
    """
    from transformers import AutoTokenizer

    model, layout, folder = load_released(source, revision, backbone_config, split_layer)
    if any((folder / name).is_file() for name in TOKENIZER_FILES):
        tokenizer_source = str(folder)
    elif tokenizer is not None:
        tokenizer_source = str(tokenizer)
    else:
        raise FileNotFoundError(
            f"{source} has no tokenizer files; pass tokenizer=... (--tokenizer), e.g. distilbert-base-uncased, which "
            "the released models were used with"
        )
    try:
        loaded_tokenizer = AutoTokenizer.from_pretrained(tokenizer_source, trust_remote_code=False)
    except (OSError, ValueError) as error:
        raise FileNotFoundError(f"cannot load the tokenizer {tokenizer_source}: {str(error).splitlines()[0]}") from None
    vocab_size = model.config.backbone_config.vocab_size
    if len(loaded_tokenizer) > vocab_size:
        raise ValueError(
            f"the tokenizer {tokenizer_source} has {len(loaded_tokenizer)} tokens, the released model {vocab_size}"
        )
    model.save_pretrained(out, tokenizer=loaded_tokenizer)
    return model, layout
