"""Building a dense index as a job that is safe to kill and rerun (`hf-kd index`).

Encoding the collection is the long part. Passages are encoded in shards of `shard_size` (length-sorted batches
inside a shard), and each finished shard is written at once (temporary file, then `os.replace`) into a work folder
beside the output:

```
OUT.partial/
  manifest.json         the fingerprint of the work: the passages (ids and texts), the model (its files' SHA-256,
                        or its Hub commit), fp16 and the shard size
  vectors-00000.npy     the (rows, dim) vectors of passages 0 .. shard_size - 1
  ...
```

A killed build started again with the same arguments encodes only the missing shards; a rerun whose fingerprint
differs (another model at the same path, another collection, fp16) refuses with the list of what changed, or starts
over with `overwrite=True`. A work folder without a manifest is never resumed from. The index options (type, HNSW
and IVF parameters) are no part of the fingerprint: they change the index built from the vectors, not the vectors.
When every shard is there, the index is built, saved into a staging folder that then takes the name `OUT` (see
`hf_kd.files.atomic_folder`) with the manifest as `OUT/index_build.json` (so later jobs, e.g. `hf-kd mine --index`,
can check that the index is of their model and collection), and the work folder is removed. `OUT.lock` keeps a
second build off the same output (see `hf_kd.jobs.output_lock`).

Under `accelerate launch --num_processes N` (or `torchrun`), the processes share the encoding (see
`hf_kd.processes`): the main process takes the lock and opens the work folder, the shards left to encode are dealt
out in turn, each process encodes its own on its device, and the main process alone builds and saves the index from
all of them: the same index as one process builds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..files import atomic_folder, remove_staging_leftovers, write_json_atomic
from ..jobs import model_files_fingerprint, open_work_folder
from ..models.ranking_functions import resolve_max_batch_tokens
from ..processes import JobProcesses, job_processes, lock_job_output
from .dense import DenseIndex, encode_texts

__all__ = [
    "BUILD_FILE",
    "DEFAULT_SHARD_SIZE",
    "IndexBuildResult",
    "build_dense_index",
    "check_index_build",
    "passages_fingerprint",
]

DEFAULT_SHARD_SIZE = 100_000
# what an index folder was built from: the manifest of its build (model, its files' fingerprint, passages, fp16)
BUILD_FILE = "index_build.json"


@dataclass
class IndexBuildResult:
    """What [`build_dense_index`] did.

    Attributes:
        out (`Path`): the index folder.
        index ([`DenseIndex`] or `None`): the index it holds (`None` in the other processes of a build shared by
            several processes: the main process alone assembles and holds it).
        encoded_passages (`int`): passages encoded by this call (by all its processes).
        resumed_passages (`int`): passages whose vectors an earlier, interrupted call had written.
        seconds (`float`): wall time of the call.
    """

    out: Path
    index: DenseIndex | None
    encoded_passages: int
    resumed_passages: int
    seconds: float


def passages_fingerprint(collection: Mapping[str, str]) -> str:
    """SHA-256 of the ids and texts of a collection, in order: the identity of what an index build encodes."""
    digest = hashlib.sha256()
    for passage_id, text in collection.items():
        for value in (passage_id, text):
            data = value.encode("utf-8")
            digest.update(len(data).to_bytes(8, "little"))
            digest.update(data)
    return digest.hexdigest()


def _model_identity(model_dir: str, model) -> str | None:
    if Path(model_dir).is_dir():
        return model_files_fingerprint(model_dir)
    commit = getattr(model.config, "_commit_hash", None)
    return f"commit:{commit}" if commit else None


def _shard_path(work: Path, shard: int) -> Path:
    return work / f"vectors-{shard:05d}.npy"


def _write_shard(path: Path, vectors: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, vectors)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _read_shards(work: Path, num_passages: int, shard_size: int, dtype: np.dtype) -> np.ndarray:
    shards = []
    for shard, start in enumerate(range(0, num_passages, shard_size)):
        path = _shard_path(work, shard)
        vectors = np.load(path)
        rows = min(start + shard_size, num_passages) - start
        if vectors.ndim != 2 or len(vectors) != rows or vectors.dtype != dtype:
            raise ValueError(
                f"{path} holds {vectors.dtype} vectors of shape {vectors.shape}, expected {rows} rows of {dtype}; "
                "delete it to encode that shard again"
            )
        shards.append(vectors)
    return np.concatenate(shards)


def build_dense_index(
    model_dir: str | os.PathLike,
    collection: Mapping[str, str],
    out: str | os.PathLike,
    *,
    factory: str = "Flat",
    ef_construction: int | None = None,
    ef_search: int | None = None,
    nprobe: int | None = None,
    index_shards: int = 1,
    fp16: bool = False,
    batch_size: int = 64,
    max_batch_tokens: int | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    device: str | None = None,
    dtype: str = "float32",
    source: str | os.PathLike | None = None,
    overwrite: bool = False,
    show_progress: bool = True,
) -> IndexBuildResult:
    """Encodes a collection with a BERT_DOT model and saves a faiss index of it into `out`, resumably.

    Args:
        model_dir (`str` or `os.PathLike`): a saved BERT_DOT model (folder or Hub id), loaded with its tokenizer.
        collection (`Mapping[str, str]`): passage id -> text, non-empty; indexed in this order.
        out (`str` or `os.PathLike`): the index folder to create; `<out>.partial` holds the work.
        factory (`str`, *optional*, defaults to `"Flat"`): the `faiss.index_factory` description (see
            `hf_kd.evaluation.index_factory_string`).
        ef_construction, ef_search, nprobe (`int`, *optional*): HNSW and IVF parameters (see `DenseIndex.build`).
        index_shards (`int`, *optional*, defaults to 1): faiss indexes over consecutive slices of the collection,
            searched together with an exact merge of their top-k (`DenseIndex.build`'s `num_shards`).
        fp16 (`bool`, *optional*, defaults to `False`): encode into float16 vectors.
        batch_size (`int`, *optional*, defaults to 64): passages per forward pass.
        max_batch_tokens (`int`, *optional*): padded tokens per forward pass at most, passages x the batch's longest
            (`None`: 2048 on a CPU, no cap elsewhere; 0: no cap; see `hf_kd.evaluation.encode_texts`).
        shard_size (`int`, *optional*, defaults to 100,000): passages per resumable shard.
        device (`str`, *optional*): torch device (CUDA when available by default).
        dtype (`str`, *optional*, defaults to `"float32"`): the model's weights while encoding, `"float32"` or
            `"bfloat16"` (see `hf_kd.evaluation.load_model`); vectors are stored in float32 (or float16 with `fp16`).
        source (`str` or `os.PathLike`, *optional*): the file the collection was read from, for the manifest.
        overwrite (`bool`, *optional*, defaults to `False`): replace an existing non-empty `out`, and start over
            from a work folder of other work instead of failing.
        show_progress (`bool`, *optional*, defaults to `True`): show a progress bar per shard.

    Returns:
        [`IndexBuildResult`]
    """
    started = time.perf_counter()
    for name, value in (("batch_size", batch_size), ("shard_size", shard_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    resolve_max_batch_tokens(max_batch_tokens, "cpu")  # refuses a bad value before any work
    if not collection:
        raise ValueError("no passages to index")
    from .loading import load_model

    out = Path(out)
    processes = JobProcesses(job_processes(device))
    with contextlib.ExitStack() as lock:
        processes.from_main(lambda: lock_job_output(lock, out, overwrite))
        processes.from_main(lambda: remove_staging_leftovers(out))
        model, tokenizer = load_model(str(model_dir), processes.device or device, dtype)
        manifest = _manifest(str(model_dir), model, collection, fp16, shard_size, source)
        if dtype != "float32":  # an index encoded in float32 before this option existed resumes unchanged
            manifest["dtype"] = dtype
        work = out.with_name(f"{out.name}.partial")
        shards = list(enumerate(range(0, len(collection), shard_size)))
        todo = processes.from_main(lambda: _open_work(work, manifest, overwrite, shards))
        texts, show = list(collection.values()), show_progress and processes.is_main
        batching = (batch_size, max_batch_tokens)
        done = _encode_shards(model, tokenizer, texts, processes.share(todo), work, shard_size, batching, fp16, show)
        encoded = sum(processes.gather(done))
        built: dict[str, DenseIndex] = {}

        def assemble() -> None:
            dtype = np.dtype(np.float16 if fp16 else np.float32)
            built["index"] = DenseIndex.build(
                _read_shards(work, len(texts), shard_size, dtype),
                list(collection),
                factory,
                ef_construction=ef_construction,
                ef_search=ef_search,
                nprobe=nprobe,
                num_shards=index_shards,
            )
            _save_index(built["index"], manifest, out, work)

        processes.from_main(assemble)
    return IndexBuildResult(out, built.get("index"), encoded, len(collection) - encoded, time.perf_counter() - started)


def _encode_shards(model, tokenizer, texts, todo, work: Path, shard_size: int, batching, fp16, show) -> int:
    """Encodes the shards `todo` (index, first passage) in batches of `batching` (batch size, token cap) and writes
    each as it is done; returns the passages encoded."""
    batch_size, max_batch_tokens = batching
    encoded = 0
    for shard, start in todo:
        shard_texts = texts[start : start + shard_size]
        vectors = encode_texts(
            model, tokenizer, shard_texts, "passages", batch_size, fp16, show, max_batch_tokens=max_batch_tokens
        )
        _write_shard(_shard_path(work, shard), vectors)
        encoded += len(shard_texts)
    return encoded


def _save_index(index: DenseIndex, manifest: dict, out: Path, work: Path) -> None:
    """Saves the index with its build manifest into `out` (whole or absent), then removes the work folder."""
    with atomic_folder(out) as staging:
        index.save(staging)
        write_json_atomic(staging / BUILD_FILE, manifest)
    shutil.rmtree(work)


def _manifest(model_dir: str, model, collection, fp16: bool, shard_size: int, source) -> dict:
    """The fingerprint of the work: the passages, the model's files, fp16 and the shard size."""
    return {
        "collection": str(Path(source).resolve()) if source is not None else None,
        "passages": len(collection),
        "passages_sha256": passages_fingerprint(collection),
        "model": str(Path(model_dir).resolve()) if Path(model_dir).is_dir() else model_dir,
        "model_weights": _model_identity(model_dir, model),
        "fp16": fp16,
        "shard_size": shard_size,
    }


def _open_work(work: Path, manifest: dict, overwrite: bool, shards: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Creates or resumes the work folder (main process); returns the shards `(number, first passage)` to encode."""
    open_work_folder(work, manifest, overwrite, "index build", "model, collection and options")
    return [(shard, start) for shard, start in shards if not _shard_path(work, shard).exists()]


def check_index_build(index_dir: str | os.PathLike, model_dir: str | os.PathLike, collection: Mapping[str, str]):
    """Checks that the index in `index_dir` (built by [`build_dense_index`]) holds `collection`'s passages encoded
    by the model in `model_dir`, from its `index_build.json`; raises `ValueError` naming what differs.

    A model given by Hub id is checked by name (its commit is recorded only when the Hub reported one)."""
    path = Path(index_dir) / BUILD_FILE
    if not path.is_file():
        raise ValueError(f"{path} not found: only an index built by `hf-kd index` records its model and passages")
    try:
        build = json.loads(path.read_text(encoding="utf-8"))
        recorded_model, recorded_weights, recorded_passages = (
            build["model"],
            build["model_weights"],
            build["passages_sha256"],
        )
    except (ValueError, KeyError) as error:
        raise ValueError(f"{path}: not an index build record ({error})") from None
    if passages_fingerprint(collection) != recorded_passages:
        raise ValueError(
            f"{index_dir} was built over other passages ({build.get('passages')} passages from "
            f"{build.get('collection')}) than the {len(collection)} given: build the index of this collection"
        )
    if Path(model_dir).is_dir():
        weights = model_files_fingerprint(model_dir)
        if recorded_weights is not None and weights != recorded_weights:
            raise ValueError(
                f"{index_dir} was built by another model ({recorded_model}, {recorded_weights[:19]}…) than "
                f"{model_dir} ({weights[:19]}…)"
            )
    elif str(model_dir) != recorded_model:
        raise ValueError(f"{index_dir} was built by {recorded_model}, not {model_dir}")
