"""Teachers in int8: every kind of neural teacher runs its encoder in ONNX Runtime int8 (`--dtype onnx-int8`), scores
real pairs like its float32 self, and the score dataset records the precision."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
from conftest import dl20_pairs

from hf_kd.data import ScoreDataset
from hf_kd.evaluation.onnx_int8 import OnnxInt8Backbone
from hf_kd.teachers import load_teacher
from hf_kd.teachers.commands import add_subcommands

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def teacher_folders(tmp_path_factory, minilm_path, tokenizer) -> dict[str, str]:
    """One checkpoint of each neural teacher kind, all on all-MiniLM-L6-v2's encoder."""
    from sentence_transformers import CrossEncoder
    from transformers import BertForSequenceClassification

    from hf_kd import BertCatModel
    from hf_kd.training.stage import student_config

    root = tmp_path_factory.mktemp("teachers")
    torch.manual_seed(0)
    BertCatModel.from_backbone(minilm_path, **student_config("bert_cat", minilm_path, True)).save_pretrained(
        root / "bert_cat", tokenizer=tokenizer
    )
    head = BertForSequenceClassification.from_pretrained(minilm_path, num_labels=1)
    head.save_pretrained(root / "sequence_classification")
    tokenizer.save_pretrained(root / "sequence_classification")
    CrossEncoder(str(root / "sequence_classification"), num_labels=1).save_pretrained(str(root / "cross_encoder"))
    return {
        "hf_kd": str(root / "bert_cat"),
        "sequence_classification": str(root / "sequence_classification"),
        "cross_encoder": str(root / "cross_encoder"),
        "sentence_transformer": minilm_path,
    }


@pytest.mark.parametrize("kind", ["hf_kd", "sequence_classification", "cross_encoder", "sentence_transformer"])
def test_each_teacher_kind_scores_real_pairs_in_onnx_int8_like_float32(teacher_folders, ci_data, kind):
    queries, passages = dl20_pairs(ci_data, 4)
    queries, passages = queries[:16], passages[:16]
    full = load_teacher(teacher_folders[kind], device="cpu")
    int8 = load_teacher(teacher_folders[kind], device="cpu", dtype="onnx-int8")
    assert full.kind == int8.kind == kind
    (encoder,) = [module for module in int8.model.modules() if isinstance(module, OnnxInt8Backbone)]
    # heads that read the first token alone get an export whose last layer computes that position only
    assert encoder.first_token_only == (kind in ("sequence_classification", "cross_encoder"))
    assert full.describe()["dtype"] == "float32" and int8.describe()["dtype"] == "onnx-int8"

    expected, scores = full.score(queries, passages), int8.score(queries, passages)
    assert scores.dtype == torch.float32 and not torch.equal(expected, scores)  # the encoder really ran in int8
    # measured on these pairs: the largest change 0.12 (bi-encoder) to 0.53 (untrained classification heads, whose
    # scores spread little) of the standard deviation of the 16 scores; correlations 0.981-0.997
    assert (expected - scores).abs().max() < 0.7 * expected.std()
    assert torch.corrcoef(torch.stack([expected, scores]))[0, 1] > 0.97


def test_cli_score_in_onnx_int8_records_the_precision_beside_bm25(teacher_folders, ci_data, tmp_path):
    dl20 = ci_data / "msmarco-dl20"
    queries, passages = dl20_pairs(ci_data, 4)  # four candidates of each query: two triples per query
    triples = tmp_path / "triples.tsv"
    triples.write_text("".join(f"{queries[i]}\t{passages[i]}\t{passages[i + 1]}\n" for i in range(0, len(queries), 2)))
    parser = argparse.ArgumentParser()
    add_subcommands(parser.add_subparsers())
    runs = {}
    for dtype in ("float32", "onnx-int8"):
        out = tmp_path / dtype
        args = parser.parse_args(
            ["score", "--teacher", teacher_folders["sentence_transformer"], "--teacher",
             f"bm25:{dl20 / 'collection.tsv'}", "--triples", str(triples), "--out", str(out), "--device", "cpu",
             "--dtype", dtype, "--normalize", "query_zscore"]
        )  # fmt: skip
        assert args.func(args) == 0
        runs[dtype] = ScoreDataset.open(out)
    teachers = runs["onnx-int8"].provenance.parameters["teachers"]
    assert [t.get("dtype") for t in teachers] == ["onnx-int8", None]  # BM25 has no weights to quantise
    assert runs["float32"].provenance.parameters["teachers"][0]["dtype"] == "float32"
    column = f"pos_score_{teachers[0]['name']}"
    full, int8 = (runs[dtype].table().column(column).to_numpy() for dtype in ("float32", "onnx-int8"))
    assert not np.array_equal(full, int8) and np.corrcoef(full, int8)[0, 1] > 0.95


def test_a_teacher_that_cannot_run_in_int8_says_why_in_one_line(teacher_folders, ci_data):
    dl20 = ci_data / "msmarco-dl20"
    with pytest.raises(ValueError, match="dtype must be one of float32, bfloat16, int8, onnx-int8, got 'int4'"):
        load_teacher(teacher_folders["hf_kd"], device="cpu", dtype="int4")
    bm25 = load_teacher(f"bm25:{dl20 / 'collection.tsv'}", dtype="onnx-int8")  # nothing to quantise: left as it is
    assert bm25.precision is None
    with pytest.raises(
        ValueError, match=r"teacher '.*collection.tsv' \(bm25\) has no neural model to run in onnx-int8"
    ):
        bm25.quantize("onnx-int8")
    teacher = load_teacher(teacher_folders["hf_kd"], device="cpu")
    teacher.device = torch.device("cuda")
    with pytest.raises(ValueError, match="onnx-int8 runs on the CPU .*, not on cuda"):
        teacher.quantize("onnx-int8")


def test_the_first_token_export_is_chosen_only_for_heads_that_read_the_first_token_alone(tokenizer):
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    from hf_kd.evaluation.onnx_int8 import head_reads_the_first_token_only

    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, num_labels=1)  # fmt: skip
    torch.manual_seed(0)
    classifier = BertForSequenceClassification(config).eval()
    assert head_reads_the_first_token_only(classifier, classifier.bert)

    class MeanPoolingHead(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = BertModel(config, add_pooling_layer=False).eval()

        def forward(self, **inputs):
            return (self.encoder(**inputs).last_hidden_state.mean(dim=1),)

    pooling = MeanPoolingHead()
    assert not head_reads_the_first_token_only(pooling, pooling.encoder)
