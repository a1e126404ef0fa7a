"""Model cards of hf-kd checkpoints, rendered from the templates in `model_cards/`.

The card of a checkpoint folder is built in two steps, as in sentence-transformers' `model_card.py`:
[`collect_card_info`] (`hf_kd.hub.card_info`) reads what the folder records (`config.json`, the `metrics.json` of
`hf-kd evaluate` in the folder, given, or recorded in `hf_kd_evaluations.json`,
`latency.json`, `train_summary.json`, `training_args.json`, the safetensors header) into a [`ModelCardInfo`]
next to the fields only the user knows (teacher, datasets, license); [`render_model_card`] turns it into
`huggingface_hub.ModelCardData` (the YAML metadata, with a `model-index`) and renders the architecture's
template through `huggingface_hub.ModelCard.from_template`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from ..losses import CITATION, LOSSES
from .card_info import EvaluationResult, ModelCardInfo, collect_card_info

__all__ = [
    "MODEL_CARDS_DIR",
    "PIPELINE_TAGS",
    "model_card_data",
    "render_model_card",
]

MODEL_CARDS_DIR = Path(os.environ.get("HF_KD_MODEL_CARDS", Path(__file__).resolve().parents[1] / "model_cards"))
"""Folder of the card templates (`<architecture>.md`, `teacher_scores.md`); `$HF_KD_MODEL_CARDS` overrides it.
`hf_kd/model_cards` links to the repository's `model_cards/`, and wheels carry the templates there."""

PIPELINE_TAGS = {
    "bert_cat": "text-ranking",
    "bert_dot": "sentence-similarity",
    "colbert": "text-ranking",
    "prett": "text-ranking",
    "tk": "text-ranking",
}
BASE_TAGS = ("passage-ranking", "knowledge-distillation")
LOSS_DISPLAY_NAMES = {
    "margin_mse": "Margin-MSE",
    "pointwise_mse": "pointwise MSE",
    "weighted_ranknet": "weighted RankNet",
    "ranknet": "RankNet (no teacher)",
    "listwise_kl": "listwise KL divergence",
}


def model_card_data(info: ModelCardInfo) -> ModelCardData:
    """The YAML metadata of the card: library, tags, license, base model, datasets, pipeline and model-index."""
    eval_results = [result for evaluation in info.evaluation for result in evaluation.eval_results()]
    tags = [*BASE_TAGS, info.loss_tag, info.architecture.replace("_", "-"), "hf-kd"]
    if info.architecture == "bert_dot":
        tags.append("sentence-transformers")
    if info.architecture == "bert_cat":
        tags.append("cross-encoder")
    return ModelCardData(
        language=info.language,
        license=info.license,
        library_name="transformers",
        tags=list(dict.fromkeys(tags)),
        base_model=info.base_model,
        datasets=info.datasets or None,
        pipeline_tag=PIPELINE_TAGS[info.architecture],
        model_name=info.repo_id,
        eval_results=eval_results or None,
    )


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return "\n".join(lines) + "\n"


def evaluation_table(results: list[EvaluationResult]) -> str:
    """Markdown table of the effectiveness results, one row per test set ("" when there are none)."""
    if not results:
        return ""
    metric_names = list(dict.fromkeys(name for result in results for name in result.metrics))
    rows = []
    for result in results:
        first_stage = f"{result.first_stage} top-{result.top_k}" if result.first_stage and result.top_k else "-"
        rows.append(
            [
                f"{result.test_set} ({result.split})",
                first_stage,
                str(result.num_queries or "-"),
                *(f"{result.metrics[name]:.4f}" if name in result.metrics else "-" for name in metric_names),
            ]
        )
    return _markdown_table(["Test set", "Candidates re-ranked", "Queries", *metric_names], rows)


def efficiency_table(info: ModelCardInfo) -> str:
    """The paper's Table 1 row of this model (latency, memory, storage) joined with its first test set's
    effectiveness; "" without `latency.json`."""
    if info.latency is None:
        return ""
    from ..evaluation.report import efficiency_markdown, join_efficiency

    latency = {**info.latency, "name": info.repo_id}
    effectiveness = {info.repo_id: info.evaluation[0].metrics} if info.evaluation else {}
    return efficiency_markdown(join_efficiency([latency], effectiveness))


def _architecture_settings(info: ModelCardInfo) -> list[tuple[str, str]]:
    config = info.config
    backbone = config.get("backbone_config") or {}
    settings = [
        ("Backbone", f"{backbone.get('model_type', '?')}" + (f" ({info.base_model})" if info.base_model else ""))
    ]
    for label, key in (("Layers", "num_hidden_layers"), ("Hidden size", "hidden_size")):
        value = backbone.get(key, backbone.get({"num_hidden_layers": "n_layers", "hidden_size": "dim"}[key]))
        if value is not None:
            settings.append((label, str(value)))
    if info.num_parameters is not None:
        settings.append(("Parameters", f"{info.num_parameters / 1e6:.1f}M"))
    skip = {"backbone_config", "backbone_name_or_path", "architectures", "auto_map", "model_type", "dtype"}
    settings.extend(
        (key, _format_value(value))
        for key, value in config.items()
        if key not in skip and not key.startswith("_") and key != "transformers_version" and value is not None
    )
    return settings


def render_model_card(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    template_dir: str | os.PathLike | None = None,
    metrics_files: Sequence[str | os.PathLike] = (),
    **user_fields: Any,
) -> ModelCard:
    """Renders the model card of a checkpoint folder from `model_cards/<architecture>.md`.

    Args:
        folder (`str` or `os.PathLike`): a checkpoint saved by an hf-kd model's `save_pretrained`.
        repo_id (`str`): the Hub repository, `ORG/NAME` (used in the usage snippets and the model-index).
        template_dir (`str` or `os.PathLike`, *optional*): folder of the templates; defaults to
            [`MODEL_CARDS_DIR`].
        metrics_files (`Sequence[str | os.PathLike]`, *optional*): evaluation reports outside the folder.
        **user_fields: `revision`, `license`, `base_model`, `datasets`, `teacher`, `language` (see
            [`ModelCardInfo`]).

    Returns:
        `huggingface_hub.ModelCard` whose metadata passes `ModelCardData` validation.
    """
    info = collect_card_info(folder, repo_id, metrics_files, **user_fields)
    template = Path(template_dir or MODEL_CARDS_DIR) / f"{info.architecture}.md"
    if not template.is_file():
        raise FileNotFoundError(f"model card template {template} not found (set HF_KD_MODEL_CARDS to its folder)")
    loss = info.loss or "margin_mse"
    return ModelCard.from_template(
        model_card_data(info),
        template_path=str(template),
        repo_id=info.repo_id,
        revision=info.revision,
        architecture_name=info.display_name,
        architecture_settings=_architecture_settings(info),
        max_query_length=info.config.get("max_query_length"),
        max_passage_length=info.config.get("max_passage_length"),
        config=info.config,
        teacher=info.teacher,
        teacher_datasets=info.datasets,
        loss_name=LOSS_DISPLAY_NAMES.get(loss, loss),
        loss_recorded=info.loss is not None,
        loss_config=info.loss_config,
        training=[(key, _format_value(value)) for key, value in info.training.items()],
        evaluation_table=evaluation_table(info.evaluation),
        efficiency_table=efficiency_table(info),
        citation=CITATION,
        loss_citation=LOSSES[loss]().citation if loss in LOSSES else CITATION,
    )
