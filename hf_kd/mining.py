"""Hard negatives for training queries (`hf-kd mine`), in the manner of sentence-transformers' `mine_hard_negatives`.

For every judged query, a first stage ranks the collection: BM25 (`hf_kd.evaluation.bm25_search`), or a dense
bi-encoder (an hf-kd BERT_DOT checkpoint or a sentence-transformers `SentenceTransformer` folder) whose passage
vectors are searched exactly with faiss (`hf_kd.evaluation.dense`), or the candidates of a TREC run. Then, per
positive:

- positives are the judged passages of grade >= `min_grade`; each needs a text (a positive or a judged query without
  one is an error naming the qrels file and line, or is left out and counted with `skip_missing`);
- candidates are the passages at ranks `MIN..MAX` of the first stage (1 is its best, both ends included; judged
  passages count in the ranks), less every passage judged with a grade above 0 (at `min_grade=2`, DL20's grade-1
  "related" passages are neither positives nor negatives) and passages with the positive's own text;
- with a teacher (anything `hf_kd.teachers.load_teacher` loads), the positive and every candidate are scored with
  `hf_kd.teachers.score_pairs`, and a candidate stays only when its score is below the positive's by the margin:
  `neg < pos - margin` (absolute) and/or `neg < pos * (1 - relative_margin)` (relative, for similarity-like scores
  that are positive); a candidate or positive the teacher cannot score (a `run:` teacher without the pair) is dropped;
- `num_negatives` of the remaining candidates are drawn: at random with one generator per positive seeded from
  `(seed, query id, passage id)`, so that a positive's negatives depend on nothing else, or the best ranked
  (`sampling="top"`). They are kept in rank order.

The output is `query<TAB>positive<TAB>negative` TSV, an id-form triples dataset folder (`triples_ids`, as `hf-kd data
build-triples` writes, with the texts it uses), or n-way rows (`nway_ids`: the positive first, then the negatives,
with the teacher's scores) that `hf-kd train` takes as they are. Outputs are written whole or not at all, under the
output's lock.
"""

from __future__ import annotations

import argparse
import os
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from .data.errors import DataFormatError
from .data.ir_files import read_beir, read_collection_tsv, read_qrels, read_queries_tsv, read_run
from .data.provenance import Provenance
from .data.schemas import NWAY_ID_FEATURES
from .data.triples import save_triples
from .data.writers import check_output_folder, write_scores
from .files import atomic_path, remove_staging_leftovers
from .jobs import output_lock

__all__ = [
    "OUTPUT_FORMATS",
    "SAMPLING",
    "MinedRow",
    "MiningResult",
    "MiningStats",
    "find_positives",
    "load_dense_encoder",
    "mine_hard_negatives",
    "parse_rank_range",
    "retrieve_candidates",
    "write_mined",
]

OUTPUT_FORMATS = ("triples", "triples-tsv", "nway")
SAMPLING = ("random", "top")
_TSV_BREAKS = re.compile(r"[\t\r\n]")


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
# First stage
# ---------------------------------------------------------------------------------------------------------------


class _SentenceTransformerEncoder:
    """A sentence-transformers bi-encoder behind the `encode_queries` / `encode_passages` interface of BERT_DOT that
    `hf_kd.evaluation.dense.encode_texts` calls; vectors are normalised for a cosine model, so that the inner
    product of the faiss index is the model's similarity."""

    def __init__(self, model, name_or_path: str):
        similarity = model.similarity_fn_name or "cosine"
        if similarity not in ("cosine", "dot"):
            raise ValueError(
                f"{name_or_path}: its similarity is {similarity!r}; dense candidates are ranked by inner product, "
                "so the model must use 'cosine' or 'dot'"
            )
        self.model = model
        self.normalize = similarity == "cosine"
        self.config = SimpleNamespace(architecture="SentenceTransformer")

    def _encode(self, encode, texts: Sequence[str], batch_size: int) -> SimpleNamespace:
        embeddings = encode(
            list(texts),
            batch_size=batch_size,
            convert_to_tensor=True,
            normalize_embeddings=self.normalize,
            show_progress_bar=False,
        )
        return SimpleNamespace(embeddings=embeddings)

    def encode_queries(self, texts: Sequence[str], tokenizer=None, batch_size: int = 64) -> SimpleNamespace:
        return self._encode(getattr(self.model, "encode_query", self.model.encode), texts, batch_size)

    def encode_passages(self, texts: Sequence[str], tokenizer=None, batch_size: int = 64) -> SimpleNamespace:
        return self._encode(getattr(self.model, "encode_document", self.model.encode), texts, batch_size)


def load_dense_encoder(name_or_path: str | os.PathLike, device: str | None = None):
    """Loads a bi-encoder for dense candidates: an hf-kd BERT_DOT checkpoint (with `hf_kd.evaluation.load_model`),
    or a sentence-transformers `SentenceTransformer` folder or Hub id.

    Returns:
        `(model, tokenizer)` for `hf_kd.evaluation.dense.encode_texts` and `dense_retrieve`.
    """
    from transformers import AutoConfig

    from .evaluation.commands import load_model
    from .files import naming_weight_files
    from .models import MODEL_CLASSES

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
    device: str | None = None,
    show_progress: bool = True,
) -> dict[str, dict[str, float]]:
    """The top `k` passages of the collection for every query.

    Args:
        retriever (`str` or `os.PathLike`): `"bm25"` (bm25s, see `hf_kd.evaluation.bm25_search`), or a dense
            bi-encoder (see [`load_dense_encoder`]) whose collection vectors are searched exactly (faiss `Flat`).
        queries, collection: query id -> text, passage id -> text.
        k (`int`): passages per query.
        batch_size (`int`, *optional*, defaults to 64): texts per forward pass of a dense model.
        device (`str`, *optional*): torch device of a dense model.
        show_progress (`bool`, *optional*, defaults to `True`): show progress bars.

    Returns:
        `dict[str, dict[str, float]]`: query id -> {passage id -> first-stage score}.
    """
    if str(retriever) == "bm25":
        from .evaluation.bm25 import bm25_search

        return bm25_search(dict(collection), dict(queries), k=k, show_progress=show_progress)
    from .evaluation.dense import DenseIndex, dense_retrieve, encode_texts

    model, tokenizer = load_dense_encoder(retriever, device)
    ids = list(collection)
    texts = [collection[pid] for pid in ids]
    vectors = encode_texts(model, tokenizer, texts, "passages", batch_size, show_progress=show_progress)
    index = DenseIndex.build(vectors, ids, "Flat")
    return dense_retrieve(model, tokenizer, index, dict(queries), k, batch_size, show_progress=show_progress)


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
    batch_size: int,
    show_progress: bool,
) -> dict[tuple[str, str], float]:
    from .teachers.scoring import score_pairs

    scores = score_pairs(
        teacher,
        [queries[qid] for qid, _ in pairs],
        [collection[pid] for _, pid in pairs],
        batch_size=batch_size,
        show_progress_bar=show_progress,
    )
    return dict(zip(pairs, scores.tolist()))


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
    device: str | None = None,
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
        device (`str`, *optional*): torch device of a dense retriever.
        show_progress (`bool`, *optional*, defaults to `True`): show progress bars.

    Returns:
        [`MiningResult`]: one row per positive that got at least one negative, in qrels order (positives by id).
    """
    _check_options(num_negatives, rank_range, sampling, margin, relative_margin, teacher)
    stats = MiningStats(
        parameters={
            "retriever": "run" if candidates is not None else str(retriever),
            "rank_range": list(rank_range),
            "num_negatives": num_negatives,
            "min_grade": min_grade,
            "seed": seed,
            "sampling": sampling,
            "teacher": getattr(teacher, "name_or_path", None),
            "margin": margin,
            "relative_margin": relative_margin,
        }
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
    if candidates is None:
        mined_queries = {qid: queries[qid] for qid in positives}
        candidates = (
            retrieve_candidates(
                retriever,
                mined_queries,
                collection,
                rank_range[1],
                batch_size=batch_size,
                device=device,
                show_progress=show_progress,
            )
            if mined_queries
            else {}
        )
    windows = {qid: _window(candidates.get(qid, {}), rank_range) for qid in positives}
    unknown = sorted({pid for window in windows.values() for pid in window if pid not in collection})
    if unknown:
        raise ValueError(f"{len(unknown)} candidate passages have no text in the collection, e.g. {unknown[:5]}")
    scores = None
    if teacher is not None:
        pairs = [(q, p) for q in positives for p in [*positives[q], *_unjudged(windows[q], qrels.get(q, {}))]]
        scores = _teacher_scores(teacher, queries, collection, pairs, batch_size, show_progress)
    options = {"num_negatives": num_negatives, "sampling": sampling, "seed": seed, "margins": (margin, relative_margin)}
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
    return MiningResult(rows, stats)


# ---------------------------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------------------------


def _tsv_field(text: str) -> str:
    return _TSV_BREAKS.sub(" ", text)


def _write_tsv(result: MiningResult, out: Path, queries, collection) -> int:
    lines = [
        f"{_tsv_field(queries[qid])}\t{_tsv_field(collection[pos])}\t{_tsv_field(collection[neg])}\n"
        for qid, pos, neg in result.triples()
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp_path, open(tmp_path, "w", encoding="utf-8") as f:
        f.writelines(lines)
    return len(lines)


def _nway_batch(rows: list[MinedRow]) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(
        [
            pa.array([row.query_id for row in rows], pa.string()),
            pa.array([[row.positive_id, *row.negative_ids] for row in rows], pa.list_(pa.string())),
            pa.array([[row.positive_score, *row.negative_scores] for row in rows], pa.list_(pa.float32())),
        ],
        schema=NWAY_ID_FEATURES.arrow_schema,
    )


def _write_nway(rows: list[MinedRow], out: Path, queries, collection, provenance: Provenance, overwrite) -> int:
    used_passages = {pid for row in rows for pid in (row.positive_id, *row.negative_ids)}
    used_queries = {row.query_id for row in rows}
    return write_scores(
        [_nway_batch(rows)] if rows else [],
        out,
        features=NWAY_ID_FEATURES,
        provenance=provenance,
        queries={qid: text for qid, text in queries.items() if qid in used_queries},
        collection={pid: text for pid, text in collection.items() if pid in used_passages},
        overwrite=overwrite,
    )


def write_mined(
    result: MiningResult,
    out: str | os.PathLike,
    output_format: str,
    *,
    queries: Mapping[str, str],
    collection: Mapping[str, str],
    source_files: Sequence[str | os.PathLike] = (),
    overwrite: bool = False,
) -> tuple[int, int]:
    """Writes mined negatives, whole or not at all, holding the output's lock (`hf_kd.jobs.output_lock`).

    Args:
        result ([`MiningResult`]): from [`mine_hard_negatives`].
        out (`str` or `os.PathLike`): a TSV file (`"triples-tsv"`) or a dataset folder (`"triples"`, `"nway"`).
        output_format (`str`): `"triples-tsv"`: `query<TAB>positive<TAB>negative` lines (tabs and line breaks
            inside a text become spaces); `"triples"`: an id-form triples folder with the texts it uses and its
            provenance; `"nway"`: one row per positive with all `num_negatives` negatives and the teacher's scores
            (`nway_ids`; needs a teacher; positives short of negatives are left out, as every row of a batch needs
            the same number of passages).
        queries, collection: the texts of the ids.
        source_files: the input files, recorded in a folder's provenance.
        overwrite (`bool`, *optional*, defaults to `False`): replace an existing non-empty `out`.

    Returns:
        `tuple[int, int]`: rows written, and positives left out of n-way rows for lack of negatives.
    """
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"output_format must be one of {OUTPUT_FORMATS}, got {output_format!r}")
    parameters = result.stats.parameters
    if output_format == "nway" and parameters.get("teacher") is None:
        raise ValueError("n-way rows carry teacher scores: pass --teacher, or write triples and score them")
    out = Path(out)
    check_output_folder(out, overwrite)
    with output_lock(out):
        check_output_folder(out, overwrite)  # another job may have written it while this one mined
        remove_staging_leftovers(out)
        if output_format == "triples-tsv":
            return _write_tsv(result, out, queries, collection), 0
        schema = "triples_ids" if output_format == "triples" else "nway_ids"
        provenance = Provenance(
            format="mine",
            schema=schema,
            source_files=[str(Path(p).resolve()) for p in source_files],
            teachers=[parameters["teacher"]] if parameters.get("teacher") else [],
            parameters=parameters,
        )
        if output_format == "triples":
            rows = save_triples(
                result.triples(),
                out,
                queries=queries,
                collection=collection,
                provenance=provenance,
                overwrite=overwrite,
            )
            return rows, 0
        complete = [row for row in result.rows if len(row.negative_ids) == parameters["num_negatives"]]
        rows = _write_nway(complete, out, queries, collection, provenance, overwrite)
        return rows, len(result.rows) - len(complete)


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------


def _read_inputs(args: argparse.Namespace) -> tuple[dict, dict, dict, str, dict[str, str], list[Path]]:
    """(queries, collection, qrels, qrels file, sources for errors, source files) of `--beir` or the TSV files."""
    if args.beir is not None:
        if args.queries is not None or args.collection is not None:
            raise ValueError("--beir provides queries and corpus; do not combine it with --queries/--collection")
        data = read_beir(args.beir, args.split)
        qrels_path = args.beir / "qrels" / f"{args.split}.tsv"
        queries, collection, qrels = data.queries, data.corpus, data.qrels
        sources = {"queries": str(args.beir / "queries.jsonl"), "collection": str(args.beir / "corpus.jsonl")}
    else:
        if args.queries is None or args.collection is None or args.qrels is None:
            raise ValueError("give --qrels, --queries and --collection, or a BEIR folder with --beir")
        queries, collection = read_queries_tsv(args.queries), read_collection_tsv(args.collection)
        qrels, qrels_path = None, args.qrels
        sources = {"queries": str(args.queries), "collection": str(args.collection)}
    if args.qrels is not None:
        qrels, qrels_path = read_qrels(args.qrels), args.qrels
    files = [Path(sources["queries"]), Path(sources["collection"]), Path(qrels_path)]
    return queries, collection, qrels, str(qrels_path), sources, files


def _load_teacher(args: argparse.Namespace, queries, collection):
    if args.teacher is None:
        return None
    from .files import naming_weight_files
    from .teachers.loading import RUN_PREFIX, load_teacher

    if (
        not args.teacher.startswith(RUN_PREFIX)
        and not Path(args.teacher).exists()
        and args.teacher.startswith(("/", "."))
    ):
        raise FileNotFoundError(f"teacher folder not found: {args.teacher}")
    with naming_weight_files(args.teacher):
        return load_teacher(args.teacher, device=args.device, queries=queries, collection=collection)


def run_mine(args: argparse.Namespace) -> int:
    check_output_folder(args.out, args.overwrite)  # before anything is read or loaded
    if args.format == "nway" and args.teacher is None:
        raise ValueError("--format nway carries teacher scores: pass --teacher, or write triples and score them")
    queries, collection, qrels, qrels_path, sources, files = _read_inputs(args)
    run = read_run(args.run) if args.run is not None else None
    check = {"min_grade": args.min_grade, "skip_missing": args.skip_missing, "qrels_path": qrels_path}
    find_positives(qrels, queries, collection, sources=sources, **check)  # bad judgements fail before a model loads
    teacher = _load_teacher(args, queries, collection)
    result = mine_hard_negatives(
        queries,
        collection,
        qrels,
        retriever=args.retriever,
        candidates=run,
        num_negatives=args.num_negatives,
        rank_range=args.range,
        min_grade=args.min_grade,
        seed=args.seed,
        sampling=args.sampling,
        teacher=teacher,
        margin=args.margin,
        relative_margin=args.relative_margin,
        skip_missing=args.skip_missing,
        qrels_path=qrels_path,
        sources=sources,
        batch_size=args.batch_size,
        device=args.device,
    )
    extra = [args.run] if args.run is not None else []
    rows, left_out = write_mined(
        result,
        args.out,
        args.format,
        queries=queries,
        collection=collection,
        source_files=[*files, *extra],
        overwrite=args.overwrite,
    )
    stats = result.stats
    what = "n-way rows" if args.format == "nway" else "triples"
    print(f"{rows:,} {what} from {stats.positives:,} positives of {stats.queries:,} queries -> {args.out}")
    filtered = ""
    if teacher is not None:
        filtered = f", within the teacher's margin or unscored {stats.teacher_filtered:,}"
        if stats.positives_without_teacher_score:
            filtered += f" (positives the teacher cannot score: {stats.positives_without_teacher_score:,})"
    print(
        f"  per positive, candidates in ranks {args.range[0]}-{args.range[1]}: {stats.candidates_in_range:,}, judged "
        f"relevant or a copy of the positive {stats.judged_candidates:,}{filtered}; positives without a negative "
        f"{stats.positives_without_negative:,}, short of negatives {stats.short_of_negatives:,}"
        + (f" (left out of the n-way rows: {left_out:,})" if left_out else "")
    )
    skipped = stats.skipped_queries_without_text + stats.skipped_positives_without_text
    if skipped:
        print(
            f"  left out for lack of text: {stats.skipped_queries_without_text:,} queries, "
            f"{stats.skipped_positives_without_text:,} positives"
        )
    return 0


def _rank_range(text: str) -> tuple[int, int]:
    try:
        return parse_rank_range(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    """Registers `mine` on the `hf-kd` parser's subparsers."""
    parser = subparsers.add_parser(
        "mine",
        help="mine hard negatives for judged queries with BM25 or a dense bi-encoder, optionally teacher-filtered",
        description="For each positive (judged grade >= --min-grade), draws --num-negatives negatives from the "
        "first stage's ranks --range MIN:MAX, never a passage judged above grade 0; with --teacher, only candidates "
        "the teacher scores below the positive by --margin / --relative-margin. Writes triples (a dataset folder or "
        "TSV) for `hf-kd score`, or n-way rows with the teacher's scores for `hf-kd train`.",
    )
    parser.add_argument("--queries", type=Path, help="queries TSV (qid<TAB>text)")
    parser.add_argument("--collection", type=Path, help="collection TSV (pid<TAB>text)")
    parser.add_argument(
        "--qrels", type=Path, help="TREC (qid 0 pid grade) or BEIR qrels (default with --beir: its split)"
    )
    parser.add_argument("--beir", type=Path, help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/)")
    parser.add_argument("--split", default="train", help="BEIR qrels split (default: %(default)s)")
    parser.add_argument(
        "--retriever",
        default="bm25",
        metavar="bm25|MODEL",
        help="first stage: bm25 (bm25s), or a BERT_DOT checkpoint or sentence-transformers bi-encoder folder "
        "(exact faiss search) (default: %(default)s)",
    )
    parser.add_argument("--run", type=Path, help="take the candidates from this TREC run instead of --retriever")
    parser.add_argument("--num-negatives", type=int, default=1, help="negatives per positive (default: %(default)s)")
    parser.add_argument(
        "--range",
        type=_rank_range,
        default=(1, 100),
        metavar="MIN:MAX",
        help="first-stage ranks to draw negatives from, 1-based, both included (default: 1:100)",
    )
    parser.add_argument("--min-grade", type=int, default=1, help="smallest grade of a positive (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default: %(default)s)")
    parser.add_argument(
        "--sampling", choices=SAMPLING, default="random", help="random (seeded) or the top ranked (default: random)"
    )
    parser.add_argument(
        "--teacher",
        metavar="PATH_OR_HUB_ID",
        help="a teacher to filter candidates with (anything `hf-kd score --teacher` takes, run:PATH included)",
    )
    parser.add_argument("--margin", type=float, help="keep a candidate only if teacher(neg) < teacher(pos) - MARGIN")
    parser.add_argument(
        "--relative-margin",
        type=float,
        help="keep a candidate only if teacher(neg) < teacher(pos) * (1 - RELATIVE_MARGIN)",
    )
    parser.add_argument(
        "--skip-missing",
        action="store_true",
        help="leave out judged queries and positives without text (counted) instead of failing",
    )
    parser.add_argument(
        "--format",
        choices=OUTPUT_FORMATS,
        default="triples",
        help="triples: a dataset folder of ids with their texts; triples-tsv: query<TAB>positive<TAB>negative; "
        "nway: a dataset folder of the positive and all negatives with the teacher's scores (default: triples)",
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder (or TSV file with triples-tsv)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("--batch-size", type=int, default=64, help="texts or pairs per forward pass (default: 64)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.set_defaults(func=run_mine)
