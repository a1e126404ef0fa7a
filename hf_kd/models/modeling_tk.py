"""TK (Transformer-Kernel): contextualised word embeddings matched by RBF kernels."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers import AutoModel
from transformers import initialization as init

from .configuration_tk import TKConfig
from .modeling_ranking import EncodedBatch, SplitRankingModel
from .ranking_functions import compiled_kernel_pooling, kernel_pooling, sinusoidal_positions, tokenize_texts


def match_matrix(queries: torch.Tensor, passages: torch.Tensor) -> torch.Tensor:
    """(n, Lq, Lp) dot products of aligned query and passage token vectors. One query broadcast against every
    passage (`EncodedBatch.expand`) is a single matrix product instead of n small ones."""
    if queries.shape[0] > 1 and queries.stride(0) == 0:
        return torch.matmul(passages, queries[0].T).transpose(1, 2)
    return torch.einsum("nqd,npd->nqp", queries, passages)


class TKModel(SplitRankingModel):
    """TK: `score = w . phi(M)` with `M` the cosine matrix of contextualised query/passage term vectors
    `c = alpha * e + (1 - alpha) * Transformer(e + positions)` and `phi` log-sum kernel pooling.

    The cached passage representation is the L2-normalised contextualised term vectors of the passage.
    """

    config_class = TKConfig
    base_model_prefix = "tk"
    backbone_prefixes = ("word_embeddings.",)

    def __init__(self, config: TKConfig):
        super().__init__(config)
        pad_id = getattr(config.backbone_config, "pad_token_id", None)
        self.word_embeddings = nn.Embedding(config.vocab_size, config.embedding_dim, padding_idx=pad_id)
        layer = nn.TransformerEncoderLayer(
            d_model=config.embedding_dim,
            nhead=config.num_attention_heads,
            dim_feedforward=config.intermediate_size,
            dropout=config.dropout,
            batch_first=True,
        )
        self.contextualizer = nn.TransformerEncoder(layer, config.num_layers, enable_nested_tensor=False)
        self.mixer = nn.Parameter(torch.full((1,), 0.5))
        self.dense = nn.Linear(len(config.kernel_mus), 1, bias=False)
        self.query_term_weights = nn.Embedding(config.vocab_size, 1) if config.query_term_weights else None
        self.post_init()

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, TKModel):
            if module.config.term_match_init:
                init.constant_(module.mixer, 1.0)
                weights = [mu**4 if mu > 0.5 else 0.0 for mu in module.config.kernel_mus]
                init.copy_(module.dense.weight, torch.tensor([weights], dtype=module.dense.weight.dtype))
            else:
                init.constant_(module.mixer, 0.5)
                init.uniform_(module.dense.weight, -0.014, 0.014)
            if module.query_term_weights is not None:
                init.ones_(module.query_term_weights.weight)

    @torch.no_grad()
    def init_query_term_weights(self, tokenizer, passages: Sequence[str], batch_size: int = 1024) -> None:
        """Sets the query term weights (`query_term_weights=True`) to each word piece's inverse document frequency
        in `passages`, `idf = ln(1 + (N - df + 0.5) / (df + 0.5))` as BM25's, to the power `query_term_idf_power`,
        divided by the mean over the word pieces that occur, so a typical term weighs 1 (and one in every passage
        about 0)."""
        if self.query_term_weights is None:
            raise ValueError("this TK has no query term weights: build it with query_term_weights=True")
        if not passages:
            raise ValueError("no passages to count document frequencies in")
        counts = torch.zeros(self.config.vocab_size, dtype=torch.float64)
        for start in range(0, len(passages), batch_size):
            for ids in self.tokenize_passages(tokenizer, passages[start : start + batch_size]):
                counts[torch.tensor(sorted(set(ids)), dtype=torch.long)] += 1
        total = len(passages)
        idf = torch.log1p((total - counts + 0.5) / (counts + 0.5)) ** float(self.config.query_term_idf_power)
        weights = idf / idf[counts > 0].mean()
        self.query_term_weights.weight.copy_(weights.unsqueeze(1).to(self.query_term_weights.weight.dtype))

    def load_backbone_weights(self, name_or_path: str) -> None:
        embeddings = AutoModel.from_pretrained(name_or_path).get_input_embeddings().weight
        if embeddings.shape != self.word_embeddings.weight.shape:
            raise ValueError(
                f"the word embeddings of {name_or_path!r} have shape {tuple(embeddings.shape)}, expected "
                f"{tuple(self.word_embeddings.weight.shape)}"
            )
        with torch.no_grad():
            self.word_embeddings.weight.copy_(embeddings)

    def tokenize_queries(self, tokenizer, queries: Sequence[str]) -> list[list[int]]:
        return tokenize_texts(tokenizer, queries, self.config.max_query_length)

    def tokenize_passages(self, tokenizer, passages: Sequence[str]) -> list[list[int]]:
        return tokenize_texts(tokenizer, passages, self.config.max_passage_length)

    def _encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> EncodedBatch:
        embeddings = self.word_embeddings(input_ids)
        positions = sinusoidal_positions(input_ids.shape[1], embeddings.shape[-1], embeddings.device, embeddings.dtype)
        contextual = self.contextualizer(embeddings + positions, src_key_padding_mask=~attention_mask.bool())
        mixed = self.mixer * embeddings + (1 - self.mixer) * contextual
        vectors = nn.functional.normalize(mixed, dim=-1) * attention_mask.unsqueeze(-1).to(mixed.dtype)
        return EncodedBatch(vectors, attention_mask)

    def encode_query_tensors(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> EncodedBatch:
        encoded = self._encode(input_ids, attention_mask)
        if self.query_term_weights is None:
            return encoded
        return EncodedBatch(encoded.embeddings, encoded.mask, self.query_term_weights(input_ids).squeeze(-1))

    encode_passage_tensors = _encode

    def kernel_features(
        self, queries: EncodedBatch, passages: EncodedBatch, chunk_size: int | None = None
    ) -> torch.Tensor:
        """(n, K) pooled kernel features of aligned pairs, `chunk_size` kernels at a time (default: the config's
        `kernel_chunk_size`; 0: all at once)."""
        match = match_matrix(queries.embeddings, passages.embeddings.to(queries.embeddings.dtype))
        mus = torch.tensor(self.config.kernel_mus, device=match.device, dtype=match.dtype)
        sigmas = torch.full_like(mus, self.config.kernel_sigma)
        chunk_size = self.config.kernel_chunk_size if chunk_size is None else chunk_size
        query_weights = queries.mask if queries.token_weights is None else queries.mask * queries.token_weights
        args = (match, query_weights, passages.mask, mus, sigmas, self.config.kernel_log_scale)
        if self.config.compile_kernel_pooling and not torch.is_grad_enabled():
            return compiled_kernel_pooling(*args, fallback_chunk_size=chunk_size)
        return kernel_pooling(*args, chunk_size)

    def score_pairs(self, queries: EncodedBatch, passages: EncodedBatch) -> torch.Tensor:
        return self.dense(self.kernel_features(queries, passages)).squeeze(-1)


__all__ = ["TKModel"]
