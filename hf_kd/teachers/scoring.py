"""Scoring triples with one or several teachers into a teacher-score dataset, resumably.

Triples share passages (a positive appears in many triples, a negative under several queries), so every
distinct (query, passage) pair is scored once per teacher, and the triples' scores are gathered from those.
Pairs are scored in shards of `shard_size`; inside a shard they are sorted by input length so that batches
carry little padding. Each finished shard is written at once (temporary file, then `os.replace`) into a
work folder beside the output:

```
OUT.partial/
  manifest.json                    the fingerprint of the work: the pairs' texts, every teacher's weights
                                   (file hashes, Hub commit or run-file hash) and the options that change scores
  teacher-0/pairs-00000.parquet    columns `pair` (distinct pair index) and `score`
  teacher-1/...
```

A killed run started again with the same arguments skips the finished shards; a rerun whose fingerprint differs
(a teacher swapped at the same path, other triples, bf16) refuses with the list of what changed, or starts over
with `overwrite=True`. A work folder without a manifest is never resumed from. `OUT.lock` keeps a second run off
the same output (see `hf_kd.jobs.output_lock`). When every shard is there, the dataset is written to `OUT` (see
`hf_kd.data.ScoreDataset.write_teacher_scores`) and the work folder is removed.

Under `accelerate launch --num_processes N` (or `torchrun`), the processes share the work: the main process takes
the lock and opens the work folder, the shards left to do are dealt out in turn to the N processes, each writes its
own shards into the same work folder, and once all are done the main process alone checks that every shard is there
and was written for this work (each shard records the fingerprint of the manifest and its teacher), then writes the
one dataset, the same as a single process would. A shard missing or written for other work is refused, never merged.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from datasets import Dataset
from tqdm.auto import tqdm

from ..data.provenance import Provenance
from ..data.score_dataset import ScoreDataset
from ..models.ranking_functions import resolve_max_batch_tokens, token_budget_batches
from ..processes import JobProcesses, job_processes, lock_job_output
from .base import Teacher
from .ensemble import check_normalization, check_rescale, mean_ensemble
from .loading import load_teacher
from .shards import (
    _manifest,
    _merge_shards,
    _open_work,
    _pairs_in,
    _shard_path,
    _shard_stamp,
    _work_id,
    _write_shard,
)
from .triples import _distinct_pairs_of_triples, find_distinct_pairs, read_triples

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_SHARD_SIZE",
    "MISSING_POLICIES",
    "ScoringResult",
    "score_pairs",
    "score_triples",
]

DEFAULT_BATCH_SIZE = 64
DEFAULT_SHARD_SIZE = 50_000


# --------------------------------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------------------------------


def _score_length_sorted(
    teacher: Teacher,
    queries: list[str],
    passages: list[str],
    batch_size: int,
    max_batch_tokens: int | None,
    bf16: bool,
    progress: tqdm,
) -> np.ndarray:
    """Scores aligned pairs in batches of similar length (longest first, at most `batch_size` pairs and
    `max_batch_tokens` tokens each; see `token_budget_batches`); returns the scores in input order."""
    max_tokens = resolve_max_batch_tokens(max_batch_tokens, teacher.device)
    lengths = teacher.pair_lengths(queries, passages).tolist()
    scores = np.empty(len(queries), dtype=np.float32)
    for batch in token_budget_batches(lengths, batch_size, max_tokens):
        with torch.autocast(device_type=teacher.device.type, dtype=torch.bfloat16, enabled=bf16):
            batch_scores = teacher.score([queries[i] for i in batch], [passages[i] for i in batch])
        scores[batch] = batch_scores.numpy()
        progress.update(len(batch))
    bad = np.flatnonzero(np.isinf(scores) if not teacher.covers_every_pair else ~np.isfinite(scores))
    if len(bad):
        raise ValueError(
            f"teacher {teacher.name_or_path!r} gave non-finite scores to {len(bad)} pairs, e.g. query "
            f"{queries[bad[0]][:80]!r} with passage {passages[bad[0]][:80]!r}" + (" (try without bf16)" if bf16 else "")
        )
    return scores


def score_pairs(
    teacher: Teacher,
    queries: Sequence[str],
    passages: Sequence[str],
    batch_size: int = DEFAULT_BATCH_SIZE,
    bf16: bool = False,
    show_progress_bar: bool = False,
    max_batch_tokens: int | None = None,
) -> np.ndarray:
    """Scores aligned (query, passage) pairs, each distinct pair once, in length-sorted batches.

    Args:
        teacher ([`Teacher`]): the scorer.
        queries (`Sequence[str]`): n query texts.
        passages (`Sequence[str]`): n passage texts, `passages[i]` paired with `queries[i]`.
        batch_size (`int`, *optional*, defaults to 64): pairs per forward pass.
        bf16 (`bool`, *optional*, defaults to `False`): run under bfloat16 autocast.
        show_progress_bar (`bool`, *optional*, defaults to `False`): show a tqdm bar with the ETA.
        max_batch_tokens (`int`, *optional*): tokens per forward pass at most (pairs x the batch's longest); `None`:
            2048 on a CPU, where bigger batches only spill the caches, and no cap elsewhere; 0: no cap.

    Returns:
        `np.ndarray`: (n,) float32 raw scores, in input order; NaN for pairs a run teacher does not hold.
    """
    _check_positive("batch_size", batch_size)
    pairs, index = find_distinct_pairs(list(queries), list(passages))
    with tqdm(total=len(pairs), unit="pair", desc=f"scoring ({teacher.name})", disable=not show_progress_bar) as bar:
        scores = _score_length_sorted(teacher, *pairs.texts(), batch_size, max_batch_tokens, bf16, bar)
    return scores[index]


@dataclass
class ScoringResult:
    """What [`score_triples`] did.

    Attributes:
        out (`Path`): the teacher-score dataset folder.
        triples (`int`): rows written.
        distinct_pairs (`int`): distinct (query, passage) pairs among the triples.
        scored_pairs (`int`): pairs scored by this call, over all teachers.
        resumed_pairs (`int`): pairs whose scores an earlier, interrupted call had written.
        seconds (`float`): wall time of the call.
        dropped_triples (`int`): triples left out because a teacher (a run file) has no score for one of their
            pairs.
        missing_by_teacher (`dict[str, int]`): for each teacher, the triples it has no score for.
        processes (`list[dict]`): for each process (one, or those of `accelerate launch`), its `rank` and the
            `pairs` it scored in this call.
    """

    out: Path
    triples: int
    distinct_pairs: int
    scored_pairs: int
    resumed_pairs: int
    seconds: float
    dropped_triples: int = 0
    missing_by_teacher: dict[str, int] | None = None
    processes: list[dict] | None = None


MISSING_POLICIES = ("drop", "error", "partial")
"""What [`score_triples`] does with a triple a teacher has no score for: leave it out (counted), fail, or keep it
when another teacher scores it (the ensemble is then the mean of the teachers that do)."""


def _missing_scores(
    teacher_scores: dict[str, tuple[np.ndarray, np.ndarray]], triples: pa.Table, missing: str
) -> tuple[np.ndarray, dict[str, int]]:
    """The triples every teacher scores, and the count each teacher lacks; fails on a gap with `missing="error"`."""
    keep = np.ones(triples.num_rows, dtype=bool)
    scored_by_any = np.zeros(triples.num_rows, dtype=bool)
    counts = {}
    for name, (pos, neg) in teacher_scores.items():
        lacking = np.isnan(pos) | np.isnan(neg)
        counts[name] = int(lacking.sum())
        scored_by_any |= ~lacking
        if counts[name] and missing == "error":
            row = int(np.flatnonzero(lacking)[0])
            raise ValueError(
                f"teacher {name!r} has no score for {counts[name]} of {triples.num_rows} triples, first at row "
                f"{row + 1} (query {triples.column('query')[row].as_py()[:60]!r}); pass missing='drop' "
                "(--missing drop) to leave such triples out"
            )
        keep &= ~lacking
    if missing == "partial":
        keep = scored_by_any
    if not keep.any():
        raise ValueError(
            f"no triple is scored by every teacher (triples lacking a score: {counts}); a run teacher scores only "
            "the pairs its run file holds"
        )
    return keep, counts


def _check_positive(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def _distinct_names(teachers: Sequence[Teacher]) -> list[str]:
    names: list[str] = []
    for teacher in teachers:
        name, index = teacher.name, 2
        while name in names:
            name, index = f"{teacher.name}_{index}", index + 1
        names.append(name)
    return names


# --------------------------------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------------------------------


def _device_of(teachers: Sequence[Teacher | str | os.PathLike]) -> torch.device | None:
    return next((teacher.device for teacher in teachers if isinstance(teacher, Teacher)), None)


# --------------------------------------------------------------------------------------------------------------------
# Scoring triples
# --------------------------------------------------------------------------------------------------------------------


def score_triples(
    teachers: Sequence[Teacher | str | os.PathLike],
    triples_dataset: str | os.PathLike | Dataset | pa.Table,
    out_dir: str | os.PathLike,
    batch_size: int = DEFAULT_BATCH_SIZE,
    bf16: bool = False,
    shard_size: int = DEFAULT_SHARD_SIZE,
    *,
    normalize: str = "none",
    rescale_to: str | None = None,
    missing: str = "drop",
    overwrite: bool = False,
    show_progress_bar: bool = True,
    max_batch_tokens: int | None = None,
) -> ScoringResult:
    """Scores triples with one or several teachers and writes the teacher-score dataset (`hf-kd score`).

    Every distinct (query, passage) pair is scored once per teacher, in length-sorted batches, shard by
    shard; an interrupted call resumes from its finished shards when called again with the same arguments.
    Called in every process of `accelerate launch --num_processes N`, the processes share the shards and the
    main process writes the dataset, the same as one process would (see `hf_kd.processes.job_processes`).

    The dataset has the `scored_triples` text form of `hf_kd.data` (`query, positive, negative, pos_score,
    neg_score`). With several teachers, each teacher's raw scores are kept in `pos_score_<teacher>` /
    `neg_score_<teacher>`, and `pos_score` / `neg_score` hold their mean (see `hf_kd.teachers.mean_ensemble`).
    Its provenance records the teachers (names, paths or Hub ids, revisions), the source, the creation time,
    the hf-kd version, and the pairs each process scored (`parameters["scoring"]["processes"]`).

    Args:
        teachers (`Sequence[Teacher | str]`): loaded teachers, or checkpoints for [`load_teacher`].
        triples_dataset: the triples, anything [`read_triples`] reads (TSV, Parquet, dataset folder, `Dataset`).
        out_dir (`str` or `os.PathLike`): the dataset folder to create; `<out_dir>.partial` holds the work.
        batch_size (`int`, *optional*, defaults to 64): pairs per forward pass.
        bf16 (`bool`, *optional*, defaults to `False`): run the teachers under bfloat16 autocast.
        shard_size (`int`, *optional*, defaults to 50,000): distinct pairs per resumable shard.
        normalize (`str`, *optional*, defaults to `"none"`): per-teacher normalisation before averaging several
            teachers: `none` (the paper's T2), `zscore`, `minmax`, `query_zscore` or `query_minmax` (see
            `hf_kd.teachers.ensemble`).
        rescale_to (`str`, *optional*): the name of a teacher whose units the normalised ensemble is given back
            (see `hf_kd.teachers.mean_ensemble`), e.g. a cosine teacher, so that a cosine student learns from the
            ensemble as from that teacher.
        missing (`str`, *optional*, defaults to `"drop"`): a triple that a teacher has no score for (a pair missing
            from a run file) is left out and counted (`drop`; the counts go into the provenance), fails the call
            (`error`), or is kept when another teacher scores it (`partial`): the ensemble columns hold the mean of
            the teachers that score it, and the lacking teacher's own columns hold NaN. No score is ever invented.
        overwrite (`bool`, *optional*, defaults to `False`): replace an existing non-empty `out_dir`.
        show_progress_bar (`bool`, *optional*, defaults to `True`): show a tqdm bar with the ETA (main process).
        max_batch_tokens (`int`, *optional*): tokens per forward pass at most, as in [`score_pairs`].

    Returns:
        [`ScoringResult`]: the output folder and the counts of triples and pairs, in every process.
    """
    started = time.perf_counter()
    out = Path(out_dir)
    if not teachers:
        raise ValueError("pass at least one teacher")
    _check_positive("batch_size", batch_size)
    _check_positive("shard_size", shard_size)
    resolve_max_batch_tokens(max_batch_tokens, "cpu")  # refuses a bad value before any work
    check_normalization(normalize, len(teachers))
    check_rescale(rescale_to, normalize)
    if missing not in MISSING_POLICIES:
        raise ValueError(f"missing must be one of {', '.join(MISSING_POLICIES)}, got {missing!r}")
    processes = JobProcesses(job_processes(_device_of(teachers)))
    with contextlib.ExitStack() as lock:
        processes.from_main(lambda: lock_job_output(lock, out, overwrite))
        return _score_triples_locked(
            teachers,
            triples_dataset,
            out,
            (batch_size, max_batch_tokens),
            bf16,
            shard_size,
            normalize,
            rescale_to,
            missing,
            overwrite,
            show_progress_bar,
            started,
            processes,
        )


def _score_shards(teachers, names, pairs, todo, work, stamps, batching, bf16, bar, shard_count) -> int:
    """Scores the shards `todo` and writes each as it is done; returns the pairs scored."""
    for teacher_index, (shard, start, stop) in todo:
        bar.set_postfix_str(f"{names[teacher_index]}, shard {shard + 1}/{shard_count}")
        queries, passages = pairs.texts(start, stop)
        scores = _score_length_sorted(teachers[teacher_index], queries, passages, *batching, bf16, bar)
        _write_shard(_shard_path(work, teacher_index, shard), start, scores, stamps[teacher_index])
    return _pairs_in(todo)


def _score_triples_locked(
    teachers,
    triples_dataset,
    out,
    batching,
    bf16,
    shard_size,
    normalize,
    rescale_to,
    missing,
    overwrite,
    show_progress_bar,
    started,
    processes,
) -> ScoringResult:
    triples, source = read_triples(triples_dataset)
    pairs, triple_pairs = _distinct_pairs_of_triples(triples)
    teachers = [t if isinstance(t, Teacher) else load_teacher(t, device=processes.device) for t in teachers]
    names = _distinct_names(teachers)
    descriptions = [{**teacher.describe(), "name": name} for teacher, name in zip(teachers, names)]
    check_rescale(rescale_to, normalize, names)
    if missing == "partial" and len(teachers) < 2:
        raise ValueError("missing='partial' keeps triples that another teacher scores: it needs several teachers")

    work = out.with_name(f"{out.name}.partial")
    manifest = _manifest(source, triples, pairs, shard_size, bf16, teachers, descriptions)
    stamps = [_shard_stamp(_work_id(manifest), index, teacher) for index, teacher in enumerate(teachers)]
    starts = range(0, len(pairs), shard_size)
    shards = [(i, start, min(start + shard_size, len(pairs))) for i, start in enumerate(starts)]
    todo = processes.from_main(lambda: _open_work(work, manifest, overwrite, shards, len(teachers)))
    mine = processes.share(todo)  # after every process has the same list, whatever the others write meanwhile
    total = len(pairs) * len(teachers)
    bar_total, done = (total, total - _pairs_in(todo)) if processes.count == 1 else (_pairs_in(mine), 0)
    desc = "scoring" if processes.count == 1 else f"scoring (main of {processes.count} processes)"
    with tqdm(
        total=bar_total, initial=done, unit="pair", desc=desc, disable=not (show_progress_bar and processes.is_main)
    ) as bar:
        scored = _score_shards(teachers, names, pairs, mine, work, stamps, batching, bf16, bar, len(shards))
    split = processes.gather({"rank": processes.rank, "pairs": scored})  # also waits for every process's shards

    def merge_and_write() -> ScoringResult:
        teacher_scores = _merge_shards(work, stamps, names, len(pairs), shard_size, triple_pairs)
        batch_size, max_batch_tokens = batching
        max_tokens = resolve_max_batch_tokens(max_batch_tokens, teachers[0].device)
        parameters = {"distinct_pairs": len(pairs), "batch_size": batch_size, "max_batch_tokens": max_tokens}
        parameters["bf16"] = bf16
        parameters["scoring"] = {"processes": split}
        rows, dropped, missing_counts = _write_scores(
            out, triples, pairs, triple_pairs, teacher_scores, descriptions, source, parameters, normalize,
            rescale_to, missing, overwrite,
        )  # fmt: skip
        shutil.rmtree(work)
        scored_here = sum(process["pairs"] for process in split)
        return ScoringResult(
            out=out,
            triples=rows,
            distinct_pairs=len(pairs),
            scored_pairs=scored_here,
            resumed_pairs=total - scored_here,
            seconds=time.perf_counter() - started,
            dropped_triples=dropped,
            missing_by_teacher=missing_counts,
            processes=split,
        )

    return processes.from_main(merge_and_write)


def _write_scores(
    out, triples, pairs, triple_pairs, teacher_scores, descriptions, source, parameters, normalize, rescale_to,
    missing, overwrite,
) -> tuple[int, int, dict[str, int]]:  # fmt: skip
    """Writes the dataset of the triples every teacher scores (or some, with `missing="partial"`); returns the rows
    written, the triples left out and the triples each teacher has no score for."""
    keep, missing_counts = _missing_scores(teacher_scores, triples, missing)
    if not keep.all():
        triples = triples.filter(pa.array(keep))
        teacher_scores = {name: (pos[keep], neg[keep]) for name, (pos, neg) in teacher_scores.items()}
    provenance = Provenance(
        format="hf-kd-score",
        schema="scored_triples",
        source_files=[source] if source else [],
        teachers=[d["name_or_path"] for d in descriptions],
        parameters={
            "teachers": descriptions,
            "ensemble": "mean" if len(descriptions) > 1 else None,
            "normalize": normalize,
            "rescale_to": rescale_to,
            **parameters,
            "missing": missing,
            "triples_in": len(keep),
            "dropped_triples": int((~keep).sum()),
            "missing_by_teacher": missing_counts,
        },
    )
    groups = pairs.query_index[triple_pairs[keep, 0]] if normalize.startswith("query_") else None
    ensemble = mean_ensemble(teacher_scores, normalize, groups, rescale_to) if len(descriptions) > 1 else None
    written = ScoreDataset.write_teacher_scores(
        out, triples, teacher_scores, provenance, ensemble=ensemble, overwrite=overwrite
    )
    return written.num_rows, int((~keep).sum()), missing_counts
