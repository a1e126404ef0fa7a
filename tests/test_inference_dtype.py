"""Models loaded in bfloat16 or int8 for inference: every architecture scores like its float32 self, the commands record
the precision, and an index build does not mix vectors of two precisions."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import dl20_pairs, run_evaluation_command

from hf_kd import BertCatModel, BertDotModel, ColBERTModel, PreTTModel, TKModel
from hf_kd.evaluation import INFERENCE_DTYPES, load_model
from hf_kd.evaluation.onnx_int8 import ONNX_INT8_MODEL_TYPES, OnnxInt8Backbone
from hf_kd.training.stage import student_config

ARCHITECTURES = {
    "bert_dot": BertDotModel,
    "bert_cat": BertCatModel,
    "colbert": ColBERTModel,
    "prett": PreTTModel,
    "tk": TKModel,
}


pytestmark = pytest.mark.usefixtures("single_torch_thread")


def model_type(folder) -> str:
    return json.loads((folder / "config.json").read_text())["model_type"]


run_command = run_evaluation_command


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_bfloat16_weights_score_real_pairs_like_float32(tmp_path, minilm_path, tokenizer, ci_data, architecture):
    folder = tmp_path / architecture
    model = ARCHITECTURES[architecture].from_backbone(minilm_path, **student_config(architecture, minilm_path, True))
    model.save_pretrained(folder, tokenizer=tokenizer)
    queries, passages = dl20_pairs(ci_data, 4)
    queries, passages = queries[:16], passages[:16]

    scores = {}
    for dtype in INFERENCE_DTYPES:
        if dtype == "onnx-int8" and model_type(folder) not in ONNX_INT8_MODEL_TYPES:
            with pytest.raises(ValueError, match=f"onnx-int8 covers .* {model_type(folder)} does not: use --dtype"):
                load_model(str(folder), "cpu", dtype)
            continue
        loaded, loaded_tokenizer = load_model(str(folder), "cpu", dtype)
        if dtype == "onnx-int8":
            assert isinstance(loaded.backbone, OnnxInt8Backbone) and loaded.device.type == "cpu"
        elif dtype == "int8":
            from torchao.quantization import Int8Tensor

            # every linear layer but those inside torch's MultiheadAttention (TK's contextualiser), which reads its
            # weights directly
            linears = [m for m in loaded.modules() if type(m) is torch.nn.Linear]
            assert linears and all(isinstance(m.weight, Int8Tensor) for m in linears)
        else:
            assert {p.dtype for p in loaded.parameters() if p.is_floating_point()} == {getattr(torch, dtype)}
        scores[dtype] = loaded.score(queries, passages, loaded_tokenizer, batch_size=8)
        assert scores[dtype].dtype == torch.float32  # scores leave the model in float32 in every precision

    full = scores["float32"]
    # measured on these pairs (scores spread 0.04-0.27): bfloat16 at most 0.007 from float32, int8 at most 0.012,
    # onnx-int8 (its activations quantised per batch, not per token) at most 0.036; correlations >= 0.998, >= 0.993
    # and >= 0.994 (BERT_CAT in onnx-int8: 0.982, its untrained head's scores spread least)
    for dtype, tolerance, correlation in (("bfloat16", 0.02, 0.99), ("int8", 0.03, 0.99), ("onnx-int8", 0.06, 0.97)):
        if dtype not in scores:
            continue
        reduced = scores[dtype]
        assert not torch.equal(full, reduced)  # the weights were really rounded
        assert (full - reduced).abs().max() < tolerance
        assert torch.corrcoef(torch.stack([full, reduced]))[0, 1] > correlation


def test_an_unknown_precision_is_refused_in_one_line(tiny_dot_folder):
    with pytest.raises(ValueError, match="dtype must be one of float32, bfloat16, int8, onnx-int8, got 'float16'"):
        load_model(str(tiny_dot_folder), "cpu", "float16")


def test_evaluate_index_and_retrieve_record_their_precision(tmp_path, ci_data, tiny_dot_folder):
    dl20 = ci_data / "msmarco-dl20"
    data = ["--queries", dl20 / "queries.tsv", "--qrels", dl20 / "qrels.txt"]
    reranked = tmp_path / "rerank"
    assert run_command("evaluate", "--model", tiny_dot_folder, "--run", dl20 / "runs" / "bm25.top30.trec",
                       "--collection", dl20 / "collection.tsv", *data, "--out", reranked, "--top-k", 10,
                       "--dtype", "bfloat16") == 0  # fmt: skip
    assert json.loads((reranked / "metrics.json").read_text())["dtype"] == "bfloat16"

    index = tmp_path / "index"
    collection = ["--collection", dl20 / "collection.tsv"]
    assert run_command("index", "--model", tiny_dot_folder, *collection, "--out", index, "--dtype", "bfloat16") == 0
    assert json.loads((index / "index_build.json").read_text())["dtype"] == "bfloat16"
    retrieved = tmp_path / "dense"
    assert run_command("retrieve", "--model", tiny_dot_folder, "--index", index, *data, "--out", retrieved,
                       "--k", 10, "--dtype", "bfloat16") == 0  # fmt: skip
    report = json.loads((retrieved / "metrics.json").read_text())
    assert report["dtype"] == "bfloat16" and report["retrieval"] == "dense"


def test_an_index_build_does_not_resume_in_another_precision(tmp_path, ci_data, tiny_dot_folder, monkeypatch):
    from hf_kd.data.ir_files import read_collection_tsv
    from hf_kd.evaluation import build_dense_index, indexing

    collection = read_collection_tsv(ci_data / "msmarco-dl20" / "collection.tsv")
    out = tmp_path / "index"
    write_shard = indexing._write_shard

    def killed_after_the_first_shard(path, vectors):
        write_shard(path, vectors)
        raise KeyboardInterrupt

    monkeypatch.setattr(indexing, "_write_shard", killed_after_the_first_shard)
    build = {"device": "cpu", "shard_size": 50, "show_progress": False}
    with pytest.raises(KeyboardInterrupt):
        build_dense_index(str(tiny_dot_folder), collection, out, **build)  # float32
    monkeypatch.setattr(indexing, "_write_shard", write_shard)

    with pytest.raises(ValueError, match="dtype"):
        build_dense_index(str(tiny_dot_folder), collection, out, dtype="bfloat16", **build)
    result = build_dense_index(str(tiny_dot_folder), collection, out, **build)  # the float32 build resumes
    assert result.resumed_passages == 50 and len(result.index) == len(collection)


@pytest.mark.parametrize("dtype, line", [("bfloat16", "bfloat16 matrix units"), ("int8", "int8 dot-product units")])
def test_a_cpu_without_the_units_of_a_precision_is_told_in_one_line(monkeypatch, capsys, tiny_dot_folder, dtype, line):
    from hf_kd import hardware

    summary = hardware.processor_summary()
    monkeypatch.setattr(hardware, "cpu_bf16_flags", lambda: ())
    monkeypatch.setattr(hardware, "processor_summary", lambda: {**summary, "bf16_units": [], "int8_units": []})
    load_model(str(tiny_dot_folder), "cpu", dtype)
    told = [text for text in capsys.readouterr().err.splitlines() if "slower than float32" in text]
    assert len(told) == 1 and line in told[0] and f"{dtype} will be slower" in told[0]

    monkeypatch.setattr(hardware, "cpu_bf16_flags", lambda: ("amx_bf16",))
    monkeypatch.setattr(hardware, "processor_summary", lambda: {**summary, "int8_units": ["amx_int8"]})
    load_model(str(tiny_dot_folder), "cpu", dtype)
    assert "slower than float32" not in capsys.readouterr().err
