"""The dataset card of a teacher-score dataset, rendered from `model_cards/teacher_scores.md`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from huggingface_hub import DatasetCard, DatasetCardData

from ..losses import CITATION
from .cards import MODEL_CARDS_DIR

if TYPE_CHECKING:
    from datasets import Features

    from ..data.provenance import Provenance

__all__ = ["COLUMN_DESCRIPTIONS", "dataset_card_data", "render_dataset_card"]

COLUMN_DESCRIPTIONS = {
    "query": "the query text",
    "positive": "a relevant passage",
    "negative": "a non-relevant passage",
    "passage": "a passage",
    "passages": "passages of the query, the first one relevant",
    "pos_score": "the teacher's raw score of (query, positive)",
    "neg_score": "the teacher's raw score of (query, negative)",
    "margin": "the teacher's margin, pos_score - neg_score",
    "score": "the teacher's raw score of (query, passage)",
    "scores": "the teacher's raw score of each passage",
    "query_id": "id of the query (text in the `queries` configuration)",
    "positive_id": "id of a relevant passage (text in the `collection` configuration)",
    "negative_id": "id of a non-relevant passage (text in the `collection` configuration)",
    "passage_id": "id of a passage (text in the `collection` configuration)",
    "passage_ids": "ids of the query's passages, the first one relevant",
}
TEMPLATE_NAME = "teacher_scores.md"


def _column_description(name: str) -> str:
    """What a column holds; a per-teacher column (`pos_score_<teacher>`, ...) says whose scores it holds."""
    from ..data.schemas import PER_TEACHER_PREFIXES

    for prefix in PER_TEACHER_PREFIXES:
        if name.startswith(prefix):
            teacher = name[len(prefix) :]
            return COLUMN_DESCRIPTIONS[prefix[:-1]].replace("the teacher's", f"teacher `{teacher}`'s")
    return COLUMN_DESCRIPTIONS.get(name, "")


def _type_name(feature) -> str:
    """`Value('float32')` -> `float32`, `List(Value('string'))` -> `list<string>`."""
    if hasattr(feature, "dtype"):
        return str(feature.dtype)
    inner = getattr(feature, "feature", None)
    return f"list<{_type_name(inner)}>" if inner is not None else str(feature)


def _size_category(rows: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if rows < limit:
            return name
    for limit, name in ((10**7, "1M<n<10M"), (10**8, "10M<n<100M"), (10**9, "100M<n<1B")):
        if rows < limit:
            return name
    return "1B<n<10B"


def dataset_card_data(
    schema_name: str,
    num_rows: int,
    text_files: list[str],
    license: str = "other",
    pretty_name: str | None = None,
    language: str = "en",
    features: Features | None = None,
) -> DatasetCardData:
    """The YAML metadata: license, tags, task, size, the `configs` (data files) and `dataset_info` (features),
    written with the functions `datasets.push_to_hub` uses, so `load_dataset` reads them as it reads its own.
    `features` defaults to the schema's own (pass them with per-teacher score columns)."""
    from datasets import DatasetInfo, SplitDict, SplitInfo
    from datasets.info import DatasetInfosDict
    from datasets.utils.metadata import MetadataConfigs

    from ..data.schemas import SCHEMAS

    card_data = DatasetCardData(
        language=[language],
        license=license,
        task_categories=["text-ranking"],
        tags=["knowledge-distillation", "teacher-scores", "passage-ranking", schema_name.replace("_", "-"), "hf-kd"],
        size_categories=[_size_category(num_rows)],
        pretty_name=pretty_name,
    )
    configs = {"default": {"data_files": [{"split": "train", "path": "data/train-*"}]}}
    for text_file in text_files:
        configs[Path(text_file).stem] = {"data_files": [{"split": "train", "path": text_file}]}
    MetadataConfigs(configs).to_dataset_card_data(card_data)
    splits = SplitDict()
    splits.add(SplitInfo(name="train", num_examples=num_rows))
    info = DatasetInfo(features=features or SCHEMAS[schema_name], splits=splits)
    DatasetInfosDict({"default": info}).to_dataset_card_data(card_data)
    return card_data


def render_dataset_card(
    repo_id: str,
    *,
    schema_name: str,
    num_rows: int,
    shards: list[str],
    text_files: list[str] | None = None,
    provenance: Provenance | None = None,
    revision: str = "main",
    license: str = "other",
    pretty_name: str | None = None,
    teachers: list[str] | None = None,
    language: str = "en",
    template_dir: str | os.PathLike | None = None,
    features: Features | None = None,
) -> DatasetCard:
    """Renders the card of a teacher-score dataset repository.

    Args:
        repo_id (`str`): the dataset repository, `ORG/NAME`.
        schema_name (`str`): the hf-kd schema of the rows (a key of `hf_kd.data.SCHEMAS`).
        num_rows (`int`): rows in the `train` split.
        shards (`list[str]`): the Parquet shards, relative to the repository root.
        text_files (`list[str]`, *optional*): `texts/queries.parquet` and `texts/collection.parquet` of an id form.
        provenance (`Provenance`, *optional*): how the dataset was made (teachers, sources, format).
        revision (`str`, *optional*, defaults to `"main"`): the branch the snippets load.
        license (`str`, *optional*, defaults to `"other"`): the license identifier; MS MARCO-derived scores
            follow Microsoft's non-commercial research terms.
        pretty_name (`str`, *optional*): a human-readable name.
        teachers (`list[str]`, *optional*): the teacher models (with revisions), overriding the provenance's.
        language (`str`, *optional*, defaults to `"en"`).
        template_dir (`str` or `os.PathLike`, *optional*): folder of `teacher_scores.md`.
        features (`datasets.Features`, *optional*): the columns, when there are more than the schema's own (each
            teacher's scores beside an ensemble's); defaults to the schema's.
    """
    from ..data.schemas import SCHEMAS

    text_files = text_files or []
    template = Path(template_dir or MODEL_CARDS_DIR) / TEMPLATE_NAME
    if not template.is_file():
        raise FileNotFoundError(f"dataset card template {template} not found (set HF_KD_MODEL_CARDS to its folder)")
    features = features or SCHEMAS[schema_name]
    columns = [(name, _type_name(features[name]), _column_description(name)) for name in features]
    source: dict[str, Any] = {}
    if provenance is not None:
        source = {
            "format": provenance.format,
            "source_files": [Path(path).name for path in provenance.source_files],
            "rejected_rows": provenance.rejected_rows,
            "created": provenance.created,
            "hf_kd_version": provenance.hf_kd_version,
            "parameters": provenance.parameters,
        }
    return DatasetCard.from_template(
        dataset_card_data(schema_name, num_rows, text_files, license, pretty_name, language, features),
        template_path=str(template),
        repo_id=repo_id,
        revision=revision,
        schema_name=schema_name,
        is_id_form=schema_name.endswith("_ids"),
        num_rows=num_rows,
        num_shards=len(shards),
        columns=columns,
        text_files=text_files,
        teachers=teachers if teachers is not None else (provenance.teachers if provenance else []),
        source=source,
        citation=CITATION,
    )
