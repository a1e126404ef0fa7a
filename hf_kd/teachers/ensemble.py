"""Teacher ensembles: the mean of the teachers' scores, optionally normalised per teacher first.

The paper's T2 teacher is the arithmetic mean of the raw scores of three BERT_CAT teachers, without
normalisation (`normalize="none"`): its members were of one kind and scored on one scale. Teachers of different
kinds (a cross-encoder's logits, a bi-encoder's cosine, a run file's BM25 or SPLADE scores) live on different
scales, so each teacher's scores are put on one scale before averaging:

| `normalize`    | statistics taken over                                   | score becomes                     |
|----------------|---------------------------------------------------------|-----------------------------------|
| `none`         | -                                                       | `x`                               |
| `zscore`       | all of the teacher's scores in the dataset              | `(x - mean) / std`                |
| `minmax`       | all of the teacher's scores in the dataset              | `(x - min) / (max - min)`         |
| `query_zscore` | the teacher's scores of the same query                  | `(x - mean_q) / std_q`            |
| `query_minmax` | the teacher's scores of the same query                  | `(x - min_q) / (max_q - min_q)`   |

"Scores" are each triple's positive and negative score once. Per-query statistics remove what a teacher says
about a query as a whole (which Margin-MSE never sees) and keep what it says within the query. A query whose
scores are all equal keeps scale 1 (only its mean or minimum is removed).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..data.provenance import Provenance
from .score_dataset import TeacherScores, load_teacher_scores, split_teacher_scores, write_teacher_scores

__all__ = ["NORMALIZATIONS", "check_normalization", "ensemble_score_datasets", "mean_ensemble", "normalize_scores"]

NORMALIZATIONS = ("none", "zscore", "minmax", "query_zscore", "query_minmax")
"""Per-teacher normalisations before averaging: none (the paper's T2), z-score and min-max over the dataset or per
query."""


def _center_scale(values: np.ndarray, method: str) -> tuple[float, float]:
    if method.endswith("zscore"):
        return values.mean(), values.std()
    return values.min(), values.max() - values.min()


def normalize_scores(
    pos: np.ndarray,
    neg: np.ndarray,
    method: str = "none",
    teacher: str = "teacher",
    groups: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Normalises one teacher's scores, see the table of this module.

    With `s` the concatenation of `pos` and `neg` (of one query, for the `query_` methods):
    `zscore`: `(x - mean(s)) / std(s)` (population standard deviation);
    `minmax`: `(x - min(s)) / (max(s) - min(s))`; `none`: `x`.

    Args:
        pos (`np.ndarray`): (n,) scores of the positives.
        neg (`np.ndarray`): (n,) scores of the negatives.
        method (`str`, *optional*, defaults to `"none"`): one of [`NORMALIZATIONS`].
        teacher (`str`, *optional*): the teacher's name, for error messages.
        groups (`np.ndarray`, *optional*): (n,) the query of each triple (any hashable codes); needed by the
            `query_` methods.

    Returns:
        `tuple[np.ndarray, np.ndarray]`: the normalised (pos, neg), float64.

    Example:
        ```python
        >>> pos, neg = normalize_scores(np.array([1.0, 3.0]), np.array([2.0, 5.0]), "minmax")
        >>> pos.tolist(), neg.tolist()
        ([0.0, 0.5], [0.25, 1.0])
        >>> pos, neg = normalize_scores(np.array([1.0, 3.0]), np.array([2.0, 5.0]), "query_minmax", groups=["a", "b"])
        >>> pos.tolist(), neg.tolist()
        ([0.0, 0.0], [1.0, 1.0])
        ```
    """
    if method not in NORMALIZATIONS:
        raise ValueError(f"unknown normalisation {method!r}; expected one of {', '.join(NORMALIZATIONS)}")
    pos, neg = np.asarray(pos, dtype=np.float64), np.asarray(neg, dtype=np.float64)
    if method == "none":
        return pos, neg
    if not method.startswith("query_"):
        center, scale = _center_scale(np.concatenate([pos, neg]), method)
        if not scale > 0:
            raise ValueError(
                f"teacher {teacher!r} gives every passage the same score; it cannot be {method}-normalised"
            )
        return (pos - center) / scale, (neg - center) / scale
    if groups is None or len(groups) != len(pos):
        raise ValueError(f"normalize={method!r} needs the query of each of the {len(pos)} triples (groups)")
    _, codes = np.unique(np.asarray(groups, dtype=object), return_inverse=True)
    codes = codes.reshape(-1)
    # per-query statistics from one sort of the scores by query, not one pass over all scores per query
    values, owners = np.concatenate([pos, neg]), np.concatenate([codes, codes])
    order = np.argsort(owners, kind="stable")
    values, starts = values[order], np.flatnonzero(np.r_[True, np.diff(owners[order]) != 0])
    counts = np.diff(np.r_[starts, len(values)])
    if method == "query_zscore":
        means = np.add.reduceat(values, starts) / counts
        deviations = values - np.repeat(means, counts)  # two passes: a constant query has exactly 0
        centers, scales = means, np.sqrt(np.add.reduceat(deviations**2, starts) / counts)
    else:
        centers = np.minimum.reduceat(values, starts)
        scales = np.maximum.reduceat(values, starts) - centers
    scales = np.where(scales > 0, scales, 1.0)
    center, scale = centers[codes], scales[codes]
    return (pos - center) / scale, (neg - center) / scale


def mean_ensemble(
    teacher_scores: TeacherScores, normalize: str = "none", groups: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The ensemble's scores: per triple, the arithmetic mean over teachers of their (normalised) scores.

    Args:
        teacher_scores ([`TeacherScores`]): teacher name -> (pos, neg) raw scores, aligned over triples.
        normalize (`str`, *optional*, defaults to `"none"`): per-teacher normalisation, see [`normalize_scores`].
        groups (`np.ndarray`, *optional*): (n,) the query of each triple, for the `query_` normalisations.

    Returns:
        `tuple[np.ndarray, np.ndarray]`: (pos, neg) float32 ensemble scores.

    Example:
        ```python
        >>> pos, neg = mean_ensemble({"a": (np.array([2.0]), np.array([0.0])), "b": (np.array([4.0]), np.array([1.0]))})
        >>> pos.tolist(), neg.tolist()
        ([3.0], [0.5])
        ```
    """
    if not teacher_scores:
        raise ValueError("an ensemble needs at least one teacher")
    normalised = [normalize_scores(pos, neg, normalize, name, groups) for name, (pos, neg) in teacher_scores.items()]
    pos = np.mean([p for p, _ in normalised], axis=0)
    neg = np.mean([n for _, n in normalised], axis=0)
    return pos.astype(np.float32), neg.astype(np.float32)


def check_normalization(normalize: str, num_teachers: int | None = None) -> None:
    """Rejects an unknown normalisation, and a normalisation of a single teacher (it only shapes an ensemble)."""
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"unknown normalisation {normalize!r}; expected one of {', '.join(NORMALIZATIONS)}")
    if num_teachers == 1 and normalize != "none":
        raise ValueError(
            f"normalize={normalize!r} needs several teachers: it applies per teacher before averaging, and a single "
            "teacher's raw scores are kept as they are"
        )


def _check_same_triples(reference: pa.Table, reference_path: Path, table: pa.Table, path: Path) -> None:
    if table.num_rows != reference.num_rows:
        raise ValueError(
            f"{path} has {table.num_rows} triples but {reference_path} has {reference.num_rows}; an ensemble "
            "combines scores of the same triples, in the same order"
        )
    for column in ("query", "positive", "negative"):
        differs = pc.not_equal(table.column(column), reference.column(column))
        if pc.any(differs).as_py():
            row = pc.index(differs, True).as_py()
            raise ValueError(
                f"{path}, row {row + 1}: its {column} differs from row {row + 1} of {reference_path}; an ensemble "
                "combines scores of the same triples, in the same order"
            )


def _distinct_name(name: str, taken: set[str]) -> str:
    candidate, index = name, 2
    while candidate in taken:
        candidate, index = f"{name}_{index}", index + 1
    return candidate


def ensemble_score_datasets(
    paths: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    normalize: str = "none",
    overwrite: bool = False,
) -> int:
    """Combines teacher-score datasets of the same triples into one ensemble dataset (`hf-kd ensemble`).

    Every input teacher's raw scores become a `pos_score_<t>` / `neg_score_<t>` pair (the per-teacher
    columns of a multi-teacher input are taken over); `pos_score` / `neg_score` hold [`mean_ensemble`].

    Args:
        paths (`Sequence[str | os.PathLike]`): teacher-score dataset folders of the same triples in the
            same order (single- or multi-teacher). One multi-teacher folder re-ensembles its teachers.
        out (`str` or `os.PathLike`): the dataset folder to create.
        normalize (`str`, *optional*, defaults to `"none"`): per-teacher normalisation, see [`normalize_scores`].
        overwrite (`bool`, *optional*, defaults to `False`): replace an existing non-empty `out`.

    Returns:
        `int`: rows written.
    """
    if not paths:
        raise ValueError("pass at least one teacher-score dataset")
    check_normalization(normalize)
    reference, reference_path = None, None
    teacher_scores: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    descriptions, teachers = [], []
    for path in map(Path, paths):
        table, provenance = load_teacher_scores(path)
        if reference is None:
            reference, reference_path = table, path
        else:
            _check_same_triples(reference, reference_path, table, path)
        described = {d.get("name"): d for d in provenance.parameters.get("teachers", [])}
        for name, scores in split_teacher_scores(table, provenance).items():
            column_name = _distinct_name(name, set(teacher_scores))
            teacher_scores[column_name] = scores
            descriptions.append({**described.get(name, {"name_or_path": str(path)}), "name": column_name})
        teachers.extend(provenance.teachers)
    check_normalization(normalize, len(teacher_scores))
    provenance = Provenance(
        format="hf-kd-ensemble",
        schema="scored_triples",
        source_files=[str(Path(p).resolve()) for p in paths],
        teachers=teachers,
        parameters={
            "teachers": descriptions,
            "ensemble": "mean" if len(teacher_scores) > 1 else None,
            "normalize": normalize,
        },
    )
    groups = reference.column("query").to_numpy(zero_copy_only=False) if normalize.startswith("query_") else None
    ensemble = mean_ensemble(teacher_scores, normalize, groups) if len(teacher_scores) > 1 else None
    return write_teacher_scores(out, reference, teacher_scores, provenance, ensemble=ensemble, overwrite=overwrite)
