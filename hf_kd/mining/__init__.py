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

from .commands import add_subcommands
from .negatives import (
    SAMPLING,
    MinedRow,
    MiningResult,
    MiningStats,
    find_positives,
    mine_hard_negatives,
    parse_rank_range,
)
from .output import OUTPUT_FORMATS, write_mined
from .retrieval import load_dense_encoder, retrieve_candidates

__all__ = [
    "OUTPUT_FORMATS",
    "SAMPLING",
    "MinedRow",
    "MiningResult",
    "MiningStats",
    "add_subcommands",
    "find_positives",
    "load_dense_encoder",
    "mine_hard_negatives",
    "parse_rank_range",
    "retrieve_candidates",
    "write_mined",
]
