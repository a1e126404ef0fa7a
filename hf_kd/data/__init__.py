"""Teacher-score data: IR file readers, the dataset schemas, format readers, triple building."""

from .errors import DataFormatError
from .ir_files import (
    BeirData,
    read_beir,
    read_collection_tsv,
    read_qrels,
    read_queries_tsv,
    read_run,
    write_run,
)

__all__ = [
    "BeirData",
    "DataFormatError",
    "read_beir",
    "read_collection_tsv",
    "read_qrels",
    "read_queries_tsv",
    "read_run",
    "write_run",
]
