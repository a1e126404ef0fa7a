"""Where teacher scores and their texts come from: local files and folders, or Hub datasets by id.

A Hub dataset is named `hf://datasets/ORG/NAME[@REVISION][/SUBSET]` wherever a file is accepted. Three
layouts of id-form teacher scores are read as they are on the Hub, each with its texts in sibling subsets:

- **hf-kd** (`hf-kd push-scores`): rows in the default subset in an hf-kd id schema; texts in the `queries` and
  `collection` subsets (`id`, `text`).
- **sentence-transformers** (`sentence-transformers/msmarco`): subset `bert-ensemble-margin-mse` with
  `query_id, positive_id, negative_id, score` (score = the margin); texts in `queries` (`query_id`, `query`)
  and `corpus` (`passage_id`, `passage`).
- **PyLate** (`lightonai/ms-marco-en-bge`): subset `train` with `query_id, document_ids, scores`; texts in
  `queries` (`query_id`, `text`) and `documents` (`document_id`, `text`).

[`hf_kd.data.schemas.normalize_columns`] renames each layout's columns to an hf-kd schema (`score` -> `margin`,
`document_ids` -> `passage_ids`) without rewriting the rows.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from datasets import Dataset, IterableDataset

from .schemas import normalize_columns
from .texts import TextStore

__all__ = [
    "HUB_PREFIX",
    "DataSourceError",
    "HubDatasetId",
    "is_hub_id",
    "load_hub_rows",
    "load_hub_texts",
    "parse_hub_id",
]

HUB_PREFIX = "hf://datasets/"
TEXT_SUBSETS = {"queries": ("queries",), "collection": ("collection", "corpus", "documents")}
"""Subset names that hold the queries and the passages, in order of preference."""


class DataSourceError(ValueError):
    """A training source cannot be read: a Hub dataset, subset or revision that does not exist, empty data."""


@dataclass(frozen=True)
class HubDatasetId:
    """`hf://datasets/ORG/NAME[@REVISION][/SUBSET]`, parsed."""

    repo_id: str
    revision: str | None = None
    subset: str | None = None

    def with_subset(self, subset: str | None) -> HubDatasetId:
        return HubDatasetId(self.repo_id, self.revision, subset)

    def __str__(self) -> str:
        revision = f"@{self.revision}" if self.revision else ""
        subset = f"/{self.subset}" if self.subset else ""
        return f"{HUB_PREFIX}{self.repo_id}{revision}{subset}"


def is_hub_id(value: str | os.PathLike) -> bool:
    return str(value).startswith(HUB_PREFIX)


def parse_hub_id(value: str) -> HubDatasetId:
    """Parses `hf://datasets/ORG/NAME[@REVISION][/SUBSET]`.

    ```python
    >>> parse_hub_id("hf://datasets/sentence-transformers/msmarco@main/bert-ensemble-margin-mse")
    HubDatasetId(repo_id='sentence-transformers/msmarco', revision='main', subset='bert-ensemble-margin-mse')

    ```
    """
    if not is_hub_id(value):
        raise DataSourceError(f"{value}: not a Hub dataset id; expected {HUB_PREFIX}ORG/NAME[@REVISION][/SUBSET]")
    parts = value[len(HUB_PREFIX) :].strip("/").split("/")
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise DataSourceError(f"{value}: expected {HUB_PREFIX}ORG/NAME[@REVISION][/SUBSET]")
    name, _, revision = parts[1].partition("@")
    return HubDatasetId(f"{parts[0]}/{name}", revision or None, "/".join(parts[2:]) or None)


def _hub_call(hub_id: HubDatasetId, call, *args, **kwargs):
    """Runs a `datasets` Hub call; a repository, subset or revision that is not there becomes one line."""
    from datasets.exceptions import DatasetNotFoundError
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        return call(*args, **kwargs)
    except RevisionNotFoundError:
        raise DataSourceError(f"{hub_id}: revision {hub_id.revision!r} not found in {hub_id.repo_id}") from None
    except (DatasetNotFoundError, RepositoryNotFoundError) as error:
        if hub_id.revision and "revision" in str(error).lower():
            raise DataSourceError(f"{hub_id}: revision {hub_id.revision!r} not found in {hub_id.repo_id}") from None
        raise DataSourceError(f"{hub_id}: dataset {hub_id.repo_id} not found on the Hub (or not accessible)") from None
    except HfHubHTTPError as error:
        raise DataSourceError(f"{hub_id}: {str(error).splitlines()[0]}") from None


def subsets(hub_id: HubDatasetId) -> list[str]:
    """The subsets (configurations) of a Hub dataset."""
    from datasets import get_dataset_config_names

    return list(_hub_call(hub_id, get_dataset_config_names, hub_id.repo_id, revision=hub_id.revision))


def _load(hub_id: HubDatasetId, streaming: bool, cache_dir: str | None) -> Dataset | IterableDataset:
    from datasets import load_dataset

    return _hub_call(
        hub_id,
        load_dataset,
        hub_id.repo_id,
        hub_id.subset,
        revision=hub_id.revision,
        split="train",
        streaming=streaming,
        cache_dir=cache_dir,
    )


def _score_subset(hub_id: HubDatasetId, available: list[str]) -> str:
    if hub_id.subset is not None:
        if hub_id.subset not in available:
            raise DataSourceError(f"{hub_id}: subset {hub_id.subset!r} not found; the subsets are {available}")
        return hub_id.subset
    text_subsets = {name for names in TEXT_SUBSETS.values() for name in names}
    candidates = [name for name in available if name not in text_subsets]
    if "default" in candidates or "train" in candidates:
        return "default" if "default" in candidates else "train"
    if len(candidates) == 1:
        return candidates[0]
    raise DataSourceError(
        f"{hub_id}: name the subset of teacher scores, e.g. "
        f"{hub_id.with_subset(candidates[0] if candidates else 'NAME')}; the subsets are {available}"
    )


def load_hub_rows(
    value: str, streaming: bool = False, cache_dir: str | None = None
) -> tuple[Dataset | IterableDataset, str, HubDatasetId]:
    """The `train` split of a Hub dataset of teacher scores, its columns normalised to an hf-kd schema.

    Returns:
        (rows, layout name, the id with its subset resolved).

    Raises:
        DataSourceError: a dataset, subset or revision that does not exist (one line naming it).
    """
    hub_id = parse_hub_id(value)
    available = subsets(hub_id)
    hub_id = hub_id.with_subset(_score_subset(hub_id, available))
    rows, layout = normalize_columns(_load(hub_id, streaming, cache_dir))
    return rows, layout, hub_id


def load_hub_texts(
    value: str | HubDatasetId, kind: str, cache_dir: str | None = None, available: list[str] | None = None
) -> TextStore | None:
    """A Hub dataset's queries or passages as a memory-mapped [`TextStore`].

    `value` names the subset (`hf://datasets/ORG/NAME/corpus`), or a dataset whose `queries` /
    `collection`, `corpus` or `documents` subset is taken; `None` when a score dataset has no such subset.
    """
    hub_id = parse_hub_id(value) if isinstance(value, str) else value
    available = subsets(hub_id) if available is None else available
    if hub_id.subset is None:
        subset = next((name for name in TEXT_SUBSETS[kind] if name in available), None)
        if subset is None:
            return None
        hub_id = hub_id.with_subset(subset)
    elif hub_id.subset not in available:
        raise DataSourceError(f"{hub_id}: subset {hub_id.subset!r} not found; the subsets are {available}")
    texts = _load(hub_id, streaming=False, cache_dir=cache_dir)
    return TextStore.from_dataset(texts, kind, str(hub_id))
