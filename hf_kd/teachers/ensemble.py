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

Two rankers that score a whole corpus (BM25 and a bi-encoder) can instead take each query's statistics from the
documents that matter to it, whatever pairs are drawn: [`union_zscore_statistics`] (each ranker's mean and standard
deviation over the union of both rankers' top k) and [`fuse_union_zscore`] (the mean z-score, in the second
ranker's units). The adaptation's teacher ranks and labels with exactly that fusion.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..data.provenance import Provenance
from ..data.score_dataset import ScoreDataset, TeacherScores
from ..jobs import output_lock

__all__ = [
    "NORMALIZATIONS",
    "check_normalization",
    "check_rescale",
    "ensemble_score_datasets",
    "fuse_union_zscore",
    "mean_ensemble",
    "normalize_scores",
    "union_zscore_statistics",
]

NORMALIZATIONS = ("none", "zscore", "minmax", "query_zscore", "query_minmax")
"""Per-teacher normalisations before averaging: none (the paper's T2), z-score and min-max over the dataset or per
query."""


def _statistics(
    pos: np.ndarray, neg: np.ndarray, method: str, teacher: str, groups: np.ndarray | None
) -> tuple[np.ndarray | float, np.ndarray | float]:
    """(center, scale) of one teacher's scores, per triple for the `query_` methods; NaN scores (pairs a run
    teacher does not hold) are left out of the statistics."""
    values = np.concatenate([pos, neg])
    if not method.startswith("query_"):
        if np.isnan(values).all():
            raise ValueError(f"teacher {teacher!r} has no score at all; it cannot be {method}-normalised")
        if method == "zscore":
            center, scale = np.nanmean(values), np.nanstd(values)
        else:
            center, scale = np.nanmin(values), np.nanmax(values) - np.nanmin(values)
        if not scale > 0:
            raise ValueError(
                f"teacher {teacher!r} gives every passage the same score; it cannot be {method}-normalised"
            )
        return center, scale
    if groups is None or len(groups) != len(pos):
        raise ValueError(f"normalize={method!r} needs the query of each of the {len(pos)} triples (groups)")
    _, codes = np.unique(np.asarray(groups, dtype=object), return_inverse=True)
    codes = codes.reshape(-1)
    # per-query statistics from one sort of the scores by query, not one pass over all scores per query
    owners = np.concatenate([codes, codes])
    order = np.argsort(owners, kind="stable")
    values = values[order]
    starts = np.flatnonzero(np.r_[True, np.diff(owners[order]) != 0])
    valid = ~np.isnan(values)
    counts = np.add.reduceat(valid.astype(np.int64), starts)
    if method == "query_zscore":
        means = np.add.reduceat(np.where(valid, values, 0.0), starts) / np.maximum(counts, 1)
        deviations = np.where(valid, values - np.repeat(means, np.diff(np.r_[starts, len(values)])), 0.0)
        centers, scales = means, np.sqrt(np.add.reduceat(deviations**2, starts) / np.maximum(counts, 1))
    else:
        centers = np.minimum.reduceat(np.where(valid, values, np.inf), starts)
        scales = np.maximum.reduceat(np.where(valid, values, -np.inf), starts) - centers
        centers = np.where(counts > 0, centers, 0.0)
    scales = np.where((counts > 0) & (scales > 0), scales, 1.0)  # a constant query only loses its center
    return centers[codes], scales[codes]


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
    `minmax`: `(x - min(s)) / (max(s) - min(s))`; `none`: `x`. NaN scores stay NaN and are left out of `s`.

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
    center, scale = _statistics(pos, neg, method, teacher, groups)
    return (pos - center) / scale, (neg - center) / scale


def mean_ensemble(
    teacher_scores: TeacherScores,
    normalize: str = "none",
    groups: np.ndarray | None = None,
    rescale_to: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The ensemble's scores: per triple, the arithmetic mean of the (normalised) scores of the teachers that score
    both its passages.

    A teacher without a score for a pair (NaN: a run file holds only its own candidates) is left out of that
    triple's mean; a triple no teacher scores gets NaN. With `rescale_to`, the normalised mean is put back into
    that teacher's units (`mean * scale_t + center_t`, with its center and scale of `normalize`): the ensemble
    then has the spread of that teacher's scores, so a student whose scores live on that scale (a cosine student
    taught by a cosine teacher) learns from the ensemble with Margin-MSE as it would from the teacher alone.

    Args:
        teacher_scores ([`TeacherScores`]): teacher name -> (pos, neg) raw scores, aligned over triples.
        normalize (`str`, *optional*, defaults to `"none"`): per-teacher normalisation, see [`normalize_scores`].
        groups (`np.ndarray`, *optional*): (n,) the query of each triple, for the `query_` normalisations.
        rescale_to (`str`, *optional*): a teacher of `teacher_scores` whose units the ensemble is given; needs a
            normalisation other than `none`.

    Returns:
        `tuple[np.ndarray, np.ndarray]`: (pos, neg) float32 ensemble scores.

    Example:
        ```python
        >>> pos, neg = mean_ensemble({"a": (np.array([2.0]), np.array([0.0])), "b": (np.array([4.0]), np.array([1.0]))})
        >>> pos.tolist(), neg.tolist()
        ([3.0], [0.5])
        >>> pos, neg = mean_ensemble({"a": (np.array([2.0, 1.0]), np.array([0.0, 1.0])),
        ...                           "b": (np.array([4.0, np.nan]), np.array([1.0, 2.0]))})
        >>> pos.tolist(), neg.tolist()
        ([3.0, 1.0], [0.5, 1.0])

        ```
    """
    if not teacher_scores:
        raise ValueError("an ensemble needs at least one teacher")
    check_rescale(rescale_to, normalize, list(teacher_scores))
    normalised = [normalize_scores(pos, neg, normalize, name, groups) for name, (pos, neg) in teacher_scores.items()]
    pos_stack = np.stack([p for p, _ in normalised])
    neg_stack = np.stack([n for _, n in normalised])
    present = ~(np.isnan(pos_stack) | np.isnan(neg_stack))
    count = present.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        pos = np.where(present, pos_stack, 0.0).sum(axis=0) / count
        neg = np.where(present, neg_stack, 0.0).sum(axis=0) / count
    if rescale_to is not None:
        reference_pos, reference_neg = teacher_scores[rescale_to]
        center, scale = _statistics(
            np.asarray(reference_pos, np.float64), np.asarray(reference_neg, np.float64), normalize, rescale_to, groups
        )
        pos, neg = pos * scale + center, neg * scale + center
    return pos.astype(np.float32), neg.astype(np.float32)


def union_zscore_statistics(
    first: np.ndarray, second: np.ndarray, depth: int = 100
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Per query, each of two rankers' mean and standard deviation over the union of both rankers' top `depth`.

    Args:
        first, second (`np.ndarray`): (queries, documents) whole-corpus scores of the two rankers, the same
            documents in the same order.
        depth (`int`, *optional*, defaults to 100): the top of each ranker that enters the union.

    Returns:
        `(centers, scales, unions)`: (queries, 2) means and (queries, 2) population standard deviations (1 where a
        ranker gives the union one score), and each query's union as document rows.

    Example:
        ```python
        >>> first, second = np.array([[3.0, 1.0, 0.0]]), np.array([[0.0, 0.5, 1.0]])
        >>> centers, scales, unions = union_zscore_statistics(first, second, depth=1)
        >>> centers.tolist(), scales.tolist(), unions[0].tolist()
        ([[1.5, 0.5]], [[1.5, 0.5]], [0, 2])

        ```
    """
    first, second = np.asarray(first, np.float64), np.asarray(second, np.float64)
    if first.shape != second.shape or first.ndim != 2:
        raise ValueError(
            f"two (queries, documents) score matrices of one shape expected, got {first.shape} and {second.shape}"
        )
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    k = min(depth, first.shape[1])
    centers, scales, unions = np.empty((len(first), 2)), np.empty((len(first), 2)), []
    for i, (a, b) in enumerate(zip(first, second)):
        union = np.union1d(np.argpartition(-a, k - 1)[:k], np.argpartition(-b, k - 1)[:k])
        for j, row in enumerate((a, b)):
            centers[i, j] = row[union].mean()
            scales[i, j] = row[union].std() or 1.0
        unions.append(union)
    return centers, scales, unions


def fuse_union_zscore(first: np.ndarray, second: np.ndarray, centers: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """The mean of two rankers' z-scores, given back in the second ranker's units:
    `((x1 - c1) / s1 + (x2 - c2) / s2) / 2 * s2 + c2`, with each query's statistics of [`union_zscore_statistics`].

    Args:
        first, second (`np.ndarray`): the two rankers' scores, (n,) or (n, m): one row per query (or per pair).
        centers, scales (`np.ndarray`): (n, 2) each row's statistics of the first and the second ranker.

    Returns:
        `np.ndarray`: the fused scores, of the shape of `first`.
    """
    first, second = np.asarray(first, np.float64), np.asarray(second, np.float64)
    shape = (-1,) + (1,) * (first.ndim - 1)
    c1, c2 = centers[:, 0].reshape(shape), centers[:, 1].reshape(shape)
    s1, s2 = scales[:, 0].reshape(shape), scales[:, 1].reshape(shape)
    return ((first - c1) / s1 + (second - c2) / s2) / 2 * s2 + c2


def check_rescale(rescale_to: str | None, normalize: str, teachers: Sequence[str] | None = None) -> None:
    """Rejects a `rescale_to` teacher that is not in the ensemble, or one given without a normalisation."""
    if rescale_to is None:
        return
    if normalize == "none":
        raise ValueError(
            f"rescale_to={rescale_to!r} needs a normalisation (e.g. query_zscore): without one the mean is already "
            "in the teachers' own units"
        )
    if teachers is not None and rescale_to not in teachers:
        raise ValueError(
            f"rescale_to={rescale_to!r} is not a teacher of the ensemble; its teachers: {', '.join(teachers)}"
        )


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
    rescale_to: str | None = None,
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
        rescale_to (`str`, *optional*): the teacher whose units the ensemble is given, see [`mean_ensemble`].
        overwrite (`bool`, *optional*, defaults to `False`): replace an existing non-empty `out`.

    Returns:
        `int`: rows written.
    """
    if not paths:
        raise ValueError("pass at least one teacher-score dataset")
    check_normalization(normalize)
    check_rescale(rescale_to, normalize)
    reference, reference_path = None, None
    teacher_scores: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    descriptions, teachers = [], []
    for path in map(Path, paths):
        scores = ScoreDataset.open(path)
        table, provenance = scores.table(), scores.provenance
        members = scores.teacher_scores(table)
        if reference is None:
            reference, reference_path = table, path
        else:
            _check_same_triples(reference, reference_path, table, path)
        described = {d.get("name"): d for d in provenance.parameters.get("teachers", [])}
        for name, member_scores in members.items():
            column_name = _distinct_name(name, set(teacher_scores))
            teacher_scores[column_name] = member_scores
            descriptions.append({**described.get(name, {"name_or_path": str(path)}), "name": column_name})
        teachers.extend(provenance.teachers)
    check_normalization(normalize, len(teacher_scores))
    check_rescale(rescale_to, normalize, list(teacher_scores))
    provenance = Provenance(
        format="hf-kd-ensemble",
        schema="scored_triples",
        source_files=[str(Path(p).resolve()) for p in paths],
        teachers=teachers,
        parameters={
            "teachers": descriptions,
            "ensemble": "mean" if len(teacher_scores) > 1 else None,
            "normalize": normalize,
            "rescale_to": rescale_to,
        },
    )
    groups = reference.column("query").to_numpy(zero_copy_only=False) if normalize.startswith("query_") else None
    ensemble = mean_ensemble(teacher_scores, normalize, groups, rescale_to) if len(teacher_scores) > 1 else None
    with output_lock(out):
        written = ScoreDataset.write_teacher_scores(
            out, reference, teacher_scores, provenance, ensemble=ensemble, overwrite=overwrite
        )
        return written.num_rows
