"""Teachers: scoring triples with any ranker (cross-encoders, bi-encoders, hf-kd models, run files, BM25 over a
corpus) or several, normalised mean ensembles, score-distribution analysis."""

from .analysis import analyze_scores, score_statistics
from .base import Teacher
from .bm25_teacher import BM25_PREFIX, BM25Teacher
from .ensemble import (
    NORMALIZATIONS,
    ensemble_score_datasets,
    fuse_union_zscore,
    mean_ensemble,
    normalize_scores,
    union_zscore_statistics,
)
from .loading import (
    CrossEncoderTeacher,
    HfKdTeacher,
    SentenceTransformerTeacher,
    SequenceClassificationTeacher,
    load_teacher,
)
from .run_teacher import RUN_PREFIX, RunTeacher
from .scoring import ScoringResult, score_pairs, score_triples
from .triples import DistinctPairs, find_distinct_pairs, read_triples

__all__ = [
    "BM25_PREFIX",
    "BM25Teacher",
    "NORMALIZATIONS",
    "RUN_PREFIX",
    "CrossEncoderTeacher",
    "DistinctPairs",
    "HfKdTeacher",
    "RunTeacher",
    "SentenceTransformerTeacher",
    "ScoringResult",
    "SequenceClassificationTeacher",
    "Teacher",
    "analyze_scores",
    "ensemble_score_datasets",
    "find_distinct_pairs",
    "load_teacher",
    "fuse_union_zscore",
    "mean_ensemble",
    "normalize_scores",
    "union_zscore_statistics",
    "read_triples",
    "score_pairs",
    "score_statistics",
    "score_triples",
]
