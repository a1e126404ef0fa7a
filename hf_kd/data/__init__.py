"""Teacher-score data: IR file readers, the dataset schemas, format readers, the teacher-score dataset folder
([`ScoreDataset`]), triple building."""

from .convert import ConversionReport, convert, rejected_path_for
from .errors import ConfigError, DataFormatError
from .ir_files import (
    BeirData,
    read_beir,
    read_collection_tsv,
    read_qrels,
    read_queries_tsv,
    read_run,
    write_run,
)
from .jsonl_readers import NwayJsonlReader
from .parquet_readers import StMarginMseReader, StMseReader
from .provenance import Provenance
from .reader_base import RejectedRows, ScoreReader
from .readers import READERS, open_reader
from .schemas import (
    ID_SCHEMAS,
    ID_TRIPLES_FEATURES,
    MARGIN_ID_TRIPLES_FEATURES,
    MARGIN_TRIPLES_FEATURES,
    NWAY_FEATURES,
    NWAY_ID_FEATURES,
    POINTWISE_FEATURES,
    POINTWISE_ID_FEATURES,
    SCHEMAS,
    SCORED_ID_TRIPLES_FEATURES,
    SCORED_TRIPLES_FEATURES,
    TEXT_SCHEMAS,
    TEXTS_FEATURES,
    TRIPLES_FEATURES,
    detect_schema,
    per_teacher_columns,
    text_schema_of,
    with_per_teacher_columns,
)
from .score_dataset import ScoreDataset, TeacherScores
from .text_join import join_texts, joined_columns
from .texts import MissingIdError, TextStore
from .train_rows import TRAINABLE_SCHEMAS, load_train_dataset
from .triples import TripleStats, build_candidate_pairs, build_triples, read_query_id_list, save_triples
from .tsv_readers import PaperIdsReader, PaperTextReader, TriplesReader
from .writers import DEFAULT_SHARD_ROWS, write_texts

__all__ = [
    "DEFAULT_SHARD_ROWS",
    "ID_SCHEMAS",
    "ID_TRIPLES_FEATURES",
    "MARGIN_ID_TRIPLES_FEATURES",
    "MARGIN_TRIPLES_FEATURES",
    "NWAY_FEATURES",
    "NWAY_ID_FEATURES",
    "POINTWISE_FEATURES",
    "POINTWISE_ID_FEATURES",
    "READERS",
    "SCHEMAS",
    "SCORED_ID_TRIPLES_FEATURES",
    "SCORED_TRIPLES_FEATURES",
    "TEXTS_FEATURES",
    "TEXT_SCHEMAS",
    "TRAINABLE_SCHEMAS",
    "TRIPLES_FEATURES",
    "BeirData",
    "ConfigError",
    "ConversionReport",
    "DataFormatError",
    "NwayJsonlReader",
    "PaperIdsReader",
    "PaperTextReader",
    "Provenance",
    "RejectedRows",
    "ScoreDataset",
    "ScoreReader",
    "StMarginMseReader",
    "StMseReader",
    "TeacherScores",
    "TripleStats",
    "TriplesReader",
    "build_candidate_pairs",
    "build_triples",
    "convert",
    "detect_schema",
    "per_teacher_columns",
    "with_per_teacher_columns",
    "join_texts",
    "load_train_dataset",
    "joined_columns",
    "MissingIdError",
    "TextStore",
    "open_reader",
    "read_beir",
    "read_collection_tsv",
    "read_qrels",
    "read_queries_tsv",
    "read_query_id_list",
    "read_run",
    "rejected_path_for",
    "save_triples",
    "text_schema_of",
    "write_run",
    "write_texts",
]
