"""Training triples and evaluation sets of the reproduction, built from the real data in `../shared/data`.

MS MARCO domain: TREC-DL 2020 is the only judged MS MARCO data available, so its queries are split in two by
sorted query id: even positions form the **dev set that every table reports**, odd positions give training
triples (judged positives at grade >= 2, negatives from the BM25 candidates not judged relevant). The 100 MS MARCO
training triples are added as they are. Second domain: SciFact's train split, with BM25 negatives; SciFact's
test split is a second, out-of-domain evaluation. No reported query is ever trained on.

With a budget's `teacher_pairs_per_query`, the teachers label random pairs of the training queries' candidates
instead of the judged triples (`teacher_triples`); the no-teacher students keep the judged triples.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from datasets import Dataset

from ..data import (
    TRIPLES_FEATURES,
    build_candidate_pairs,
    build_triples,
    read_beir,
    read_collection_tsv,
    read_qrels,
    read_queries_tsv,
    read_run,
    write_run,
)
from ..evaluation.bm25 import bm25_search
from ..files import write_json_atomic
from .budgets import Budget


@dataclass
class EvalSet:
    """A re-ranking evaluation: queries, passages, first-stage run and judgements, as files."""

    name: str
    queries: str
    collection: str
    run: str
    qrels: str
    rel_threshold: int
    num_queries: int


@dataclass
class PreparedData:
    train_triples: str
    triple_counts: dict[str, int]
    dl20_dev: EvalSet
    scifact_test: EvalSet
    dev_query_ids: list[str]
    teacher_triples: str | None = None
    """What the teachers label, when it is not `train_triples` (candidate pairs)."""
    teacher_triple_counts: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> PreparedData:
        data = dict(data)
        data["dl20_dev"] = EvalSet(**data["dl20_dev"])
        data["scifact_test"] = EvalSet(**data["scifact_test"])
        return cls(**data)


def dl20_split(query_ids: list[str]) -> tuple[list[str], list[str]]:
    """(dev, train) query ids: sorted numerically, even positions are dev, odd positions train."""
    ordered = sorted(query_ids, key=lambda q: (len(q), q))
    return ordered[0::2], ordered[1::2]


def _write_tsv(path: Path, rows: dict[str, str]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for key, text in rows.items():
            f.write(f"{key}\t{' '.join(text.split())}\n")


def _write_qrels(path: Path, qrels: dict[str, dict[str, int]]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for qid in sorted(qrels):
            for pid, grade in sorted(qrels[qid].items()):
                f.write(f"{qid} 0 {pid} {grade}\n")


def _bm25_run_file(folder: Path) -> Path:
    runs = sorted(folder.glob("bm25.top*.trec"))
    if not runs:
        raise FileNotFoundError(f"no BM25 run (bm25.top*.trec) in {folder}")
    return runs[0]


def _run_file(folder: Path, name: str) -> Path:
    runs = sorted(folder.glob(f"{name}.top*.trec"))
    if not runs:
        available = sorted(p.name.split(".top")[0] for p in folder.glob("*.top*.trec"))
        raise FileNotFoundError(f"no run {name!r} ({name}.top*.trec) in {folder}; available: {', '.join(available)}")
    return runs[0]


def _first(ids: list[str], limit: int | None) -> list[str]:
    ordered = sorted(ids, key=lambda q: (len(q), q))
    return ordered if limit is None else ordered[:limit]


def prepare_data(budget: Budget, data_dir: Path, out: Path) -> PreparedData:
    """Builds (or reloads from `out`) the training triples and the two evaluation sets."""
    out, data_dir = out.resolve(), data_dir.resolve()  # the record is read again from any working directory
    manifest = out / "data.json"
    if manifest.is_file():
        return PreparedData.from_dict(json.loads(manifest.read_text(encoding="utf-8")))
    out.mkdir(parents=True, exist_ok=True)
    root = data_dir / "ci" if budget.data == "ci" else data_dir
    dl20 = root / "msmarco-dl20"
    scifact = root / ("scifact-small" if budget.data == "ci" else "scifact")
    train_100_file = root / (
        "msmarco-train-100.triples.tsv" if budget.data == "ci" else "msmarco-train-100/triples.tsv"
    )
    for path in (dl20, scifact, train_100_file):
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: pass --data-dir pointing at the shared data folder")

    dl20_data = _DL20.read(dl20)
    dev_ids, train_ids = dl20_split([q for q in dl20_data.queries if q in dl20_data.qrels])
    scifact_train = _SciFactTrain.read(budget, scifact)
    sources = {
        "msmarco-dl20-train-queries": _dl20_train_triples(budget, dl20_data, train_ids),
        "msmarco-train-100": _plain_triples(train_100_file),
        "scifact-train": _scifact_train_triples(budget, scifact_train),
    }
    train_path = _write_text_triples(out / "train_triples.parquet", sources)
    teacher_sources = _teacher_sources(budget, dl20_data, train_ids, scifact_train, sources)

    prepared = PreparedData(
        train_triples=str(train_path),
        triple_counts={name: len(triples) for name, triples in sources.items()},
        dl20_dev=_dl20_dev_set(dl20_data, dev_ids, out),
        scifact_test=_scifact_test_set(budget, scifact, out),
        dev_query_ids=dev_ids,
        teacher_triples=str(_write_text_triples(out / "teacher_triples.parquet", teacher_sources))
        if teacher_sources
        else None,
        teacher_triple_counts={name: len(triples) for name, triples in teacher_sources.items()},
    )
    write_json_atomic(str(manifest), prepared.to_dict())  # the stage's done-marker: whole or absent
    return prepared


@dataclass
class _DL20:
    """TREC-DL 2020 as read from its folder: queries, passages, judgements and the BM25 run."""

    folder: Path
    queries: dict[str, str]
    collection: dict[str, str]
    qrels: dict[str, dict[str, int]]
    bm25: dict[str, dict[str, float]]

    @classmethod
    def read(cls, folder: Path) -> _DL20:
        return cls(
            folder=folder,
            queries=read_queries_tsv(folder / "queries.tsv"),
            collection=read_collection_tsv(folder / "collection.tsv"),
            qrels=read_qrels(folder / "qrels.txt"),
            bm25=read_run(_bm25_run_file(folder / "runs")),
        )

    def runs(self, names: list[str]) -> list[dict[str, dict[str, float]]]:
        """The named runs of `runs/` (`bm25` is the one already read)."""
        return [self.bm25 if name == "bm25" else read_run(_run_file(self.folder / "runs", name)) for name in names]


def _dl20_train_triples(budget: Budget, dl20: _DL20, train_ids: list[str]) -> list[tuple[str, str, str]]:
    """Triples of the DL20 training queries: judged positives (grade >= 2), negatives from the budget's runs."""
    triples, _ = build_triples(
        dl20.qrels,
        dl20.runs(budget.train_runs),
        min_grade=2,
        negatives_per_positive=budget.negatives_per_positive,
        seed=budget.seed,
        query_ids=dl20.queries,
        passage_ids=dl20.collection,
        include_queries=train_ids,
        max_rank=budget.negatives_max_rank or budget.rerank_top_k,
    )
    return [(dl20.queries[q], dl20.collection[p], dl20.collection[n]) for q, p, n in triples]


def _plain_triples(path: Path) -> list[tuple[str, str, str]]:
    """`query<TAB>positive<TAB>negative` text triples."""
    with open(path, encoding="utf-8") as f:
        rows = (line.rstrip("\n").split("\t") for line in f if line.strip())
        return [(query, positive, negative) for query, positive, negative in rows]


@dataclass
class _SciFactTrain:
    """SciFact's training queries (the budget's cap), corpus and judgements, and BM25's run over the corpus."""

    queries: dict[str, str]
    corpus: dict[str, str]
    qrels: dict[str, dict[str, int]]
    bm25: dict[str, dict[str, float]]

    @classmethod
    def read(cls, budget: Budget, scifact: Path) -> _SciFactTrain:
        train = read_beir(scifact, split="train")
        queries = {q: train.queries[q] for q in _first(list(train.qrels), budget.scifact_train_queries)}
        run = bm25_search(train.corpus, queries, k=budget.rerank_top_k, show_progress=False)
        return cls(queries, train.corpus, train.qrels, run)


def _scifact_train_triples(budget: Budget, train: _SciFactTrain) -> list[tuple[str, str, str]]:
    """Triples of the SciFact training queries: judged positives, negatives from BM25 over the corpus."""
    triples, _ = build_triples(
        train.qrels,
        [train.bm25],
        min_grade=1,
        negatives_per_positive=budget.negatives_per_positive,
        seed=budget.seed,
        query_ids=train.queries,
        passage_ids=train.corpus,
    )
    return [(train.queries[q], train.corpus[p], train.corpus[n]) for q, p, n in triples]


def _scifact_candidate_pairs(budget: Budget, train: _SciFactTrain, count: int) -> list[tuple[str, str, str]]:
    """Random pairs of BM25's top candidates (and the judged passages) of the SciFact training queries."""
    pairs, _ = build_candidate_pairs(
        [train.bm25],
        pairs_per_query=count,
        qrels=train.qrels,
        min_grade=1,
        seed=budget.seed,
        query_ids=train.queries,
        passage_ids=train.corpus,
        max_rank=budget.candidate_max_rank,
    )
    return [(train.queries[q], train.corpus[a], train.corpus[b]) for q, a, b in pairs]


def _dl20_candidate_pairs(budget: Budget, dl20: _DL20, train_ids: list[str], count: int) -> list[tuple[str, str, str]]:
    """Random pairs of the candidate runs' top candidates (and the judged positives) of the DL20 training queries."""
    pairs, _ = build_candidate_pairs(
        dl20.runs(budget.candidate_runs),
        pairs_per_query=count,
        qrels=dl20.qrels,
        min_grade=2,
        seed=budget.seed,
        query_ids=dl20.queries,
        passage_ids=dl20.collection,
        include_queries=set(train_ids),
        max_rank=budget.candidate_max_rank,
    )
    return [(dl20.queries[q], dl20.collection[a], dl20.collection[b]) for q, a, b in pairs]


def _teacher_sources(
    budget: Budget,
    dl20: _DL20,
    train_ids: list[str],
    scifact: _SciFactTrain,
    judged: dict[str, list[tuple[str, str, str]]],
) -> dict[str, list[tuple[str, str, str]]]:
    """What the teachers label with the budget's `teacher_pairs_per_query`: its candidate pairs for the sources it
    names, the judged triples of the others (the 100 MS MARCO triples always). Empty without it."""
    counts = budget.teacher_pairs_per_query
    if not counts:
        return {}
    pairs = {
        "msmarco-dl20-train-queries": lambda count: _dl20_candidate_pairs(budget, dl20, train_ids, count),
        "scifact-train": lambda count: _scifact_candidate_pairs(budget, scifact, count),
    }
    return {name: pairs[name](counts[name]) if name in counts else triples for name, triples in judged.items()}


def _write_text_triples(path: Path, sources: dict[str, list[tuple[str, str, str]]]) -> Path:
    """The text triples of every source, in source order, as one Parquet file."""
    texts = [triple for triples in sources.values() for triple in triples]
    Dataset.from_dict(
        {"query": [t[0] for t in texts], "positive": [t[1] for t in texts], "negative": [t[2] for t in texts]},
        features=TRIPLES_FEATURES,
    ).to_parquet(str(path))
    return path


def _dl20_dev_set(dl20: _DL20, dev_ids: list[str], out: Path) -> EvalSet:
    """The DL20 dev queries' BM25 run and judgements, written under `out`."""
    dev = set(dev_ids)
    write_run({q: c for q, c in dl20.bm25.items() if q in dev}, out / "dl20-dev.bm25.trec", tag="bm25")
    _write_qrels(out / "dl20-dev.qrels.txt", {q: dl20.qrels[q] for q in dev_ids})
    return EvalSet(
        name="dl20-dev",
        queries=str(dl20.folder / "queries.tsv"),
        collection=str(dl20.folder / "collection.tsv"),
        run=str(out / "dl20-dev.bm25.trec"),
        qrels=str(out / "dl20-dev.qrels.txt"),
        rel_threshold=2,
        num_queries=len(dev_ids),
    )


def _scifact_test_set(budget: Budget, scifact: Path, out: Path) -> EvalSet:
    """The SciFact test queries, their BM25 top-k over the corpus and their judgements, written under `out`."""
    test = read_beir(scifact, split="test")
    test_ids = _first(list(test.qrels), budget.scifact_test_queries)
    queries = {q: test.queries[q] for q in test_ids}
    write_run(
        bm25_search(test.corpus, queries, k=budget.rerank_top_k, show_progress=False),
        out / "scifact-test.bm25.trec",
        tag="bm25",
    )
    _write_tsv(out / "scifact-test.queries.tsv", queries)
    _write_tsv(out / "scifact.collection.tsv", test.corpus)
    _write_qrels(out / "scifact-test.qrels.txt", {q: test.qrels[q] for q in test_ids})
    return EvalSet(
        name="scifact-test",
        queries=str(out / "scifact-test.queries.tsv"),
        collection=str(out / "scifact.collection.tsv"),
        run=str(out / "scifact-test.bm25.trec"),
        qrels=str(out / "scifact-test.qrels.txt"),
        rel_threshold=1,
        num_queries=len(test_ids),
    )
