"""The single-vector encodings an adaptation shares: the starting model (or a student) over the whole corpus,
searched exactly with faiss, and scoring any (query, document) pair from the same vectors."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def start_encoder(
    start_model: str, max_passage_length: int, max_query_length: int, special_tokens_included: bool = False
):
    """The starting model as a BERT_DOT (mean pooling, cosine: a sentence-transformers bi-encoder as it scores)
    reading `max_query_length` word pieces of each query and `max_passage_length` of each passage;
    `(model, tokenizer)`.

    With `special_tokens_included`, `max_passage_length` counts [CLS] and [SEP] too, as a sentence-transformers
    model's `max_seq_length` does: the vectors are then the ones the teacher `SentenceTransformer` gives."""
    from transformers import AutoTokenizer

    from .. import model_class_for

    model = model_class_for("bert_dot").from_backbone(
        start_model,
        pooling="mean",
        normalize_embeddings=True,
        max_query_length=max_query_length,
        max_passage_length=max_passage_length - 2 if special_tokens_included else max_passage_length,
    )
    return model.eval(), AutoTokenizer.from_pretrained(start_model)


class CorpusVectors:
    """A single-vector model's vectors of a whole corpus (encoded, or read back from `cache`), an exact faiss
    index over them, and the model's scores of any (query, document) pair from the same vectors."""

    def __init__(self, model, tokenizer, corpus: dict[str, str], cache: Path | None = None):
        from ..evaluation.dense import DenseIndex

        self.model, self.tokenizer = model, tokenizer
        self.ids = list(corpus)
        self.rows = {doc_id: row for row, doc_id in enumerate(self.ids)}
        if cache is not None and cache.is_file():
            self.vectors = np.load(cache)
            if self.vectors.shape[0] != len(self.ids):
                raise ValueError(f"{cache} holds {self.vectors.shape[0]} vectors for a corpus of {len(self.ids)}")
        else:
            self.vectors = self._encode([corpus[d] for d in self.ids], "passages", show_progress=True)
            if cache is not None:
                cache.parent.mkdir(parents=True, exist_ok=True)
                staging = cache.with_name(cache.name + ".tmp.npy")
                np.save(staging, self.vectors)
                staging.replace(cache)
        self.index = DenseIndex.build(self.vectors, self.ids)

    def _encode(self, texts: list[str], kind: str, show_progress: bool) -> np.ndarray:
        from ..evaluation.dense import encode_texts

        return encode_texts(self.model, self.tokenizer, texts, kind, batch_size=64, show_progress=show_progress)

    def query_vectors(self, queries: dict[str, str]) -> np.ndarray:
        return self._encode(list(queries.values()), "queries", show_progress=False)

    def retrieve(self, queries: dict[str, str], k: int = 100) -> dict[str, dict[str, float]]:
        scores, ids = self.index.search(self.query_vectors(queries), min(k, len(self.ids)))
        return {q: {p: float(s) for p, s in zip(ids[i], scores[i])} for i, q in enumerate(queries)}

    def all_scores(self, queries: dict[str, str]) -> np.ndarray:
        return self.query_vectors(queries) @ self.vectors.T

    def rerank(self, queries: dict[str, str], candidates: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        scores = self.all_scores(queries)
        return {q: {p: float(scores[i, self.rows[p]]) for p in candidates.get(q, {})} for i, q in enumerate(queries)}


class SentenceTransformerVectors(CorpusVectors):
    """[`CorpusVectors`] of any sentence-transformers bi-encoder (any backbone it loads, such as MPNet), encoded by
    the model itself (`encode_query` / `encode_document`, `max_length` tokens of each text) and normalised where its
    similarity is cosine, so that the inner product is the model's own score. With `bf16` the model runs under
    bfloat16 autocast (a base-sized teacher encodes a corpus several times faster on a CPU with bfloat16 units) and
    the vectors are kept in float32."""

    def __init__(
        self, name_or_path: str, max_length: int, corpus: dict[str, str], cache: Path | None = None, bf16: bool = False
    ):
        from sentence_transformers import SentenceTransformer

        self.bf16 = bf16
        model = SentenceTransformer(name_or_path, device="cpu")
        model.max_seq_length = max_length
        if model.similarity_fn_name not in ("cosine", "dot"):
            raise ValueError(
                f"{name_or_path}: a teacher of the corpus scores by cosine or dot product; its similarity is "
                f"{model.similarity_fn_name!r}"
            )
        super().__init__(model, model.tokenizer, corpus, cache)

    def _encode(self, texts: list[str], kind: str, show_progress: bool) -> np.ndarray:
        import torch

        encode = self.model.encode_document if kind == "passages" else self.model.encode_query
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            vectors = encode(
                texts,
                batch_size=32,
                convert_to_tensor=True,
                normalize_embeddings=self.model.similarity_fn_name == "cosine",
                show_progress_bar=show_progress,
            )
        return vectors.float().cpu().numpy()
