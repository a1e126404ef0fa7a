"""Mined negatives written as TSV triples, an id-form triples folder or n-way rows with teacher scores."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import pyarrow as pa

from ..data.provenance import Provenance
from ..data.schemas import NWAY_ID_FEATURES
from ..data.score_dataset import ScoreDataset
from ..data.triples import save_triples
from ..data.writers import check_output_folder
from ..files import atomic_path, remove_staging_leftovers
from ..jobs import output_lock
from .negatives import MinedRow, MiningResult

OUTPUT_FORMATS = ("triples", "triples-tsv", "nway")
_TSV_BREAKS = re.compile(r"[\t\r\n]")


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
    written = ScoreDataset.write(
        out,
        [_nway_batch(rows)] if rows else [],
        features=NWAY_ID_FEATURES,
        provenance=provenance,
        queries={qid: text for qid, text in queries.items() if qid in used_queries},
        collection={pid: text for pid, text in collection.items() if pid in used_passages},
        overwrite=overwrite,
    )
    return written.num_rows


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
