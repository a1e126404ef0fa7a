"""Query latency of re-ranking, the efficiency side of the paper's Table 1.

Only what happens at query time is timed: for architectures that cache passage representations (BERT_DOT,
ColBERT, PreTT, TK) the candidates are encoded beforehand, as an index would hold them, and a query costs one
query encoding plus scoring against the cached representations; BERT_CAT scores every (query, passage) pair.

A timing is only as good as the machine was idle: each result records the system's load average before and after
the measurement beside the CPU threads the model computed with, and [`timed_while_busy`] says whether other work ran
(the load exceeded those threads).
"""

from __future__ import annotations

import os
import random
import resource
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from .rerank import encode_passage_cache, length_sorted_batches, score_cached

__all__ = [
    "LatencyResult",
    "latency_candidates",
    "load_average",
    "measure_rerank_latency",
    "peak_memory_bytes",
    "timed_while_busy",
]


@dataclass
class LatencyResult:
    """Re-ranking latency of one model.

    Attributes:
        name (`str`): label of the model in tables.
        architecture (`str`): `bert_cat`, `bert_dot`, `colbert`, `prett` or `tk`.
        num_queries (`int`): timed queries.
        num_candidates (`int`): candidates re-ranked per query.
        median_ms (`float`): median milliseconds per query.
        p90_ms (`float`): 90th percentile milliseconds per query.
        mean_ms (`float`): mean milliseconds per query.
        peak_memory_bytes (`int`): on CUDA the peak allocated GPU memory (weights, cached candidates of a query,
            activations); on CPU the peak resident memory of the process.
        storage_bytes_per_passage (`float`): mean bytes of the cached representation of a passage (0 for
            BERT_CAT, which caches nothing).
        device (`str`): where the model ran.
        cpu_threads (`int` or `None`): CPU threads torch computed with (`torch.get_num_threads()`).
        load_average_before (`list[float]` or `None`): the system's 1, 5 and 15 minute load averages
            (`os.getloadavg()`) just before the measurement; None where the platform has none.
        load_average_after (`list[float]` or `None`): the same just after it.
    """

    name: str
    architecture: str
    num_queries: int
    num_candidates: int
    median_ms: float
    p90_ms: float
    mean_ms: float
    peak_memory_bytes: int
    storage_bytes_per_passage: float
    device: str
    cpu_threads: int | None = None
    load_average_before: list[float] | None = None
    load_average_after: list[float] | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def load_average() -> list[float] | None:
    """The system's 1, 5 and 15 minute load averages (`os.getloadavg()`), rounded to 0.01; None where the platform
    has none (Windows)."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def timed_while_busy(result: LatencyResult | dict) -> bool | None:
    """Whether other work ran while `result` was measured: the 1-minute load average before or after the measurement
    exceeded the CPU threads the model computed with (its own threads account for at most that many); None when the
    result records no load (older results, or a platform without load averages)."""
    item = result.to_dict() if isinstance(result, LatencyResult) else result
    threads = item.get("cpu_threads")
    loads = [load[0] for load in (item.get("load_average_before"), item.get("load_average_after")) if load]
    if not threads or not loads:
        return None
    return max(loads) > threads


def latency_candidates(
    runs: Sequence[dict[str, dict[str, float]]],
    collection: dict[str, str],
    query_ids: Sequence[str],
    num_candidates: int = 1000,
    seed: int = 0,
) -> dict[str, list[str]]:
    """Candidate lists for latency measurements: the union of the runs' candidates, topped up to `num_candidates`.

    The union is taken in run order (first run's candidates first, then the new ones of the next run, each run
    best first) and cut at `num_candidates`; missing candidates are drawn, seeded, from the other passages of
    the collection.

    Args:
        runs (`Sequence[dict]`): first-stage runs, query id -> {passage id -> score}.
        collection (`dict[str, str]`): passage id -> text.
        query_ids (`Sequence[str]`): the queries to build lists for.
        num_candidates (`int`, *optional*, defaults to 1000): candidates per query.
        seed (`int`, *optional*, defaults to 0): seed of the top-up draw.

    Returns:
        `dict[str, list[str]]`: query id -> `num_candidates` distinct passage ids of the collection.

    Raises:
        ValueError: if the collection has fewer than `num_candidates` passages.
    """
    if len(collection) < num_candidates:
        raise ValueError(f"the collection has {len(collection)} passages, fewer than num_candidates={num_candidates}")
    rng = random.Random(seed)
    all_ids = list(collection)
    candidates = {}
    for qid in query_ids:
        chosen: dict[str, None] = {}
        for run in runs:
            ranked = sorted(run.get(qid, {}).items(), key=lambda item: (-item[1], item[0]))
            chosen.update((pid, None) for pid, _ in ranked if pid in collection)
        chosen = dict.fromkeys(list(chosen)[:num_candidates])
        while len(chosen) < num_candidates:
            for pid in rng.sample(all_ids, num_candidates - len(chosen)):
                chosen.setdefault(pid, None)
        candidates[qid] = list(chosen)
    return candidates


def peak_memory_bytes(device: torch.device) -> int:
    """Peak allocated GPU memory since the last reset on CUDA; peak resident memory of the process otherwise."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _prepare_candidates(model, tokenizer, passages: Sequence[str], caching: bool, batch_size: int):
    """What a query's clock starts with: the passages' cached representations padded into batches of similar
    length for a caching architecture, the passage texts otherwise."""
    if not caching:
        return list(passages)
    cache = encode_passage_cache(model, tokenizer, dict(enumerate(passages)), batch_size, show_progress=False)
    return length_sorted_batches([cache[i] for i in range(len(passages))], batch_size)


def _rerank_query(model, tokenizer, query: str, prepared, caching: bool, batch_size: int) -> torch.Tensor:
    """The timed part: the scores of the prepared candidates of one query, in candidate order."""
    if caching:
        return score_cached(model, model.encode_queries([query], tokenizer), *prepared)
    return model.score([query] * len(prepared), prepared, tokenizer, batch_size=batch_size)


def measure_rerank_latency(
    model,
    tokenizer,
    queries: Sequence[str],
    candidates: Sequence[Sequence[str]],
    batch_size: int = 256,
    warmup: int = 1,
    name: str | None = None,
    show_progress: bool = True,
) -> LatencyResult:
    """Times re-ranking the candidates of each query, one query at a time.

    For caching architectures each query's candidates are encoded and padded into batches of similar length before
    its clock starts; the timed part is `encode_queries` plus `score_encoded` on those batches, with the scores put
    back in candidate order. For BERT_CAT the timed part is `score` on every (query, passage) pair, tokenisation
    included.

    Args:
        model: a zoo model, already on its device.
        tokenizer: its tokenizer.
        queries (`Sequence[str]`): query texts.
        candidates (`Sequence[Sequence[str]]`): the passage texts to re-rank for each query.
        batch_size (`int`, *optional*, defaults to 256): candidates encoded or scored per forward pass.
        warmup (`int`, *optional*, defaults to 1): untimed runs on the first query before timing.
        name (`str`, *optional*): label for tables; defaults to the model class name.
        show_progress (`bool`, *optional*, defaults to `True`): show a progress bar.

    Returns:
        [`LatencyResult`]
    """
    if len(queries) != len(candidates) or not queries:
        raise ValueError(f"need one candidate list per query, got {len(queries)} queries and {len(candidates)} lists")
    model.eval()
    device = torch.device(getattr(model, "device", "cpu"))
    caching = bool(getattr(model, "supports_caching", False))
    architecture = getattr(getattr(model, "config", None), "architecture", type(model).__name__)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    load_before = load_average()
    timings_ms = []
    storage_bytes, num_stored = 0, 0
    with torch.inference_mode():
        for position, (query, passages) in enumerate(
            tqdm(list(zip(queries, candidates)), desc=f"Latency {name or architecture}", disable=not show_progress)
        ):
            prepared = _prepare_candidates(model, tokenizer, passages, caching, batch_size)
            if caching:
                storage_bytes += sum(batch.nbytes() for batch in prepared[0])
                num_stored += len(passages)
            for _ in range(warmup if position == 0 else 0):
                _rerank_query(model, tokenizer, query, prepared, caching, batch_size)
            _synchronize(device)
            start = time.perf_counter()
            _rerank_query(model, tokenizer, query, prepared, caching, batch_size)
            _synchronize(device)
            timings_ms.append((time.perf_counter() - start) * 1000)
            del prepared
    load_after = load_average()

    return LatencyResult(
        name=name or type(model).__name__,
        architecture=architecture,
        num_queries=len(timings_ms),
        num_candidates=round(statistics.mean(len(c) for c in candidates)),
        median_ms=statistics.median(timings_ms),
        p90_ms=float(np.percentile(timings_ms, 90)),
        mean_ms=statistics.mean(timings_ms),
        peak_memory_bytes=peak_memory_bytes(device),
        storage_bytes_per_passage=storage_bytes / num_stored if num_stored else 0.0,
        device=str(device),
        cpu_threads=torch.get_num_threads(),
        load_average_before=load_before,
        load_average_after=load_after,
    )
