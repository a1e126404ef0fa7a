"""Positives from judgements, candidates from a first stage, negatives drawn with a teacher's margin."""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..data.errors import DataFormatError
from ..models.ranking_functions import resolve_max_batch_tokens
from .retrieval import retrieve_candidates

SAMPLING = ("random", "top")


@dataclass
class MinedRow:
    """One positive with its mined negatives.

    Attributes:
        query_id (`str`), positive_id (`str`): the judged pair.
        negative_ids (`list[str]`): the negatives, in rank order (at most `num_negatives`).
        positive_score (`float` or `None`): the teacher's score of the positive (None without a teacher).
        negative_scores (`list[float]` or `None`): the teacher's scores of the negatives.
    """

    query_id: str
    positive_id: str
    negative_ids: list[str]
    positive_score: float | None = None
    negative_scores: list[float] | None = None


@dataclass
class MiningStats:
    """What [`mine_hard_negatives`] kept and left out."""

    queries: int = 0
    positives: int = 0
    negatives: int = 0
    queries_without_positive: int = 0
    skipped_queries_without_text: int = 0
    skipped_positives_without_text: int = 0
    candidates_in_range: int = 0
    """Summed over positives: the candidates in the rank range of each positive's query."""
    judged_candidates: int = 0
    """Summed over positives: candidates left out as judged above grade 0, or repeating the positive's text."""
    teacher_filtered: int = 0
    """Candidates the teacher scores too close to (or above) the positive, or cannot score."""
    positives_without_teacher_score: int = 0
    positives_without_negative: int = 0
    short_of_negatives: int = 0
    """Positives that got fewer than `num_negatives` negatives (but at least one)."""
    parameters: dict = field(default_factory=dict)


@dataclass
class MiningResult:
    """The mined negatives, one [`MinedRow`] per positive that got at least one, and the [`MiningStats`]."""

    rows: list[MinedRow]
    stats: MiningStats

    def triples(self) -> list[tuple[str, str, str]]:
        """`(query_id, positive_id, negative_id)` for every negative of every row."""
        return [(row.query_id, row.positive_id, negative) for row in self.rows for negative in row.negative_ids]


# ---------------------------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------------------------


def parse_rank_range(text: str) -> tuple[int, int]:
    """`"MIN:MAX"` -> `(MIN, MAX)`, 1-based ranks, both included, `1 <= MIN <= MAX`."""
    parts = str(text).split(":")
    try:
        low, high = (int(part) for part in parts)
    except ValueError:
        raise ValueError(f"expected a rank range MIN:MAX such as 10:100, got {text!r}") from None
    if not 1 <= low <= high:
        raise ValueError(f"expected ranks 1 <= MIN <= MAX, got {text!r}")
    return low, high


def _judgement_line(path: str | os.PathLike, qid: str, pid: str | None) -> int | None:
    """The 1-based line of `path` (TREC or BEIR qrels) judging `pid` for `qid` (the first line of `qid` when `pid`
    is None), or None."""
    with open(path, encoding="utf-8-sig") as f:
        for line_number, line in enumerate(f, start=1):
            columns = line.split()
            if len(columns) == 4:
                columns = [columns[0], columns[2]]
            if columns[:1] == [qid] and (pid is None or columns[1:2] == [pid]):
                return line_number
    return None


def _missing_text_error(qrels_path, qid: str, pid: str | None, what: str) -> ValueError:
    reason = f"{what}; pass --skip-missing (skip_missing=True) to leave such judgements out"
    if qrels_path is None:
        return ValueError(f"qrels: {reason}")
    return DataFormatError(qrels_path, _judgement_line(qrels_path, qid, pid), reason)


def find_positives(
    qrels: Mapping[str, Mapping[str, int]],
    queries: Mapping[str, str],
    collection: Mapping[str, str],
    *,
    min_grade: int = 1,
    skip_missing: bool = False,
    qrels_path: str | os.PathLike | None = None,
    sources: Mapping[str, str] | None = None,
    stats: MiningStats | None = None,
) -> dict[str, list[str]]:
    """The positives of every judged query: passage ids of grade >= `min_grade`, sorted.

    Args:
        qrels, queries, collection: judgements, query texts and passage texts.
        min_grade (`int`, *optional*, defaults to 1): the smallest relevant grade.
        skip_missing (`bool`, *optional*, defaults to `False`): leave out (and count in `stats`) judged queries
            and positives without text instead of failing.
        qrels_path (`str` or `os.PathLike`, *optional*): the qrels file, named with the line in errors.
        sources (`Mapping[str, str]`, *optional*): `"queries"` / `"collection"` -> the file named in errors.
        stats ([`MiningStats`], *optional*): where the skipped and empty queries are counted.

    Returns:
        `dict[str, list[str]]`: query id -> positive ids, only queries with at least one positive with text.

    Raises:
        DataFormatError: a judged query without text, or a positive absent from the collection, naming the qrels
            file, its line and the id (a `ValueError` naming the id without `qrels_path`).
    """
    sources = sources or {}
    stats = stats if stats is not None else MiningStats()
    positives: dict[str, list[str]] = {}
    for qid, judged in qrels.items():
        relevant = sorted(pid for pid, grade in judged.items() if grade >= min_grade)
        if not relevant:
            stats.queries_without_positive += 1
            continue
        if qid not in queries:
            if not skip_missing:
                where = f" in {sources['queries']}" if sources.get("queries") else ""
                raise _missing_text_error(qrels_path, qid, None, f"query {qid!r} has no text{where}")
            stats.skipped_queries_without_text += 1
            continue
        with_text = [pid for pid in relevant if pid in collection]
        missing = [pid for pid, grade in judged.items() if grade >= min_grade and pid not in collection]  # file order
        if missing and not skip_missing:
            where = f" {sources['collection']}" if sources.get("collection") else ""
            reason = (
                f"passage {missing[0]!r} (query {qid!r}, grade {judged[missing[0]]}) is not in the collection{where}"
            )
            raise _missing_text_error(qrels_path, qid, missing[0], reason)
        stats.skipped_positives_without_text += len(missing)
        if with_text:
            positives[qid] = with_text
        else:
            stats.queries_without_positive += 1
    return positives


# ---------------------------------------------------------------------------------------------------------------
# Mining
# ---------------------------------------------------------------------------------------------------------------


def _check_options(num_negatives, rank_range, sampling, margin, relative_margin, teacher) -> None:
    if num_negatives < 1:
        raise ValueError(f"num_negatives must be >= 1, got {num_negatives}")
    low, high = rank_range
    if not 1 <= low <= high:
        raise ValueError(f"rank_range must be (MIN, MAX) with 1 <= MIN <= MAX, got {rank_range}")
    if sampling not in SAMPLING:
        raise ValueError(f"sampling must be one of {SAMPLING}, got {sampling!r}")
    if (margin is not None or relative_margin is not None) and teacher is None:
        raise ValueError("--margin and --relative-margin compare teacher scores: pass --teacher")
    if margin is not None and margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    if relative_margin is not None and not 0 <= relative_margin < 1:
        raise ValueError(f"relative_margin must be in [0, 1), got {relative_margin}")


def _window(candidates: Mapping[str, float], rank_range: tuple[int, int]) -> list[str]:
    """The candidates at ranks MIN..MAX, best first (ties: ascending passage id)."""
    ranked = [pid for pid, _ in sorted(candidates.items(), key=lambda item: (-item[1], item[0]))]
    return ranked[rank_range[0] - 1 : rank_range[1]]


def _unjudged(window: list[str], judged: Mapping[str, int]) -> list[str]:
    return [pid for pid in window if judged.get(pid, 0) <= 0]


def _teacher_scores(
    teacher,
    queries: Mapping[str, str],
    collection: Mapping[str, str],
    pairs: list[tuple[str, str]],
    batching: tuple[int, int | None],
    show_progress: bool,
    device: str | None,
    stats: MiningStats,
) -> dict[tuple[str, str], float]:
    """The teacher's score of every pair. Under `accelerate launch --num_processes N` each process scores every N-th
    pair on its own device and every process gets all the scores; `stats` records the pairs of each process.
    `batching`: pairs per forward pass and the cap on padded tokens per forward pass."""
    from ..processes import JobProcesses, job_processes
    from ..teachers.scoring import score_pairs

    processes = JobProcesses(job_processes(device))
    share = processes.share(pairs)
    batch_size, max_batch_tokens = batching
    scores = score_pairs(
        teacher,
        [queries[qid] for qid, _ in share],
        [collection[pid] for _, pid in share],
        batch_size=batch_size,
        max_batch_tokens=max_batch_tokens,
        show_progress_bar=show_progress and processes.is_main,
    )
    scored: dict[tuple[str, str], float] = {}
    for part in processes.gather(dict(zip(share, scores.tolist()))):
        scored.update(part)
    counts = processes.gather(len(share))
    stats.parameters["scoring"] = {"processes": [{"rank": r, "pairs": n} for r, n in enumerate(counts)]}
    return {pair: scored[pair] for pair in pairs}


def _below_margin(negative: float, positive: float, margin: float | None, relative_margin: float | None) -> bool:
    if not (np.isfinite(negative) and np.isfinite(positive)):
        return False
    if margin is not None and not negative < positive - margin:
        return False
    if relative_margin is not None and not negative < positive * (1 - relative_margin):
        return False
    return True


def _same_text(text: str) -> str:
    return " ".join(text.split())


def _mine_positive(qid, pid, window, judged, collection, scores, options, stats) -> MinedRow | None:
    """The negatives of one positive: its query's candidates in the rank range, less judged passages and copies of
    the positive's text, less those the teacher puts within the margin, sampled."""
    positive_text = _same_text(collection[pid])
    pool = [neg for neg in _unjudged(window, judged) if _same_text(collection[neg]) != positive_text]
    stats.candidates_in_range += len(window)
    stats.judged_candidates += len(window) - len(pool)
    positive_score = None
    if scores is not None:
        positive_score = scores[(qid, pid)]
        if not np.isfinite(positive_score):
            stats.positives_without_teacher_score += 1
            return None
        kept = [neg for neg in pool if _below_margin(scores[(qid, neg)], positive_score, *options["margins"])]
        stats.teacher_filtered += len(pool) - len(kept)
        pool = kept
    num_negatives = options["num_negatives"]
    if options["sampling"] == "top" or len(pool) <= num_negatives:
        chosen = pool[:num_negatives]
    else:
        rank = {neg: position for position, neg in enumerate(pool)}
        chosen = sorted(random.Random(f"{options['seed']}/{qid}/{pid}").sample(pool, num_negatives), key=rank.get)
    if not chosen:
        stats.positives_without_negative += 1
        return None
    stats.short_of_negatives += len(chosen) < num_negatives
    negative_scores = [scores[(qid, neg)] for neg in chosen] if scores is not None else None
    return MinedRow(qid, pid, chosen, positive_score, negative_scores)


def _recorded_parameters(retriever, candidates, index, rank_range, min_grade, teacher, options: dict) -> dict:
    """The parameters of a mining run, as [`MiningStats`] records them."""
    margin, relative_margin = options["margins"]
    return {
        "retriever": "run" if candidates is not None else str(retriever),
        "index": str(Path(index).resolve()) if index is not None and candidates is None else None,
        "rank_range": list(rank_range),
        "num_negatives": options["num_negatives"],
        "min_grade": min_grade,
        "seed": options["seed"],
        "sampling": options["sampling"],
        "teacher": getattr(teacher, "name_or_path", None),
        "margin": margin,
        "relative_margin": relative_margin,
    }


def _first_stage_candidates(
    retriever: str | os.PathLike | None,
    queries: Mapping[str, str],
    collection: Mapping[str, str],
    positives: Mapping[str, list[str]],
    depth: int,
    batching: tuple[int, int | None],
    device: str | None,
    index: str | os.PathLike | None,
    show_progress: bool,
    stats: MiningStats,
) -> dict[str, dict[str, float]]:
    """The first stage's `depth` best candidates of every query with positives (see [`retrieve_candidates`]); what
    each process did goes to `stats.parameters["retrieval"]`."""
    mined_queries = {qid: queries[qid] for qid in positives}
    if not mined_queries:
        return {}
    batch_size, max_batch_tokens = batching
    return retrieve_candidates(
        retriever,
        mined_queries,
        collection,
        depth,
        batch_size=batch_size,
        max_batch_tokens=max_batch_tokens,
        device=device,
        index=index,
        show_progress=show_progress,
        record=stats.parameters.setdefault("retrieval", {}),
    )


def _candidate_windows(
    candidates: Mapping[str, Mapping[str, float]] | None,
    retriever: str | os.PathLike | None,
    queries: Mapping[str, str],
    collection: Mapping[str, str],
    positives: Mapping[str, list[str]],
    rank_range: tuple[int, int],
    batching: tuple[int, int | None],
    device: str | None,
    index: str | os.PathLike | None,
    show_progress: bool,
    stats: MiningStats,
) -> dict[str, list[str]]:
    """The candidates in the rank range of every query with positives, from `candidates` or else retrieved by the
    first stage, checked to have text in the collection."""
    if candidates is None:
        candidates = _first_stage_candidates(
            retriever, queries, collection, positives, rank_range[1], batching, device, index, show_progress, stats
        )
    windows = {qid: _window(candidates.get(qid, {}), rank_range) for qid in positives}
    unknown = sorted({pid for window in windows.values() for pid in window if pid not in collection})
    if unknown:
        raise ValueError(f"{len(unknown)} candidate passages have no text in the collection, e.g. {unknown[:5]}")
    return windows


def _score_positives_and_candidates(
    teacher,
    queries: Mapping[str, str],
    collection: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, int]],
    positives: Mapping[str, list[str]],
    windows: Mapping[str, list[str]],
    batching: tuple[int, int | None],
    show_progress: bool,
    device: str | None,
    stats: MiningStats,
) -> dict[tuple[str, str], float] | None:
    """The teacher's scores of every positive and of every unjudged candidate of its query (None without a
    teacher)."""
    if teacher is None:
        return None
    pairs = [(q, p) for q in positives for p in [*positives[q], *_unjudged(windows[q], qrels.get(q, {}))]]
    return _teacher_scores(teacher, queries, collection, pairs, batching, show_progress, device, stats)


def _mine_queries(positives, windows, qrels, collection, scores, options, stats, show_progress) -> list[MinedRow]:
    """The rows of every query's positives that got at least one negative; counts the queries, positives and
    negatives kept in `stats`."""
    rows = []
    for qid in tqdm(positives, desc="Mining negatives", unit="query", disable=not show_progress):
        judged = qrels.get(qid, {})
        mined = [
            _mine_positive(qid, pid, windows[qid], judged, collection, scores, options, stats) for pid in positives[qid]
        ]
        mined = [row for row in mined if row is not None]
        stats.queries += bool(mined)
        rows.extend(mined)
    stats.positives = len(rows)
    stats.negatives = sum(len(row.negative_ids) for row in rows)
    return rows


def mine_hard_negatives(
    queries: Mapping[str, str],
    collection: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, int]],
    *,
    retriever: str | os.PathLike | None = "bm25",
    candidates: Mapping[str, Mapping[str, float]] | None = None,
    num_negatives: int = 1,
    rank_range: tuple[int, int] = (1, 100),
    min_grade: int = 1,
    seed: int = 0,
    sampling: str = "random",
    teacher=None,
    margin: float | None = None,
    relative_margin: float | None = None,
    skip_missing: bool = False,
    qrels_path: str | os.PathLike | None = None,
    sources: Mapping[str, str] | None = None,
    batch_size: int = 64,
    max_batch_tokens: int | None = None,
    device: str | None = None,
    index: str | os.PathLike | None = None,
    show_progress: bool = True,
) -> MiningResult:
    """Mines hard negatives for the positives of every judged query (see the module's description for the rules).

    Args:
        queries (`Mapping[str, str]`): query id -> text.
        collection (`Mapping[str, str]`): passage id -> text, the passages searched and sampled from.
        qrels (`Mapping[str, Mapping[str, int]]`): query id -> {passage id -> grade}; its queries are mined.
        retriever (`str` or `os.PathLike`, *optional*, defaults to `"bm25"`): the first stage, `"bm25"` or a dense
            bi-encoder folder (see [`retrieve_candidates`]); ignored when `candidates` are given.
        candidates (`Mapping[str, Mapping[str, float]]`, *optional*): a first-stage run (query id -> {passage id ->
            score}, e.g. from `hf_kd.data.read_run`) to take the ranks from instead of retrieving.
        num_negatives (`int`, *optional*, defaults to 1): negatives per positive.
        rank_range (`tuple[int, int]`, *optional*, defaults to `(1, 100)`): the first-stage ranks MIN..MAX (1-based,
            both included) negatives are drawn from.
        min_grade (`int`, *optional*, defaults to 1): the smallest grade of a positive.
        seed (`int`, *optional*, defaults to 0): the sampling seed.
        sampling (`str`, *optional*, defaults to `"random"`): `"random"` (seeded per positive) or `"top"`.
        teacher ([`hf_kd.teachers.Teacher`], *optional*): scores the positives and candidates, for the margins
            and for n-way rows.
        margin (`float`, *optional*): keep a candidate only if its teacher score < positive's - `margin`.
        relative_margin (`float`, *optional*): keep a candidate only if its score < positive's * (1 - this).
        skip_missing (`bool`, *optional*, defaults to `False`): leave out judged queries and positives without
            text instead of failing (see [`find_positives`]).
        qrels_path, sources: the files named in errors (see [`find_positives`]).
        batch_size (`int`, *optional*, defaults to 64): texts or pairs per forward pass.
        max_batch_tokens (`int`, *optional*): padded tokens per forward pass at most, texts or pairs x the batch's
            longest, for a dense retriever and the teacher (`None`: 2048 on a CPU, no cap elsewhere; 0: no cap; see
            `hf_kd.models.ranking_functions.resolve_max_batch_tokens`).
        device (`str`, *optional*): torch device of a dense retriever. Under `accelerate launch --num_processes N`
            the processes share the teacher's pairs (on CPUs where `device` is a CPU), and each gets all the scores.
        index (`str` or `os.PathLike`, *optional*): the `hf-kd index` folder of the dense retriever over this
            collection, searched instead of encoding the collection (see [`retrieve_candidates`]).
        show_progress (`bool`, *optional*, defaults to `True`): show progress bars.

    Returns:
        [`MiningResult`]: one row per positive that got at least one negative, in qrels order (positives by id).
    """
    _check_options(num_negatives, rank_range, sampling, margin, relative_margin, teacher)
    resolve_max_batch_tokens(max_batch_tokens, "cpu")  # refuses a bad value before any work
    batching = (batch_size, max_batch_tokens)
    options = {"num_negatives": num_negatives, "sampling": sampling, "seed": seed, "margins": (margin, relative_margin)}
    stats = MiningStats(
        parameters=_recorded_parameters(retriever, candidates, index, rank_range, min_grade, teacher, options)
    )
    positives = find_positives(
        qrels,
        queries,
        collection,
        min_grade=min_grade,
        skip_missing=skip_missing,
        qrels_path=qrels_path,
        sources=sources,
        stats=stats,
    )
    windows = _candidate_windows(
        candidates,
        retriever,
        queries,
        collection,
        positives,
        rank_range,
        batching,
        device,
        index,
        show_progress,
        stats,
    )
    scores = _score_positives_and_candidates(
        teacher, queries, collection, qrels, positives, windows, batching, show_progress, device, stats
    )
    rows = _mine_queries(positives, windows, qrels, collection, scores, options, stats, show_progress)
    return MiningResult(rows, stats)
