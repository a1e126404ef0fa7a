"""Dense retrieval with a BERT_DOT model: encode a collection, index it with faiss, search top-k."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import faiss
import numpy as np
from tqdm.auto import tqdm

from ..files import atomic_path, write_json_atomic
from .rerank import token_cap

__all__ = ["INDEX_TYPES", "DenseIndex", "dense_retrieve", "encode_texts", "faiss_gpu_count", "index_factory_string"]

INDEX_TYPES = ("flat", "hnsw", "ivfpq")
INDEX_FILE = "index.faiss"
IDS_FILE = "ids.json"
CONFIG_FILE = "index_config.json"
# batches of texts handed to the model's encoder at once: it tokenises them once and encodes them in token-length
# order; the chunk shows progress
ENCODE_CHUNK_BATCHES = 32


def index_factory_string(
    index_type: str = "flat",
    fp16: bool = False,
    hnsw_m: int = 32,
    nlist: int = 1024,
    pq_m: int = 16,
    pq_nbits: int = 8,
) -> str:
    """The `faiss.index_factory` description of an index type.

    Args:
        index_type (`str`, *optional*, defaults to `"flat"`): `"flat"` (exact inner product), `"hnsw"` (graph,
            approximate) or `"ivfpq"` (inverted lists over product-quantised codes, approximate, compact).
        fp16 (`bool`, *optional*, defaults to `False`): store the vectors of `flat` and `hnsw` as float16
            (`SQfp16`), halving the index.
        hnsw_m (`int`, *optional*, defaults to 32): neighbours per HNSW node.
        nlist (`int`, *optional*, defaults to 1024): IVF lists (needs at least that many vectors to train).
        pq_m (`int`, *optional*, defaults to 16): PQ sub-quantisers; must divide the vector size.
        pq_nbits (`int`, *optional*, defaults to 8): bits per PQ code.

    Returns:
        `str`: e.g. `"Flat"`, `"HNSW32,Flat"`, `"IVF1024,PQ16x8"`.
    """
    storage = "SQfp16" if fp16 else "Flat"
    if index_type == "flat":
        return storage
    if index_type == "hnsw":
        return f"HNSW{hnsw_m},{storage}"
    if index_type == "ivfpq":
        return f"IVF{nlist},PQ{pq_m}x{pq_nbits}"
    raise ValueError(f"index_type must be one of {INDEX_TYPES}, got {index_type!r}")


def _check_single_vectors(model, embeddings) -> None:
    if embeddings.dim() != 2:
        architecture = getattr(getattr(model, "config", None), "architecture", type(model).__name__)
        raise ValueError(
            f"dense retrieval needs one vector per text (a BERT_DOT model), but this {architecture} model returns "
            f"embeddings of shape {tuple(embeddings.shape)}"
        )


def encode_texts(
    model,
    tokenizer,
    texts: Sequence[str],
    kind: str = "passages",
    batch_size: int = 64,
    fp16: bool = False,
    show_progress: bool = True,
    max_batch_tokens: int | None = None,
) -> np.ndarray:
    """Encodes texts into one vector each with a single-vector model (BERT_DOT), in length-sorted batches.

    The texts go to the model's encoder in large chunks (`ENCODE_CHUNK_BATCHES` batches each, in order of
    character length); the encoder tokenises a chunk once and encodes it in batches of similar token length.

    Args:
        model: a model whose `encode_passages` / `encode_queries` return one vector per text.
        tokenizer: its tokenizer.
        texts (`Sequence[str]`): the texts, non-empty.
        kind (`str`, *optional*, defaults to `"passages"`): `"passages"` or `"queries"`.
        batch_size (`int`, *optional*, defaults to 64): texts per forward pass.
        fp16 (`bool`, *optional*, defaults to `False`): return float16 vectors (half the memory of a large
            collection); float32 otherwise.
        show_progress (`bool`, *optional*, defaults to `True`): show a progress bar.
        max_batch_tokens (`int`, *optional*): padded tokens per forward pass at most, texts x the batch's longest
            (`None`: 2048 on a CPU, no cap elsewhere; 0: no cap; see
            `hf_kd.models.ranking_functions.resolve_max_batch_tokens`).

    Returns:
        `np.ndarray`: (len(texts), D) vectors, in the order of `texts`.

    Raises:
        ValueError: if the model produces more than one vector per text (ColBERT, PreTT, TK cannot be searched
            with a single-vector index).
    """
    if kind not in ("passages", "queries"):
        raise ValueError(f"kind must be 'passages' or 'queries', got {kind!r}")
    encode = model.encode_passages if kind == "passages" else model.encode_queries
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    chunk = batch_size * ENCODE_CHUNK_BATCHES
    vectors: np.ndarray | None = None
    with tqdm(total=len(texts), desc=f"Encoding {kind}", unit=kind[:-1], disable=not show_progress) as progress:
        for start in range(0, len(order), chunk):
            rows = order[start : start + chunk]
            texts_of_chunk = [texts[i] for i in rows]
            embeddings = encode(
                texts_of_chunk, tokenizer, batch_size=batch_size, **token_cap(max_batch_tokens)
            ).embeddings
            _check_single_vectors(model, embeddings)
            if vectors is None:
                vectors = np.empty((len(texts), embeddings.shape[1]), dtype=np.float16 if fp16 else np.float32)
            vectors[rows] = embeddings.float().cpu().numpy()
            progress.update(len(rows))
    if vectors is None:
        raise ValueError(f"no {kind} to encode")
    return vectors


class DenseIndex:
    """A faiss inner-product index over passage vectors, with the passage ids of its rows.

    Args:
        index (`faiss.Index`): an index with `METRIC_INNER_PRODUCT`.
        ids (`list[str]`): passage id of each row of the index.
        factory (`str`): the `faiss.index_factory` description the index was built from.
        search_params (`dict`, *optional*): search-time parameters (`efSearch`, `nprobe`), applied now and saved.
        shards (`list[faiss.Index]`, *optional*): indexes over consecutive slices of the rows, searched together
            instead of `index` (pass `index=None`): `faiss.IndexShards` searches each and merges their top-k
            exactly, so sharded exact search returns what one flat index returns.
    """

    def __init__(
        self,
        index: faiss.Index | None,
        ids: list[str],
        factory: str,
        search_params: dict | None = None,
        shards: list[faiss.Index] | None = None,
    ):
        if (index is None) == (not shards):
            raise ValueError("pass either one faiss index or a list of shards")
        if shards:
            index = faiss.IndexShards(shards[0].d, True, True)  # threaded, ids numbered on across the shards
            for shard in shards:
                index.add_shard(shard)
        if index.ntotal != len(ids):
            raise ValueError(f"the index holds {index.ntotal} vectors but {len(ids)} ids were given")
        self.index = index
        self.shards = list(shards) if shards else [index]  # the sharded index does not keep its shards alive
        self.ids = list(ids)
        self.factory = factory
        self.search_params = dict(search_params or {})
        self.on_gpus = False
        parameter_space = faiss.ParameterSpace()
        for name, value in self.search_params.items():
            parameter_space.set_index_parameter(self.index, name, value)

    @classmethod
    def build(
        cls,
        vectors: np.ndarray,
        ids: Sequence[str],
        factory: str = "Flat",
        ef_construction: int | None = None,
        ef_search: int | None = None,
        nprobe: int | None = None,
        add_batch_size: int = 65536,
        num_shards: int = 1,
    ) -> DenseIndex:
        """Builds (trains where needed) an inner-product index over `vectors`.

        Args:
            vectors (`np.ndarray`): (n, D) float32 or float16 passage vectors.
            ids (`Sequence[str]`): the n passage ids, unique.
            factory (`str`, *optional*, defaults to `"Flat"`): a `faiss.index_factory` description, see
                [`index_factory_string`]; `"Flat"` is exact search (`IndexFlatIP`).
            ef_construction (`int`, *optional*): HNSW build-time beam width.
            ef_search (`int`, *optional*): HNSW search-time beam width.
            nprobe (`int`, *optional*): IVF lists visited per query.
            add_batch_size (`int`, *optional*, defaults to 65536): vectors converted and added at a time.
            num_shards (`int`, *optional*, defaults to 1): indexes over consecutive slices of the vectors, each built
                (and trained) on its own slice and searched in parallel; the per-shard top-k are merged exactly.

        Returns:
            [`DenseIndex`]

        Example:
            ```python
            >>> import numpy as np
            >>> vectors = np.random.default_rng(0).standard_normal((100, 8)).astype(np.float32)
            >>> ids = [f"p{i}" for i in range(100)]
            >>> one, sharded = DenseIndex.build(vectors, ids), DenseIndex.build(vectors, ids, num_shards=3)
            >>> one.search(vectors[:2], k=5)[1] == sharded.search(vectors[:2], k=5)[1]
            True

            ```
        """
        if vectors.ndim != 2 or len(vectors) == 0:
            raise ValueError(f"vectors must be a non-empty (n, D) array, got shape {vectors.shape}")
        if len(ids) != len(vectors):
            raise ValueError(f"got {len(vectors)} vectors but {len(ids)} ids")
        if len(set(ids)) != len(ids):
            raise ValueError("passage ids must be unique")
        if not isinstance(num_shards, int) or isinstance(num_shards, bool) or not 1 <= num_shards <= len(vectors):
            raise ValueError(f"num_shards must be an integer from 1 to the number of vectors, got {num_shards!r}")
        bounds = np.linspace(0, len(vectors), num_shards + 1).astype(int)
        shards = [
            _build_faiss_index(vectors[start:stop], factory, ef_construction, add_batch_size)
            for start, stop in zip(bounds[:-1], bounds[1:])
        ]
        search_params = {}
        if ef_search is not None:
            search_params["efSearch"] = ef_search
        if nprobe is not None:
            search_params["nprobe"] = nprobe
        if num_shards == 1:
            return cls(shards[0], list(ids), factory, search_params)
        return cls(None, list(ids), factory, search_params, shards=shards)

    def __len__(self) -> int:
        return self.index.ntotal

    @property
    def dim(self) -> int:
        return self.index.d

    def nbytes(self) -> int:
        """Size of the serialised faiss index in bytes (the passage ids not included)."""
        return sum(int(faiss.serialize_index(shard).nbytes) for shard in self.shards)

    def search(self, query_vectors: np.ndarray, k: int = 1000) -> tuple[np.ndarray, list[list[str]]]:
        """Top-`k` passages by inner product for each query vector.

        Args:
            query_vectors (`np.ndarray`): (m, D) query vectors.
            k (`int`, *optional*, defaults to 1000): passages per query, capped at the index size.

        Returns:
            `tuple[np.ndarray, list[list[str]]]`: (m, k) scores, best first, and the matching passage ids.
            Approximate indexes may return fewer than `k` passages; the missing ones are left out of the ids.
        """
        if query_vectors.ndim != 2 or query_vectors.shape[1] != self.dim:
            raise ValueError(f"query vectors must have shape (m, {self.dim}), got {query_vectors.shape}")
        scores, rows = self.index.search(np.ascontiguousarray(query_vectors, dtype=np.float32), min(k, len(self)))
        ids = [[self.ids[row] for row in query_rows if row >= 0] for query_rows in rows]
        return scores, ids

    def to_gpus(self, gpus: Sequence[int] | None = None, float16: bool = False) -> DenseIndex:
        """A copy of the index searched on GPUs of a faiss GPU build (`faiss-gpu`): one index is split across them
        (`faiss.index_cpu_to_gpus_list` with `shard=True`, results merged exactly), the shards of a sharded index
        are dealt out to them in turn. Flat and IVF indexes only (faiss has no GPU HNSW); at most 2,048 passages
        per query on a GPU. The CPU index stays the one saved and measured by [`nbytes`].

        Args:
            gpus (`Sequence[int]`, *optional*): the GPUs to use (default: all that faiss sees).
            float16 (`bool`, *optional*, defaults to `False`): hold the vectors (Flat) or the look-up tables (IVF) in
                float16 on the GPUs, for twice the collection in the same memory.

        Raises:
            ValueError: without a GPU build of faiss or GPUs, for an HNSW index, or for a GPU faiss does not see.
        """
        available = faiss_gpu_count()
        if available == 0:
            raise ValueError(
                "this faiss has no GPU support or sees no GPU (faiss-cpu): install faiss-gpu to search on GPUs"
            )
        gpus = list(range(available)) if gpus is None else list(gpus)
        if not gpus or any(not 0 <= gpu < available for gpu in gpus):
            raise ValueError(f"GPUs {gpus} asked for, faiss sees {available} (0 to {available - 1})")
        if "HNSW" in self.factory:
            raise ValueError(f"faiss cannot search an HNSW index ({self.factory}) on GPUs: search it on the CPU")
        options = faiss.GpuMultipleClonerOptions()
        options.shard, options.useFloat16 = True, float16
        if len(self.shards) == 1:
            on_gpus, keep_alive = faiss.index_cpu_to_gpus_list(self.index, co=options, gpus=gpus), []
        else:
            resources = {gpu: faiss.StandardGpuResources() for gpu in gpus}
            one = faiss.GpuClonerOptions()
            one.useFloat16 = float16
            placed = [gpus[i % len(gpus)] for i in range(len(self.shards))]
            clones = [faiss.index_cpu_to_gpu(resources[g], g, shard, one) for g, shard in zip(placed, self.shards)]
            on_gpus, keep_alive = faiss.IndexShards(self.dim, True, True), [resources, clones]
            for clone in clones:
                on_gpus.add_shard(clone)
        copy = DenseIndex.__new__(DenseIndex)
        copy.__dict__.update(self.__dict__)
        copy.index, copy.on_gpus, copy._gpu_objects = on_gpus, True, keep_alive  # the resources must outlive it
        gpu_parameters = faiss.GpuParameterSpace()
        for name, value in self.search_params.items():
            gpu_parameters.set_index_parameter(on_gpus, name, value)
        return copy

    def for_device(self, device: str | None) -> DenseIndex:
        """The index to search beside a model on `device`: on that GPU (`cuda:N`) or on all GPUs (`cuda`) when
        faiss is a GPU build and the index type runs on GPUs ([`to_gpus`]), this CPU index otherwise."""
        import torch

        if device is None or self.on_gpus or "HNSW" in self.factory or faiss_gpu_count() == 0:
            return self
        device = torch.device(device)
        if device.type != "cuda":
            return self
        return self.to_gpus(None if device.index is None else [device.index])

    def save(self, folder: str | os.PathLike) -> None:
        """Saves `index.faiss` (a sharded index: `index-00000-of-00004.faiss`, ...), `ids.json` and
        `index_config.json` into `folder`, each file atomically.

        The configuration is written last, so a folder with a configuration holds a complete index.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name, shard in zip(_index_files(len(self.shards)), self.shards):
            with atomic_path(folder / name) as tmp_path:
                faiss.write_index(shard, str(tmp_path))
        write_json_atomic(folder / IDS_FILE, self.ids)
        config = {
            "factory": self.factory,
            "metric": "inner_product",
            "dim": self.dim,
            "num_vectors": len(self),
            "search_params": self.search_params,
            "index_bytes": self.nbytes(),
            "shards": len(self.shards),
        }
        write_json_atomic(folder / CONFIG_FILE, config)

    @classmethod
    def load(cls, folder: str | os.PathLike) -> DenseIndex:
        """Loads an index saved by [`DenseIndex.save`]."""
        folder = Path(folder)
        config_path = folder / CONFIG_FILE
        if not config_path.is_file():
            raise FileNotFoundError(f"{config_path} not found: {folder} does not hold a saved index")
        config = json.loads(config_path.read_text(encoding="utf-8"))
        shards = [faiss.read_index(str(folder / name)) for name in _index_files(config.get("shards", 1))]
        ids = json.loads((folder / IDS_FILE).read_text(encoding="utf-8"))
        if len(shards) == 1:
            return cls(shards[0], ids, config["factory"], config.get("search_params"))
        return cls(None, ids, config["factory"], config.get("search_params"), shards=shards)


def faiss_gpu_count() -> int:
    """GPUs that faiss can search on: 0 for a CPU build (`faiss-cpu`)."""
    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


def _index_files(num_shards: int) -> list[str]:
    """The faiss files of an index folder: `index.faiss`, or one `index-XXXXX-of-YYYYY.faiss` per shard."""
    if num_shards == 1:
        return [INDEX_FILE]
    return [f"index-{i:05d}-of-{num_shards:05d}.faiss" for i in range(num_shards)]


def _build_faiss_index(
    vectors: np.ndarray, factory: str, ef_construction: int | None, add_batch_size: int
) -> faiss.Index:
    """One inner-product index of `factory` over `vectors`, trained on them where the type needs training."""
    index = faiss.index_factory(vectors.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    if ef_construction is not None:
        faiss.ParameterSpace().set_index_parameter(index, "efConstruction", ef_construction)
    if not index.is_trained:
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is not None and len(vectors) < ivf.nlist:
            raise ValueError(
                f"{factory!r} needs at least nlist={ivf.nlist} vectors to train its lists, got {len(vectors)}; "
                "use a smaller nlist, fewer index shards or an exact index"
            )
        index.train(np.ascontiguousarray(vectors, dtype=np.float32))
    for start in range(0, len(vectors), add_batch_size):
        index.add(np.ascontiguousarray(vectors[start : start + add_batch_size], dtype=np.float32))
    return index


def dense_retrieve(
    model,
    tokenizer,
    index: DenseIndex,
    queries: dict[str, str],
    k: int = 1000,
    batch_size: int = 64,
    show_progress: bool = True,
    max_batch_tokens: int | None = None,
) -> dict[str, dict[str, float]]:
    """Encodes the queries and returns the top-`k` passages of the index for each.

    Args:
        model: the BERT_DOT model that encoded the indexed passages.
        tokenizer: its tokenizer.
        index ([`DenseIndex`]): the passage index.
        queries (`dict[str, str]`): query id -> text.
        k (`int`, *optional*, defaults to 1000): passages per query.
        batch_size (`int`, *optional*, defaults to 64): queries per forward pass.
        show_progress (`bool`, *optional*, defaults to `True`): show a progress bar.
        max_batch_tokens (`int`, *optional*): padded tokens per forward pass at most, as in [`encode_texts`].

    Returns:
        `dict[str, dict[str, float]]`: query id -> {passage id -> inner product}.
    """
    if not queries:
        raise ValueError("no queries to search for")
    query_ids = list(queries)
    texts = [queries[qid] for qid in query_ids]
    vectors = encode_texts(
        model, tokenizer, texts, "queries", batch_size, show_progress=show_progress, max_batch_tokens=max_batch_tokens
    )
    if vectors.shape[1] != index.dim:
        raise ValueError(f"the model gives {vectors.shape[1]}-d vectors but the index holds {index.dim}-d vectors")
    scores, ids = index.search(vectors, k)
    return {qid: {pid: float(score) for pid, score in zip(ids[row], scores[row])} for row, qid in enumerate(query_ids)}
