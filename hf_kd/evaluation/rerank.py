"""Re-ranking the candidates of a first-stage run with any zoo model."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from tqdm.auto import tqdm

from ..models.ranking_functions import inverse_permutation, resolve_max_batch_tokens, token_budget_batches

__all__ = [
    "check_run_inputs",
    "encode_passage_cache",
    "length_sorted_batches",
    "rerank",
    "score_cached",
    "top_candidates",
]

# batches of passages handed to `encode_passages` at once: the model tokenises them once and encodes them in
# token-length order; the chunk bounds the padded output (and shows progress)
ENCODE_CHUNK_BATCHES = 32


def top_candidates(run: dict[str, dict[str, float]], top_k: int) -> dict[str, list[str]]:
    """The `top_k` passage ids of every query of a run, best first (ties: ascending passage id).

    Args:
        run (`dict[str, dict[str, float]]`): query id -> {passage id -> score}.
        top_k (`int`): candidates kept per query.

    Returns:
        `dict[str, list[str]]`: query id -> passage ids, at most `top_k`, in run order.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    return {
        qid: [pid for pid, _ in sorted(candidates.items(), key=lambda item: (-item[1], item[0]))[:top_k]]
        for qid, candidates in run.items()
    }


def check_run_inputs(candidates: dict[str, list[str]], queries: dict[str, str], collection: dict[str, str]) -> None:
    """Checks that every query and candidate passage of a run has a text.

    Raises:
        ValueError: if the run is empty, or names queries or passages without text (with their counts and
            examples), so that nothing is silently dropped from the evaluation.
    """
    if not any(candidates.values()):
        raise ValueError("the run is empty: there are no candidates to re-rank")
    missing_queries = [qid for qid in candidates if qid not in queries]
    if missing_queries:
        raise ValueError(
            f"{len(missing_queries)} of {len(candidates)} queries of the run are missing from the queries, "
            f"e.g. {missing_queries[:5]}"
        )
    missing_passages = sorted({pid for pids in candidates.values() for pid in pids if pid not in collection})
    if missing_passages:
        num_pairs = sum(1 for pids in candidates.values() for pid in pids if pid not in collection)
        raise ValueError(
            f"{len(missing_passages)} candidate passages of the run ({num_pairs} query-passage pairs) are missing "
            f"from the collection, e.g. {missing_passages[:5]}"
        )


def token_cap(max_batch_tokens: int | None) -> dict[str, int]:
    """The keyword argument that passes a token cap on to a model's `score`, `encode_queries`, `encode_passages` or
    `score_encoded`: none for `None` (the model's default), so that a model without the argument still works."""
    return {} if max_batch_tokens is None else {"max_batch_tokens": max_batch_tokens}


def _chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def encode_passage_cache(
    model,
    tokenizer,
    passages: dict[str, str],
    batch_size: int = 64,
    show_progress: bool = True,
    max_batch_tokens: int | None = None,
    desc: str = "Encoding passages",
) -> dict:
    """Encodes every passage once and keeps its representation.

    The passages go to `model.encode_passages` in large chunks (`ENCODE_CHUNK_BATCHES` batches each, in order of
    character length so a chunk holds passages of similar length); the model tokenises a chunk once and encodes
    it in batches of similar token length. The representations are stored unpadded (`EncodedBatch.unbind`), on
    the device where the model puts them.

    Args:
        model: a zoo model with `supports_caching` (BERT_DOT, ColBERT, PreTT, TK).
        tokenizer: its tokenizer.
        passages (`dict[str, str]`): passage id -> text.
        batch_size (`int`, *optional*, defaults to 64): passages per forward pass.
        show_progress (`bool`, *optional*, defaults to `True`): show a progress bar.
        max_batch_tokens (`int`, *optional*): padded tokens per forward pass at most (`None`: 2048 on a CPU, no cap
            elsewhere; 0: no cap; see `hf_kd.models.ranking_functions.resolve_max_batch_tokens`).
        desc (`str`, *optional*, defaults to `"Encoding passages"`): what the progress bar says.

    Returns:
        `dict[str, EncodedBatch]`: passage id -> its 1-row representation.
    """
    order = sorted(passages, key=lambda pid: len(passages[pid]))
    cache = {}
    with tqdm(total=len(order), desc=desc, unit="passage", disable=not show_progress) as progress:
        for pids in _chunks(order, batch_size * ENCODE_CHUNK_BATCHES):
            encoded = model.encode_passages(
                [passages[pid] for pid in pids], tokenizer, batch_size=batch_size, **token_cap(max_batch_tokens)
            )
            cache.update(zip(pids, encoded.unbind()))
            progress.update(len(pids))
    return cache


def _cached_length(representation) -> int:
    """Tokens of a cached (unpadded) representation; 0 for single vectors, which need no padding."""
    return 0 if representation.mask is None else representation.mask.shape[1]


def length_sorted_batches(representations: Sequence, batch_size: int) -> tuple[list, torch.Tensor]:
    """Concatenates cached 1-row representations into batches of similar length (longest first), so each batch
    pads only to its own longest.

    Returns:
        `(batches, restore)`: the padded batches, and the index that puts the concatenated per-row results of the
        batches back into the order of `representations`.
    """
    rows_of_batches = token_budget_batches([_cached_length(r) for r in representations], batch_size)
    cat = type(representations[0]).cat
    batches = [cat([representations[i] for i in rows]) for rows in rows_of_batches]
    return batches, inverse_permutation([i for rows in rows_of_batches for i in rows])


def score_cached(
    model, query, batches: Sequence, restore: torch.Tensor, max_batch_tokens: int | None = None
) -> torch.Tensor:
    """`model.score_encoded` of one encoded query against batches from `length_sorted_batches`, in the order of
    the representations the batches were built from (`max_batch_tokens`: the token cap of the models that run pairs
    through transformer layers together, PreTT)."""
    scores = [model.score_encoded(query, batch, **token_cap(max_batch_tokens)) for batch in batches]
    return torch.cat(scores)[restore]


def rerank(
    model,
    tokenizer,
    queries: dict[str, str],
    collection: dict[str, str],
    run: dict[str, dict[str, float]],
    top_k: int = 100,
    batch_size: int = 64,
    cache_passages: bool = True,
    show_progress: bool = True,
    max_batch_tokens: int | None = None,
    label: str | None = None,
) -> dict[str, dict[str, float]]:
    """Re-ranks the `top_k` candidates of every query of a run with a zoo model.

    With `cache_passages` and a model that `supports_caching`, every distinct candidate passage is encoded once
    (length-sorted batches) and its representation reused for every query that retrieved it; each query is then
    encoded once and scored with `model.score_encoded` against its candidates, in batches of similar cached length
    (each padded to its own longest), the scores returned in candidate order. Otherwise (`BERT_CAT`, or
    `cache_passages=False`) `model.score` scores the (query, passage) pairs directly. Both give the same scores.

    Args:
        model: any zoo model (`score`; `supports_caching`, `encode_queries`, `encode_passages`, `score_encoded`
            for cached re-ranking).
        tokenizer: the model's tokenizer.
        queries (`dict[str, str]`): query id -> text; must cover every query of the run.
        collection (`dict[str, str]`): passage id -> text; must cover every re-ranked candidate.
        run (`dict[str, dict[str, float]]`): the first stage, query id -> {passage id -> score}.
        top_k (`int`, *optional*, defaults to 100): candidates re-ranked per query (the best by run score);
            the rest are not part of the output.
        batch_size (`int`, *optional*, defaults to 64): texts or pairs per forward pass.
        cache_passages (`bool`, *optional*, defaults to `True`): reuse passage representations across queries.
        show_progress (`bool`, *optional*, defaults to `True`): show progress bars.
        max_batch_tokens (`int`, *optional*): padded tokens per forward pass at most, texts or pairs x the batch's
            longest (`None`: 2048 on a CPU, no cap elsewhere; 0: no cap; see
            `hf_kd.models.ranking_functions.resolve_max_batch_tokens`).
        label (`str`, *optional*): what is re-ranked with what, for the progress bars (e.g. `"dl20-dev with
            bert_dot-T1"` gives "Encoding the passages of dl20-dev with bert_dot-T1" and "Re-ranking dl20-dev with
            bert_dot-T1", one step per query).

    Returns:
        `dict[str, dict[str, float]]`: query id -> {passage id -> model score} for the top-`k` candidates.

    Raises:
        ValueError: if the run is empty, names a query or passage without text, or `max_batch_tokens` is not an
            integer >= 0.
    """
    resolve_max_batch_tokens(max_batch_tokens, "cpu")  # refuses a bad value before any work
    candidates = top_candidates(run, top_k)
    check_run_inputs(candidates, queries, collection)
    query_ids = [qid for qid, pids in candidates.items() if pids]
    reranked: dict[str, dict[str, float]] = {qid: {} for qid in candidates}
    rerank_desc = f"Re-ranking {label}" if label else "Re-ranking"
    encode_desc = f"Encoding the passages of {label}" if label else "Encoding passages"

    with torch.inference_mode():
        if cache_passages and getattr(model, "supports_caching", False):
            distinct = {pid: collection[pid] for qid in query_ids for pid in candidates[qid]}
            cache = encode_passage_cache(
                model, tokenizer, distinct, batch_size, show_progress, max_batch_tokens, desc=encode_desc
            )
            encoded_queries = model.encode_queries(
                [queries[qid] for qid in query_ids], tokenizer, batch_size=batch_size, **token_cap(max_batch_tokens)
            )
            for qid, query in zip(
                tqdm(query_ids, desc=rerank_desc, unit="query", disable=not show_progress), encoded_queries.unbind()
            ):
                batches, restore = length_sorted_batches([cache[pid] for pid in candidates[qid]], batch_size)
                scores = score_cached(model, query, batches, restore, max_batch_tokens)
                reranked[qid] = dict(zip(candidates[qid], scores.tolist()))
        else:
            for qid in tqdm(query_ids, desc=rerank_desc, unit="query", disable=not show_progress):
                pids = candidates[qid]
                scores = model.score(
                    [queries[qid]] * len(pids),
                    [collection[pid] for pid in pids],
                    tokenizer,
                    batch_size,
                    **token_cap(max_batch_tokens),
                )
                reranked[qid] = dict(zip(pids, scores.tolist()))
    return reranked
