"""Training triples and evaluation sets of the reproduction, built from the real data in `../shared/data`.

MS MARCO domain: TREC-DL 2020 is the only judged MS MARCO data available, so its queries are split in two by
sorted query id: even positions form the **dev set that every table reports**, odd positions give training
triples (judged positives at grade >= 2, negatives from the BM25 candidates not judged relevant). The 100 MS MARCO
training triples are added as they are. Second domain: SciFact's train split, with BM25 negatives; SciFact's
test split is a second, out-of-domain evaluation. No reported query is ever trained on.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from datasets import Dataset

from ..data import (
    TRIPLES_FEATURES,
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
    train_100 = root / ("msmarco-train-100.triples.tsv" if budget.data == "ci" else "msmarco-train-100/triples.tsv")
    for path in (dl20, scifact, train_100):
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: pass --data-dir pointing at the shared data folder")

    texts: list[tuple[str, str, str]] = []
    counts: dict[str, int] = {}

    # MS MARCO: DL20 split by query, training triples from its judgements and BM25 candidates
    queries = read_queries_tsv(dl20 / "queries.tsv")
    collection = read_collection_tsv(dl20 / "collection.tsv")
    qrels = read_qrels(dl20 / "qrels.txt")
    bm25_path = _bm25_run_file(dl20 / "runs")
    bm25 = read_run(bm25_path)
    train_runs = [bm25 if name == "bm25" else read_run(_run_file(dl20 / "runs", name)) for name in budget.train_runs]
    dev_ids, train_ids = dl20_split([q for q in queries if q in qrels])
    triples, _ = build_triples(
        qrels,
        train_runs,
        min_grade=2,
        negatives_per_positive=budget.negatives_per_positive,
        seed=budget.seed,
        query_ids=queries,
        passage_ids=collection,
        include_queries=train_ids,
        max_rank=budget.negatives_max_rank or budget.rerank_top_k,
    )
    texts += [(queries[q], collection[p], collection[n]) for q, p, n in triples]
    counts["msmarco-dl20-train-queries"] = len(triples)

    with open(train_100, encoding="utf-8") as f:
        plain = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    texts += [(q, p, n) for q, p, n in plain]
    counts["msmarco-train-100"] = len(plain)

    # SciFact train with BM25 negatives
    scifact_train = read_beir(scifact, split="train")
    train_queries = {
        q: scifact_train.queries[q] for q in _first(list(scifact_train.qrels), budget.scifact_train_queries)
    }
    scifact_run = bm25_search(scifact_train.corpus, train_queries, k=budget.rerank_top_k, show_progress=False)
    triples, _ = build_triples(
        scifact_train.qrels,
        [scifact_run],
        min_grade=1,
        negatives_per_positive=budget.negatives_per_positive,
        seed=budget.seed,
        query_ids=train_queries,
        passage_ids=scifact_train.corpus,
    )
    texts += [(train_queries[q], scifact_train.corpus[p], scifact_train.corpus[n]) for q, p, n in triples]
    counts["scifact-train"] = len(triples)

    train_path = out / "train_triples.parquet"
    Dataset.from_dict(
        {"query": [t[0] for t in texts], "positive": [t[1] for t in texts], "negative": [t[2] for t in texts]},
        features=TRIPLES_FEATURES,
    ).to_parquet(str(train_path))

    # DL20 dev: BM25 run and judgements of the dev queries only
    dev_set = set(dev_ids)
    write_run({q: c for q, c in bm25.items() if q in dev_set}, out / "dl20-dev.bm25.trec", tag="bm25")
    _write_qrels(out / "dl20-dev.qrels.txt", {q: qrels[q] for q in dev_ids})
    dl20_dev = EvalSet(
        name="dl20-dev",
        queries=str(dl20 / "queries.tsv"),
        collection=str(dl20 / "collection.tsv"),
        run=str(out / "dl20-dev.bm25.trec"),
        qrels=str(out / "dl20-dev.qrels.txt"),
        rel_threshold=2,
        num_queries=len(dev_ids),
    )

    # SciFact test: BM25 top-k over the corpus
    scifact_test = read_beir(scifact, split="test")
    test_ids = _first(list(scifact_test.qrels), budget.scifact_test_queries)
    test_queries = {q: scifact_test.queries[q] for q in test_ids}
    write_run(
        bm25_search(scifact_test.corpus, test_queries, k=budget.rerank_top_k, show_progress=False),
        out / "scifact-test.bm25.trec",
        tag="bm25",
    )
    _write_tsv(out / "scifact-test.queries.tsv", test_queries)
    _write_tsv(out / "scifact.collection.tsv", scifact_test.corpus)
    _write_qrels(out / "scifact-test.qrels.txt", {q: scifact_test.qrels[q] for q in test_ids})
    scifact_eval = EvalSet(
        name="scifact-test",
        queries=str(out / "scifact-test.queries.tsv"),
        collection=str(out / "scifact.collection.tsv"),
        run=str(out / "scifact-test.bm25.trec"),
        qrels=str(out / "scifact-test.qrels.txt"),
        rel_threshold=1,
        num_queries=len(test_ids),
    )
    prepared = PreparedData(
        train_triples=str(train_path),
        triple_counts=counts,
        dl20_dev=dl20_dev,
        scifact_test=scifact_eval,
        dev_query_ids=dev_ids,
    )
    write_json_atomic(str(manifest), prepared.to_dict())  # the stage's done-marker: whole or absent
    return prepared
