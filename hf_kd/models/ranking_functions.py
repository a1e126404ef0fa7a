"""Pure building blocks of the hf-kd ranking models: the tokenisation conventions, padding and length-sorting
helpers, and the scoring functions (dot product, MaxSim, segment mean cosine, kernel pooling, sinusoidal positions).

Only torch and the standard library: this file is copied with the modeling code into every checkpoint folder.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
from torch import nn

# --------------------------------------------------------------------------------------------------------------------
# Tokenisation conventions
# --------------------------------------------------------------------------------------------------------------------


def check_texts(name: str, texts: Sequence[str]) -> None:
    """Rejects what cannot be scored: a non-list, non-strings, empty strings. Errors name the argument and index."""
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise TypeError(f"{name} must be a list of strings, got {type(texts).__name__}")
    if len(texts) == 0:
        raise ValueError(f"{name} is empty: pass at least one text")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{name}[{i}] must be a string, got {type(text).__name__}")
        if not text.strip():
            raise ValueError(f"{name}[{i}] is empty (or only whitespace): every text needs content to be scored")


def check_grouping(queries: Sequence[str], passages: Sequence[str]) -> int:
    """Returns k, the number of passages per query; passages[i*k:(i+1)*k] belong to queries[i]."""
    check_texts("queries", queries)
    check_texts("passages", passages)
    if len(passages) % len(queries) != 0:
        raise ValueError(
            f"got {len(queries)} queries and {len(passages)} passages: the number of passages must be a multiple of "
            "the number of queries (passages[i*k:(i+1)*k] belong to queries[i])"
        )
    return len(passages) // len(queries)


def tokenize_texts(tokenizer, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Word-piece ids without special tokens, truncated to `max_length` (over-long text is cut, never an error)."""
    return tokenizer(list(texts), add_special_tokens=False, truncation=True, max_length=max_length)["input_ids"]


def token_counts(tokenizer, texts: Sequence[str], max_length: int) -> list[int]:
    """Word pieces of each text as [`tokenize_texts`] gives them (no special tokens, at most `max_length`); each
    distinct text is tokenised once."""
    distinct = list(dict.fromkeys(texts))
    counts = dict(zip(distinct, map(len, tokenize_texts(tokenizer, distinct, max_length))))
    return [counts[text] for text in texts]


def special_token_id(tokenizer, name: str) -> int:
    token_id = getattr(tokenizer, f"{name}_token_id", None)
    if token_id is None:
        raise ValueError(f"the tokenizer has no {name} token; hf-kd models need a BERT-style tokenizer")
    return token_id


# --------------------------------------------------------------------------------------------------------------------
# Padding and length sorting
# --------------------------------------------------------------------------------------------------------------------


def pad_sequences(sequences: Sequence[Sequence[int]], pad_value: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pads id lists into a (batch, max_len) tensor and returns it with its 0/1 attention mask."""
    max_len = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), max_len), pad_value, dtype=torch.long)
    mask = torch.zeros((len(sequences), max_len), dtype=torch.long)
    for i, seq in enumerate(sequences):
        ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[i, : len(seq)] = 1
    return ids, mask


# Padded tokens per forward pass on a CPU. Bigger batches there only spill the caches: a MiniLM cross-encoder scored
# 1,000 DL20 BM25 pairs (95 tokens on average) 1.16x, and 400 SciFact pairs (351 tokens) 1.38x, as fast as in batches
# of 64 pairs, and as fast as at the best fixed batch size for each.
CPU_MAX_BATCH_TOKENS = 2048


def resolve_max_batch_tokens(max_batch_tokens: int | None, device) -> int:
    """The cap on padded tokens per forward pass: `max_batch_tokens` as given (0: no cap), or for `None` the
    device's default, `CPU_MAX_BATCH_TOKENS` on a CPU and no cap elsewhere (a GPU wants its batches full).

    >>> [resolve_max_batch_tokens(n, device) for n, device in ((None, "cpu"), (None, "cuda:0"), (0, "cpu"))]
    [2048, 0, 0]
    """
    if max_batch_tokens is None:
        return CPU_MAX_BATCH_TOKENS if torch.device(device).type == "cpu" else 0
    if isinstance(max_batch_tokens, bool) or not isinstance(max_batch_tokens, int) or max_batch_tokens < 0:
        raise ValueError(f"max_batch_tokens must be an integer >= 0 (0: no cap) or None, got {max_batch_tokens!r}")
    return max_batch_tokens


def token_budget_batches(lengths: Sequence[int], batch_size: int, max_tokens: int = 0) -> list[list[int]]:
    """Indices of `lengths` longest first (ties in input order), cut into batches of at most `batch_size` rows and,
    with `max_tokens`, at most `max_tokens` padded tokens (rows x the batch's longest); a row longer than
    `max_tokens` goes alone. Rows of length 0 (nothing to run) are not capped.

    >>> token_budget_batches([3, 10, 4, 9, 2], batch_size=4, max_tokens=20)
    [[1, 3], [2, 0, 4]]
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches, start = [], 0
    while start < len(order):
        longest = int(lengths[order[start]])
        rows = batch_size if max_tokens <= 0 or longest <= 0 else max(1, min(batch_size, max_tokens // longest))
        batches.append(order[start : start + rows])
        start += rows
    return batches


def inverse_permutation(order: Sequence[int]) -> torch.Tensor:
    """Row `i` of the result is the position of `i` in `order`: indexing rows laid out in `order` with it restores
    the original order.

    >>> inverse_permutation([1, 2, 0])
    tensor([2, 0, 1])
    """
    inverse = torch.empty(len(order), dtype=torch.long)
    inverse[torch.as_tensor(order, dtype=torch.long)] = torch.arange(len(order))
    return inverse


def real_width(attention_mask: torch.Tensor) -> int:
    """Columns up to the last real token of any row: what a padded batch can be trimmed to.

    >>> real_width(torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]]))
    2
    """
    positions = torch.arange(1, attention_mask.shape[1] + 1, device=attention_mask.device)
    return int((attention_mask.bool() * positions).max())


def length_sorted_sub_batches(attention_mask: torch.Tensor, min_size: int) -> list[torch.Tensor]:
    """Row indices of a padded batch split into `len // min_size` sub-batches of equal size (at least `min_size`
    rows each), longest rows first, so each sub-batch pads only to its own longest. One group (all rows, in order)
    when the batch is too small to split or `min_size` is 0.

    >>> length_sorted_sub_batches(torch.tensor([[1, 0, 0], [1, 1, 1], [1, 1, 0], [1, 1, 1]]), 2)
    [tensor([1, 3]), tensor([2, 0])]
    """
    num_groups = attention_mask.shape[0] // min_size if min_size > 0 else 1
    if num_groups <= 1:
        return [torch.arange(attention_mask.shape[0], device=attention_mask.device)]
    lengths = attention_mask.sum(dim=1)
    return list(torch.argsort(lengths, descending=True, stable=True).tensor_split(num_groups))


# --------------------------------------------------------------------------------------------------------------------
# Scoring functions (pure)
# --------------------------------------------------------------------------------------------------------------------


def dot_scores(queries: torch.Tensor, passages: torch.Tensor) -> torch.Tensor:
    """Row-wise dot product of aligned vectors.

    Args:
        queries: (n, D) query vectors.
        passages: (n, D) passage vectors.

    Returns:
        (n,) scores.

    >>> dot_scores(torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 4.0]]))
    tensor([11.])
    """
    return (queries * passages).sum(dim=-1)


def maxsim_scores(
    queries: torch.Tensor,
    query_mask: torch.Tensor,
    passages: torch.Tensor,
    passage_mask: torch.Tensor,
    mean: bool = False,
) -> torch.Tensor:
    """ColBERT late interaction: sum over query tokens of the max dot product over passage tokens.

    Padding is masked on both sides: padded passage tokens never win the max, padded query tokens add nothing.

    Args:
        queries: (n, Lq, D) query token vectors; query_mask: (n, Lq) 1 for real tokens.
        passages: (n, Lp, D) passage token vectors; passage_mask: (n, Lp) 1 for real tokens.
        mean: divide by the number of real query tokens (MeanMaxSim) instead of summing.

    Returns:
        (n,) scores.

    >>> q = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    >>> p = torch.tensor([[[2.0, 1.0], [0.0, 3.0], [9.0, 9.0]]])
    >>> maxsim_scores(q, torch.tensor([[1, 1]]), p, torch.tensor([[1, 1, 0]]))
    tensor([5.])
    >>> maxsim_scores(q, torch.tensor([[1, 1]]), p, torch.tensor([[1, 1, 0]]), mean=True)
    tensor([2.5000])
    """
    similarities = torch.einsum("nqd,npd->nqp", queries, passages)
    similarities = similarities.masked_fill(~passage_mask.bool()[:, None, :], float("-inf"))
    best = similarities.max(dim=-1).values
    weights = query_mask.to(best.dtype)
    total = (best * weights).sum(dim=-1)
    return total / weights.sum(dim=-1) if mean else total


def segment_mean_cosine(hidden: torch.Tensor, query_mask: torch.Tensor, passage_mask: torch.Tensor) -> torch.Tensor:
    """The cosine of the mean query-token vector and the mean passage-token vector of each row of a joint sequence.

    A sentence-transformers backbone (trained with mean pooling and cosine) ranks with this readout before any
    training; the cross-encoders add it to their CLS head (`mean_cosine_score`) so that they start from it.

    Args:
        hidden: (n, L, D) token vectors; query_mask, passage_mask: (n, L) 1 where a token belongs to that segment.

    Returns:
        (n,) cosines.

    >>> h = torch.tensor([[[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [5.0, 5.0]]])
    >>> segment_mean_cosine(h, torch.tensor([[1, 1, 0, 0]]), torch.tensor([[0, 0, 1, 0]]))
    tensor([0.])
    """

    def mean(mask: torch.Tensor) -> torch.Tensor:
        weights = mask.to(hidden.dtype).unsqueeze(-1)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)

    return nn.functional.cosine_similarity(mean(query_mask), mean(passage_mask), dim=-1)


_FAR_FROM_EVERY_KERNEL = 1e4


def kernel_pooling(
    match_matrix: torch.Tensor,
    query_mask: torch.Tensor,
    passage_mask: torch.Tensor,
    mus: torch.Tensor,
    sigmas: torch.Tensor,
    log_scale: float = 1.0,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """TK / KNRM log-sum kernel pooling.

    `K_k(i, j) = exp(-(M_ij - mu_k)^2 / (2 sigma_k^2))` over real passage tokens j,
    `phi_k = sum_i w_i log(max(sum_j K_k(i, j), 1e-10)) * log_scale` over query tokens i (weight `w_i`: the query
    mask, 1 for real tokens, or a term weight).

    Args:
        match_matrix: (n, Lq, Lp) cosine similarities.
        query_mask: (n, Lq), 1 for real tokens, or each query token's weight (0 for padding).
        passage_mask: (n, Lp), 1 for real tokens.
        mus, sigmas: (K,) kernel centres and widths.
        log_scale: factor applied to the log (TK uses 0.01).
        chunk_size: kernels evaluated at once. `None` (or 0) evaluates all K in one (n, Lq, Lp, K) tensor; 1 keeps
            the working memory at about one match matrix, whatever K (the features are the same).

    Returns:
        (n, K) pooled kernel features.

    >>> m = torch.tensor([[[1.0, 0.0]]])
    >>> kernel_pooling(m, torch.ones(1, 1), torch.ones(1, 2), torch.tensor([1.0]), torch.tensor([0.1]))
    tensor([[0.]])
    """
    chunk_size = chunk_size or len(mus)
    # Padded passage tokens are moved far from every kernel centre: their kernel values are exactly 0 (and so are
    # their gradients), which saves a mask multiply per kernel.
    match = match_matrix.masked_fill(~passage_mask.bool()[:, None, :], _FAR_FROM_EVERY_KERNEL).unsqueeze(0)
    scales = -1.0 / (2 * sigmas**2)
    in_place = not (torch.is_grad_enabled() and match.requires_grad)
    pooled = []  # (chunk, n, Lq) each: kernels first, so the sum runs over the last, contiguous dimension
    for start in range(0, len(mus), chunk_size):
        distance = match - mus[start : start + chunk_size, None, None, None]
        scale = scales[start : start + chunk_size, None, None, None]
        if in_place:  # nothing keeps `distance` for a backward pass: one buffer for the whole kernel evaluation
            kernels = distance.square_().mul_(scale).exp_()
        else:
            kernels = torch.exp(distance.square() * scale)
        pooled.append(torch.log(torch.clamp(kernels.sum(dim=-1), min=1e-10)) * log_scale)
    per_query_token = torch.cat(pooled) if len(pooled) > 1 else pooled[0]
    return (per_query_token * query_mask.to(per_query_token.dtype)[None]).sum(dim=-1).T


_compiled_kernel_pooling = None  # built on first use: `torch.compile` costs seconds, too much for import time
_compilation_failed = False


def compiled_kernel_pooling(
    match_matrix: torch.Tensor,
    query_mask: torch.Tensor,
    passage_mask: torch.Tensor,
    mus: torch.Tensor,
    sigmas: torch.Tensor,
    log_scale: float = 1.0,
    fallback_chunk_size: int | None = 1,
) -> torch.Tensor:
    """[`kernel_pooling`] of all kernels at once through `torch.compile` (shapes dynamic): the kernels and the sum over
    passage tokens fuse into one loop, so the (n, Lq, Lp, K) tensor is never built. Where compilation fails (no C++
    compiler), a warning, then eager `kernel_pooling` with `fallback_chunk_size` from then on."""
    global _compiled_kernel_pooling, _compilation_failed
    args = (match_matrix, query_mask, passage_mask, mus, sigmas, log_scale)
    if not _compilation_failed:
        try:
            if _compiled_kernel_pooling is None:
                _compiled_kernel_pooling = torch.compile(kernel_pooling, dynamic=True)
            return _compiled_kernel_pooling(*args, 0)
        except Exception as error:  # torch._dynamo / inductor raise many kinds; any of them means "run eagerly"
            _compilation_failed = True
            message = f"compiled kernel pooling failed ({type(error).__name__}: {error}); scoring eagerly"
            warnings.warn(message, stacklevel=2)
    return kernel_pooling(*args, fallback_chunk_size)


def sinusoidal_positions(length: int, dim: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(length, dim) sine/cosine position features of "Attention is all you need", as TK adds them."""
    positions = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    freqs = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim, device=device)
    table[:, 0::2] = torch.sin(positions * freqs)
    table[:, 1::2] = torch.cos(positions * freqs)[:, : dim // 2]
    return table.to(dtype)


__all__ = [
    "CPU_MAX_BATCH_TOKENS",
    "check_grouping",
    "check_texts",
    "dot_scores",
    "inverse_permutation",
    "compiled_kernel_pooling",
    "kernel_pooling",
    "length_sorted_sub_batches",
    "maxsim_scores",
    "pad_sequences",
    "real_width",
    "resolve_max_batch_tokens",
    "segment_mean_cosine",
    "sinusoidal_positions",
    "special_token_id",
    "token_budget_batches",
    "token_counts",
    "tokenize_texts",
]
