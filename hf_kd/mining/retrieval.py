"""The first stage of mining: BM25, or a dense bi-encoder searched exactly with faiss."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace

import numpy as np


class _SentenceTransformerEncoder:
    """A sentence-transformers bi-encoder behind the `encode_queries` / `encode_passages` interface of BERT_DOT that
    `hf_kd.evaluation.dense.encode_texts` calls; vectors are normalised for a cosine model, so that the inner
    product of the faiss index is the model's similarity. Texts are batched as the hf-kd models batch them: longest
    first, at most `batch_size` texts and `max_batch_tokens` padded tokens per batch (the texts as the model tokenises
    them, without a prompt the model may put before them)."""

    def __init__(self, model, name_or_path: str):
        similarity = model.similarity_fn_name or "cosine"
        if similarity not in ("cosine", "dot"):
            raise ValueError(
                f"{name_or_path}: its similarity is {similarity!r}; dense candidates are ranked by inner product, "
                "so the model must use 'cosine' or 'dot'"
            )
        self.model = model
        self.device = model.device
        self.normalize = similarity == "cosine"
        self.config = SimpleNamespace(architecture="SentenceTransformer")

    def _encode(self, encode, texts: Sequence[str], batch_size: int, max_batch_tokens: int | None) -> SimpleNamespace:
        import torch

        from ..models.ranking_functions import inverse_permutation, resolve_max_batch_tokens, token_budget_batches

        texts = list(texts)
        max_tokens = resolve_max_batch_tokens(max_batch_tokens, self.device)
        if not max_tokens or not texts:  # sentence-transformers sorts by length and batches by `batch_size` itself
            batches = [list(range(len(texts)))]
        else:
            lengths = self.model.tokenize(texts)["attention_mask"].sum(dim=1).tolist()
            batches = token_budget_batches(lengths, batch_size, max_tokens)
        parts = [
            encode(
                [texts[i] for i in rows],
                batch_size=batch_size,
                convert_to_tensor=True,
                normalize_embeddings=self.normalize,
                show_progress_bar=False,
            )
            for rows in batches
        ]
        laid_out = [i for rows in batches for i in rows]
        if laid_out == list(range(len(texts))):
            return SimpleNamespace(embeddings=torch.cat(parts))
        order = inverse_permutation(laid_out).to(parts[0].device)  # batches run longest first
        return SimpleNamespace(embeddings=torch.cat(parts)[order])

    def encode_queries(
        self, texts: Sequence[str], tokenizer=None, batch_size: int = 64, max_batch_tokens: int | None = None
    ) -> SimpleNamespace:
        encode = getattr(self.model, "encode_query", self.model.encode)
        return self._encode(encode, texts, batch_size, max_batch_tokens)

    def encode_passages(
        self, texts: Sequence[str], tokenizer=None, batch_size: int = 64, max_batch_tokens: int | None = None
    ) -> SimpleNamespace:
        encode = getattr(self.model, "encode_document", self.model.encode)
        return self._encode(encode, texts, batch_size, max_batch_tokens)


def load_dense_encoder(name_or_path: str | os.PathLike, device: str | None = None):
    """Loads a bi-encoder for dense candidates: an hf-kd BERT_DOT checkpoint (with `hf_kd.evaluation.load_model`),
    or a sentence-transformers `SentenceTransformer` folder or Hub id.

    Returns:
        `(model, tokenizer)` for `hf_kd.evaluation.dense.encode_texts` and `dense_retrieve`.
    """
    from transformers import AutoConfig

    from ..evaluation.loading import load_model
    from ..files import naming_weight_files
    from ..models import MODEL_CLASSES

    name_or_path = str(name_or_path)
    config = AutoConfig.from_pretrained(name_or_path)
    if config.model_type in {model.config_class.model_type for model in MODEL_CLASSES.values()}:
        with naming_weight_files(name_or_path):
            return load_model(name_or_path, device)
    if not (Path(name_or_path) / "modules.json").is_file() and Path(name_or_path).is_dir():
        raise ValueError(
            f"{name_or_path} is neither an hf-kd checkpoint nor a sentence-transformers folder (no modules.json); "
            "dense candidates need a BERT_DOT checkpoint or a SentenceTransformer bi-encoder"
        )
    import torch
    from sentence_transformers import SentenceTransformer

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    with naming_weight_files(name_or_path):
        model = SentenceTransformer(name_or_path, device=device).eval()
    return _SentenceTransformerEncoder(model, name_or_path), model.tokenizer


def retrieve_candidates(
    retriever: str | os.PathLike,
    queries: Mapping[str, str],
    collection: Mapping[str, str],
    k: int,
    *,
    batch_size: int = 64,
    max_batch_tokens: int | None = None,
    device: str | None = None,
    index: str | os.PathLike | None = None,
    show_progress: bool = True,
    record: dict | None = None,
) -> dict[str, dict[str, float]]:
    """The top `k` passages of the collection for every query.

    Under `accelerate launch --num_processes N` the processes share the work: each encodes every N-th passage of the
    collection for a dense retriever (all processes then search the whole, exactly), and each searches every N-th
    query; every process returns the whole run.

    Args:
        retriever (`str` or `os.PathLike`): `"bm25"` (bm25s, see `hf_kd.evaluation.bm25_search`), or a dense
            bi-encoder (see [`load_dense_encoder`]) whose collection vectors are searched exactly (faiss `Flat`).
        queries, collection: query id -> text, passage id -> text.
        k (`int`): passages per query.
        batch_size (`int`, *optional*, defaults to 64): texts per forward pass of a dense model.
        max_batch_tokens (`int`, *optional*): padded tokens per forward pass of a dense model at most (`None`: 2048
            on a CPU, no cap elsewhere; 0: no cap; see `hf_kd.evaluation.encode_texts`).
        device (`str`, *optional*): torch device of a dense model.
        index (`str` or `os.PathLike`, *optional*): a folder written by `hf-kd index` (`build_dense_index`) with the
            dense `retriever` over this `collection`; it is searched instead of encoding the collection again
            (checked against its `index_build.json`: same passages, same model files).
        show_progress (`bool`, *optional*, defaults to `True`): show progress bars.
        record (`dict`, *optional*): receives `"processes"`: each process's rank, queries searched and passages
            encoded or indexed (BM25: the main process indexes the whole collection once, and every process
            searches that one index, memory-mapped; a built `index`: none).

    Returns:
        `dict[str, dict[str, float]]`: query id -> {passage id -> first-stage score}, in the order of `queries`.
    """
    from ..processes import JobProcesses, job_processes

    processes = JobProcesses(job_processes(device))
    query_ids = processes.share(list(queries))
    my_queries = {qid: queries[qid] for qid in query_ids}
    if str(retriever) == "bm25":
        if index is not None:
            raise ValueError("an index is searched with the dense model that built it: give it as the retriever")
        bm25_index, indexed, folder = _shared_bm25_index(processes, collection, show_progress)
        try:
            run = bm25_index.search(my_queries, k=k, show_progress=show_progress) if my_queries else {}
            processes.gather(None)  # every process is done with the shared index's files
        finally:
            if folder is not None and processes.is_main:
                shutil.rmtree(folder, ignore_errors=True)
        return _merged_runs(processes, queries, run, indexed, record)
    from ..evaluation.dense import DenseIndex, dense_retrieve, encode_texts

    def search(model, tokenizer, dense_index) -> dict[str, dict[str, float]]:
        if not my_queries:
            return {}
        dense_index = dense_index.for_device(model.device)  # this process's GPU with a GPU build of faiss
        return dense_retrieve(
            model, tokenizer, dense_index, my_queries, k, batch_size, show_progress, max_batch_tokens=max_batch_tokens
        )

    if index is not None:
        from ..evaluation.indexing import check_index_build

        check_index_build(index, retriever, collection)  # before the model loads
        model, tokenizer = load_dense_encoder(retriever, processes.device or device)
        return _merged_runs(processes, queries, search(model, tokenizer, DenseIndex.load(index)), 0, record)
    model, tokenizer = load_dense_encoder(retriever, processes.device or device)
    ids = list(collection)
    mine = processes.share(ids)
    texts = [collection[pid] for pid in mine]
    vectors = encode_texts(
        model, tokenizer, texts, "passages", batch_size, show_progress=show_progress, max_batch_tokens=max_batch_tokens
    )
    dense_index = DenseIndex.build(_interleaved(processes.gather(vectors), len(ids)), ids, "Flat")
    return _merged_runs(processes, queries, search(model, tokenizer, dense_index), len(mine), record)


def _shared_bm25_index(processes, collection: Mapping[str, str], show_progress: bool):
    """The BM25 index of the collection, built once: by this process alone, or under several processes by the main
    process, saved to a temporary folder and loaded memory-mapped by every process (one copy in memory on a machine).

    Returns:
        the index, the passages this process indexed, and the temporary folder (None for a process alone).
    """
    from ..evaluation.bm25 import BM25Index

    if processes.count == 1:
        return BM25Index.build(dict(collection), show_progress=show_progress), len(collection), None

    def build() -> str:
        folder = tempfile.mkdtemp(prefix="hf-kd-bm25-")
        BM25Index.build(dict(collection), show_progress=show_progress).save(folder)
        return folder

    folder = processes.from_main(build)
    if not Path(folder).is_dir():  # a process on another machine builds its own copy
        return BM25Index.build(dict(collection), show_progress=False), len(collection), folder
    return BM25Index.load(folder), len(collection) if processes.is_main else 0, folder


def _interleaved(parts: list[np.ndarray], total: int) -> np.ndarray:
    """The rows of every process's share (`JobProcesses.share`: every `count`-th row from its rank on), back in the
    order of the whole."""
    if len(parts) == 1:
        return parts[0]
    whole = np.empty((total, parts[0].shape[1]), dtype=parts[0].dtype)
    for rank, part in enumerate(parts):
        whole[rank :: len(parts)] = part
    return whole


def _merged_runs(processes, queries: Mapping[str, str], run: dict, passages: int, record: dict | None) -> dict:
    """Every process's run merged, in the order of `queries`; `record["processes"]` says what each process did
    (`passages`: encoded or indexed)."""
    shares = processes.gather((run, passages))
    merged = {qid: candidates for part, _ in shares for qid, candidates in part.items()}
    if record is not None:
        record["processes"] = [
            {"rank": rank, "queries": len(part), "passages": count} for rank, (part, count) in enumerate(shares)
        ]
    return {qid: merged[qid] for qid in queries if qid in merged}
