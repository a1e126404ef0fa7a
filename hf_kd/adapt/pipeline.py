"""`hf-kd adapt`: a corpus in, a student adapted to it out.

queries -> candidates -> pairs -> teacher scores -> students -> evaluation. The queries are a user's unjudged
queries (`--queries`) or pseudo-queries made from the corpus; each query's candidates are BM25's and the starting
model's top k over the corpus; random pairs of them are labelled by BM25 and the starting model together (per-query
z-scores, averaged, in the starting model's units: on SciFact that ensemble ranks +0.067 nDCG@10 above the starting
model, with no label); the students learn the ensemble's margins with Margin-MSE. Beside them, the controls: the
same pairs labelled by the starting model alone (`self`) and, for pseudo-queries, a student without any teacher
(`twin`: RankNet on the source document against a BM25 negative).

Every stage writes its result under the output folder and is skipped when that result exists, so a killed
adaptation continues where it stopped; the folder holds one budget's adaptation of one corpus only.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset

from ..data.corpus import Document, corpus_file, corpus_texts, read_corpus
from ..data.ir_files import read_beir, read_qrels, read_queries_tsv, write_run
from ..data.pseudo_queries import make_pseudo_queries, read_query_sources, write_pseudo_queries
from ..data.schemas import TRIPLES_FEATURES
from ..data.score_dataset import ScoreDataset
from ..data.triples import build_candidate_pairs
from ..files import write_json_atomic, write_text_atomic
from ..jobs import file_fingerprint, fingerprint_changes, output_lock, record_timings
from .budgets import AdaptBudget
from .teacher import DENSE_TEACHER, LEXICAL_TEACHER, teacher_label, teacher_members


def _log(message: str) -> None:
    print(f"[hf-kd adapt] {message}", flush=True)


@dataclass
class EvalData:
    """Judged queries of the corpus that measure the students (never trained on)."""

    name: str
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


@dataclass
class Adaptation:
    """What the stages of one adaptation share."""

    budget: AdaptBudget
    out: Path
    corpus_path: str
    documents: dict[str, Document]
    start_model: str
    teacher_model: str | None = None
    queries_source: str | None = None
    queries_split: str = "train"
    eval_data: EvalData | None = None
    corpus: dict[str, str] = field(default_factory=dict)
    queries: dict[str, str] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    students: dict[str, str] = field(default_factory=dict)

    @property
    def scores_dir(self) -> Path:
        return self.out / "teacher_scores"

    @property
    def start_vectors_path(self) -> Path:
        """The starting model's vectors of the corpus at the teacher's length (dense candidates and teacher)."""
        return self.out / "candidates" / "start_vectors.npy"

    def start_vectors(self):
        from .vectors import CorpusVectors, start_encoder

        budget = self.budget
        encoder = start_encoder(
            self.start_model, budget.teacher_max_length, budget.max_query_length, special_tokens_included=True
        )
        return CorpusVectors(*encoder, self.corpus, self.start_vectors_path)

    @property
    def teacher_vectors_path(self) -> Path:
        """The `--teacher-model`'s vectors of the corpus at the teacher's length."""
        return self.out / "candidates" / "teacher_model_vectors.npy"

    def teacher_vectors(self):
        """The `--teacher-model`'s corpus vectors, encoded in the students' precision (bfloat16 autocast where the
        CPU has bfloat16 units)."""
        from .vectors import SentenceTransformerVectors

        return SentenceTransformerVectors(
            self.teacher_model, self.budget.teacher_max_length, self.corpus, self.teacher_vectors_path, self.bf16()
        )

    def student_runs(self) -> list[tuple[str, str, str, int]]:
        """(name, architecture, setting, seed) of every student; the twin only where the queries have sources."""
        return self.budget.student_runs(with_sources=bool(self.sources))

    def bf16(self) -> bool:
        if self.budget.bf16 != "auto":
            return self.budget.bf16 == "true"
        import torch

        from ..training.precision import default_bf16

        return default_bf16(torch.cuda.is_available(), announce=False)[0]


# --------------------------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------------------------


def read_eval_data(
    corpus_path: str,
    documents: dict[str, Document],
    split: str | None,
    queries: str | None,
    qrels: str | None,
    max_queries: int | None,
) -> EvalData | None:
    """The evaluation queries: `--eval-queries` + `--qrels`, or a BEIR folder's `split`; None where there are none."""
    if (queries is None) != (qrels is None):
        raise ValueError("pass both --eval-queries and --qrels, or neither")
    if queries is not None:
        texts, judgements, name = read_queries_tsv(queries), read_qrels(qrels), Path(qrels).stem
    elif split and Path(corpus_path).is_dir() and (Path(corpus_path) / "qrels" / f"{split}.tsv").is_file():
        beir = read_beir(corpus_path, split=split)
        texts, judgements, name = beir.queries, beir.qrels, f"{Path(corpus_path).name}-{split}"
    else:
        return None
    judged = [q for q in judgements if q in texts and any(d in documents for d in judgements[q])]
    if not judged:
        raise ValueError(f"evaluation set {name}: no judged query has a text and a judged document in the corpus")
    judged = judged[:max_queries] if max_queries else judged
    return EvalData(name=name, queries={q: texts[q] for q in judged}, qrels={q: judgements[q] for q in judged})


def read_user_queries(path: str, split: str) -> dict[str, str]:
    """A query log: a `qid<TAB>text` file, or a BEIR folder's queries judged in `split` (their judgements unused)."""
    if Path(path).is_dir():
        return read_beir(path, split=split).queries
    return read_queries_tsv(path)


# --------------------------------------------------------------------------------------------------------------------
# The stages
# --------------------------------------------------------------------------------------------------------------------


def prepare_queries(run: Adaptation) -> None:
    """The queries the student learns from: the user's, or pseudo-queries of the corpus; never an evaluation
    query (same id or same text), drawn down to `max_queries` at random."""
    folder = run.out / "queries"
    if (folder / "queries.tsv").is_file():
        run.queries = read_queries_tsv(folder / "queries.tsv")
        sources = folder / "query_sources.tsv"
        run.sources = read_query_sources(sources) if sources.is_file() else {}
        return
    budget = run.budget
    stats: dict[str, Any]
    if run.queries_source is not None:
        queries, sources = read_user_queries(run.queries_source, run.queries_split), {}
        stats = {"source": str(run.queries_source), "split": run.queries_split, "given": len(queries)}
    else:
        pseudo = make_pseudo_queries(
            run.documents,
            budget.query_method,
            per_doc=budget.queries_per_doc,
            seed=budget.seed,
            max_documents=budget.max_documents,
        )
        queries, sources, stats = pseudo.queries, pseudo.sources, dict(pseudo.stats)
    held_out = run.eval_data
    if held_out is not None:
        eval_texts = {" ".join(t.lower().split()) for t in held_out.queries.values()}
        kept = {
            q: t
            for q, t in queries.items()
            if q not in held_out.queries and " ".join(t.lower().split()) not in eval_texts
        }
        stats["dropped_evaluation_queries"] = len(queries) - len(kept)
        queries = kept
    if budget.max_queries is not None and len(queries) > budget.max_queries:
        chosen = set(random.Random(budget.seed).sample(sorted(queries), budget.max_queries))
        queries = {q: t for q, t in queries.items() if q in chosen}
    if not queries:
        raise ValueError("no training query is left (every one is an evaluation query)")
    stats["queries"] = len(queries)
    from ..data.pseudo_queries import PseudoQueries

    write_pseudo_queries(
        PseudoQueries(queries, {q: sources[q] for q in queries if q in sources}, stats), folder, run.corpus_path
    )
    if not sources:
        (folder / "query_sources.tsv").unlink()
    run.queries, run.sources = queries, {q: sources[q] for q in queries if q in sources}


def retrieve_candidates_stage(run: Adaptation) -> dict[str, dict[str, dict[str, float]]]:
    """BM25's and the starting model's top k of every query over the whole corpus, kept as TREC runs; the starting
    model's corpus vectors are kept too (the dense teacher scores from them)."""
    from ..data.ir_files import read_run
    from ..evaluation.bm25 import BM25Index

    folder, budget = run.out / "candidates", run.budget
    runs = {}
    for name, k in ((LEXICAL_TEACHER, budget.bm25_candidates), ("dense", budget.dense_candidates)):
        path = folder / f"{name}.trec"
        if k < 1:
            continue
        if not path.is_file():
            _log(f"candidates: {name} top {k} of {len(run.queries)} queries over {len(run.corpus)} documents")
            if name == LEXICAL_TEACHER:
                found = BM25Index.build(run.corpus).search(run.queries, k=k)
            else:
                found = run.start_vectors().retrieve(run.queries, k)
            folder.mkdir(parents=True, exist_ok=True)
            write_run(found, path, tag=name)
        runs[name] = read_run(path)
    return runs


def build_pairs(run: Adaptation, candidates: dict[str, dict[str, dict[str, float]]]) -> Path:
    """Random pairs of each query's candidates (`pairs_per_query`, times `selection_pool` where the teacher's
    labels choose among them), as text triples for the teachers; and, where the queries have source documents, the
    twin's triples (source document, BM25 negative)."""
    path = run.out / "pairs.parquet"
    budget = run.budget
    if not path.is_file():
        pool = budget.selection_pool if budget.pair_selection == "disagreement" else 1
        pairs, stats = build_candidate_pairs(
            list(candidates.values()),
            pairs_per_query=budget.pairs_per_query * pool,
            seed=budget.seed,
            query_ids=run.queries,
            passage_ids=run.corpus,
        )
        if not pairs:
            raise ValueError("no query has two candidates: nothing for a teacher to label")
        _write_triples(path, [(run.queries[q], run.corpus[a], run.corpus[b]) for q, a, b in pairs])
        write_json_atomic(
            run.out / "pairs.json",
            {
                "pairs": len(pairs),
                "queries": stats.queries,
                "short_of_pairs": stats.short_of_pairs,
                "without_two_candidates": stats.queries_without_negative,
            },
        )
    if "twin" in budget.settings and run.sources and not (run.out / "twin_triples.parquet").is_file():
        rng = random.Random(budget.seed)
        bm25 = candidates.get(LEXICAL_TEACHER, {})
        triples = []
        for qid, source in run.sources.items():
            negatives = [pid for pid in bm25.get(qid, {}) if pid != source]
            for negative in rng.sample(negatives, min(budget.pairs_per_query, len(negatives))):
                triples.append((run.queries[qid], run.corpus[source], run.corpus[negative]))
        _write_triples(run.out / "twin_triples.parquet", triples)
    return path


def _write_triples(path: Path, triples: list[tuple[str, str, str]]) -> None:
    columns = list(zip(*triples)) if triples else [[], [], []]
    staging = path.with_name(path.name + ".tmp")
    Dataset.from_dict(
        {"query": list(columns[0]), "positive": list(columns[1]), "negative": list(columns[2])},
        features=TRIPLES_FEATURES,
    ).to_parquet(str(staging))
    staging.replace(path)


def label_pairs(run: Adaptation, pairs: Path, chunk: int = 256) -> None:
    """Labels every pair with the teacher (the budget's `teacher`, see `hf_kd.adapt.teacher`): by default, per
    query, BM25's and the starting model's z-scores over the union of their top `fusion_depth` documents of the
    whole corpus, averaged and given back in the starting model's units (`pos_score`; the ranker measured as the
    teacher); with `pair_selection="disagreement"` only the pairs of each query farthest from the starting model's
    own margins are kept. Each member's raw scores stay beside it, and the starting model's always
    (`pos_score_minilm` is the self control's teacher)."""
    if ScoreDataset.is_score_dataset(run.scores_dir):
        return
    import pyarrow.parquet as pq
    from tqdm.auto import tqdm

    from ..data.provenance import Provenance
    from .teacher import fuse, fusion_statistics, load_member, select_disagreeing_pairs

    triples = pq.read_table(pairs)
    queries = triples.column("query").to_pylist()
    passages = {side: triples.column(side).to_pylist() for side in ("positive", "negative")}
    keys = teacher_members(run.budget.teacher)
    members = {key: load_member(run, key) for key in dict.fromkeys([*keys, "start"])}
    teachers = {m.column: m.pair_teacher(run.queries, run.corpus) for m in members.values()}
    raw = {
        column: tuple(teacher.score(queries, passages[side]).numpy() for side in ("positive", "negative"))
        for column, teacher in teachers.items()
    }
    ensemble = [members[key] for key in keys]
    statistics = None
    if len(ensemble) == 2:
        distinct = list(dict.fromkeys(queries))
        centers, scales = {}, {}
        for start in tqdm(range(0, len(distinct), chunk), desc="Teacher statistics", unit="chunk"):
            texts = distinct[start : start + chunk]
            chunk_centers, chunk_scales = fusion_statistics(
                ensemble, {str(i): t for i, t in enumerate(texts)}, run.budget.fusion_depth
            )
            centers.update(zip(texts, chunk_centers))
            scales.update(zip(texts, chunk_scales))
        statistics = (np.stack([centers[q] for q in queries]), np.stack([scales[q] for q in queries]))
    fused = tuple(
        fuse(ensemble, [raw[m.column][side] for m in ensemble], statistics).astype(np.float32) for side in (0, 1)
    )
    parameters: dict[str, Any] = {
        "teachers": [teacher.describe() for teacher in teachers.values()],
        "teacher": run.budget.teacher,
        "members": [m.column for m in ensemble],
        "ensemble": "union_zscore" if len(ensemble) == 2 else None,
        "fusion_depth": run.budget.fusion_depth if len(ensemble) == 2 else None,
        "rescale_to": ensemble[-1].column,
        "self_control": DENSE_TEACHER,
    }
    if run.budget.pair_selection == "disagreement":
        kept = select_disagreeing_pairs(
            queries,
            fused[0] - fused[1],
            raw[DENSE_TEACHER][0] - raw[DENSE_TEACHER][1],
            run.budget.pairs_per_query,
        )
        parameters["pair_selection"] = {"method": "disagreement", "pairs_labelled": len(queries), "kept": len(kept)}
        triples = triples.take(kept)
        raw = {name: tuple(side[kept] for side in sides) for name, sides in raw.items()}
        fused = tuple(side[kept] for side in fused)
    provenance = Provenance(
        format="hf-kd-score",
        schema="scored_triples",
        source_files=[str(pairs)],
        teachers=[teacher.describe()["name_or_path"] for teacher in teachers.values()],
        parameters=parameters,
    )
    ScoreDataset.write_teacher_scores(run.scores_dir, triples, raw, provenance, ensemble=fused, overwrite=True)


def train_students(run: Adaptation) -> None:
    from ..training.stage import student_config, train_model

    budget = run.budget
    for name, architecture, setting, seed in run.student_runs():
        folder = run.out / "students" / name
        if setting == "twin":
            train_file, loss, columns = str(run.out / "twin_triples.parquet"), "ranknet", ScoreDataset.score_columns()
        else:
            teacher = DENSE_TEACHER if setting == "self" else None
            train_file, loss, columns = str(run.scores_dir), "margin_mse", ScoreDataset.score_columns(teacher)
        _log(f"student {name}")
        train_model(
            budget,
            folder,
            architecture=architecture,
            backbone=run.start_model,
            loss=loss,
            train_file=train_file,
            steps=budget.steps,
            seed=seed,
            learning_rate=budget.learning_rate,
            # the starting model is a sentence-transformers bi-encoder (mean pooling, cosine), as MiniLM is
            model_config=student_config(architecture, run.start_model, sentence_transformers=True),
            pos_score_column=columns[0],
            neg_score_column=columns[1],
            bf16=run.bf16(),
            backbone_dropout=budget.backbone_dropout,
            max_query_length=budget.max_query_length,
            save_steps=budget.checkpoint_every,
        )
        run.students[name] = str(folder)


# --------------------------------------------------------------------------------------------------------------------
# The whole adaptation
# --------------------------------------------------------------------------------------------------------------------


def run_adaptation(
    corpus: str,
    out: str | Path,
    budget: AdaptBudget,
    *,
    queries: str | None = None,
    queries_split: str = "train",
    eval_split: str | None = "test",
    eval_queries: str | None = None,
    qrels: str | None = None,
    start_model: str | None = None,
    teacher_model: str | None = None,
) -> dict[str, Any]:
    """Adapts a student to `corpus` (a BEIR folder or a collection TSV) and writes `results.json` and `tables.md`
    into `out`; see the module's description. Holds the lock of `out` throughout.

    Args:
        corpus: the corpus to adapt to.
        out: the output folder (resumed when it holds this budget's adaptation of this corpus).
        budget: an [`AdaptBudget`].
        queries: a query log (`qid<TAB>text`, or a BEIR folder's `queries_split`); None: pseudo-queries.
        eval_split: the BEIR split that measures the students (ignored where the folder has none).
        eval_queries, qrels: judged queries instead of a BEIR split.
        start_model: the student's starting point and dense teacher (a sentence-transformers folder); defaults to
            all-MiniLM-L6-v2.
        teacher_model: a sentence-transformers bi-encoder (folder, Hub id, or `mpnet` for all-mpnet-base-v2), the
            member `model` of the budget's `teacher`.
    """
    budget.validate()
    uses_model = "model" in teacher_members(budget.teacher)
    if uses_model and not teacher_model:
        raise ValueError(f"teacher={budget.teacher!r} has the member 'model': pass --teacher-model")
    if teacher_model and not uses_model:
        raise ValueError(
            f"--teacher-model {teacher_model} is not a member of teacher={budget.teacher!r}: use e.g. "
            "teacher=bm25+model (the default with --teacher-model) or teacher=model"
        )
    out = Path(out)
    with output_lock(out):
        return _run(
            corpus, out, budget, queries, queries_split, eval_split, eval_queries, qrels, start_model, teacher_model
        )


def _run(
    corpus, out, budget, queries, queries_split, eval_split, eval_queries, qrels, start_model, teacher_model
) -> dict[str, Any]:
    from ..pretrained import minilm_path, pretrained_path
    from .evaluation import evaluate_adaptation
    from .report import write_adaptation_report

    started = time.perf_counter()
    timings: dict[str, float] = {}

    def stage(name: str, work: Callable[[], Any]) -> Any:
        _log(f"stage {name}")
        t0 = time.perf_counter()
        result = work()
        timings[name] = round(time.perf_counter() - t0, 2)
        _log(f"stage {name}: {timings[name]:.1f} s")
        return result

    documents = read_corpus(corpus)
    run = Adaptation(
        budget=budget,
        out=out,
        corpus_path=str(Path(corpus).resolve()),
        documents=documents,
        start_model=str(pretrained_path(start_model) if start_model else minilm_path()),
        teacher_model=pretrained_path(teacher_model) if teacher_model else None,
        queries_source=queries,
        queries_split=queries_split,
        corpus=corpus_texts(documents),
    )
    out.mkdir(parents=True, exist_ok=True)
    _check_same_job(run, out)
    run.eval_data = read_eval_data(run.corpus_path, documents, eval_split, eval_queries, qrels, budget.max_eval_queries)
    stage("queries", lambda: prepare_queries(run))
    _log(
        f"{len(run.queries)} training queries" + (f", {len(run.sources)} with a source document" if run.sources else "")
    )
    candidates = stage("candidates", lambda: retrieve_candidates_stage(run))
    pairs = stage("pairs", lambda: build_pairs(run, candidates))
    stage("teacher_scores", lambda: label_pairs(run, pairs))
    stage("students", lambda: train_students(run))
    evaluation = stage("evaluation", lambda: evaluate_adaptation(run)) if run.eval_data else None
    results = {
        "budget": budget.to_dict(),
        "corpus": run.corpus_path,
        "documents": len(documents),
        "start_model": run.start_model,
        "teacher": {
            "members": budget.teacher,
            "model": run.teacher_model,
            "label": teacher_label(budget.teacher, run.teacher_model),
        },
        "queries": json.loads((out / "queries" / "pseudo_queries.json").read_text(encoding="utf-8")),
        "pairs": {
            **json.loads((out / "pairs.json").read_text(encoding="utf-8")),
            "trained": ScoreDataset.open(run.scores_dir).num_rows,
        },
        "bf16": run.bf16(),
        "students": {name: folder for name, folder in run.students.items()},
        "evaluation": evaluation,
        **record_timings(out, timings, round(time.perf_counter() - started, 2)),
    }
    write_json_atomic(out / "results.json", results)
    write_text_atomic(out / "tables.md", write_adaptation_report(results))
    _log(f"done in {results['wall_time_s']:.0f} s: {out / 'tables.md'}")
    return results


# settings that only add work to a finished folder, never change what is in it
_ADDITIVE = ("seeds", "settings", "students", "max_eval_queries")


def _check_same_job(run: Adaptation, out: Path) -> None:
    """Records what the folder adapts (corpus, queries, start model, budget) in `adapt.json`, or checks that the
    adaptation in it is the same one: its finished stages are reused, so two jobs are never mixed."""
    current = {
        "corpus": file_fingerprint(corpus_file(run.corpus_path)),
        "queries": None if run.queries_source is None else str(Path(run.queries_source).resolve()),
        "queries_split": run.queries_split if run.queries_source else None,
        "start_model": run.start_model,
        "teacher_model": run.teacher_model,
        "budget": {k: v for k, v in run.budget.to_dict().items() if k not in _ADDITIVE},
    }
    path = out / "adapt.json"
    if path.is_file():
        recorded = json.loads(path.read_text(encoding="utf-8"))
        # a setting added since the folder was written had its default there
        defaults = {k: v for k, v in AdaptBudget(name=run.budget.name).to_dict().items() if k not in _ADDITIVE}
        recorded["budget"] = {**defaults, **recorded.get("budget", {})}
        recorded.setdefault("teacher_model", None)
        changes = fingerprint_changes(recorded, current)
        if changes:
            raise ValueError(
                f"{out} holds another adaptation ({'; '.join(changes)}); its finished stages would be mixed with "
                "this one's: use another --out, or remove the folder"
            )
    write_json_atomic(path, current)
