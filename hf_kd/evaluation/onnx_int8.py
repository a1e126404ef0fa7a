"""int8 inference through ONNX Runtime (the `onnx` extra), for the architectures whose backbone hands only its last
hidden state on (BERT_DOT and ColBERT): the backbone is exported to ONNX (`torch.onnx.export`, dynamo), its linear
weights quantised to int8 per output channel by ONNX Runtime's dynamic quantisation (activations to uint8 as they
come), and ONNX Runtime runs it in place of the backbone. Tokenisation, pooling, projections and scores stay in
PyTorch and in float32.

This is the int8 route for processors without int8 dot-product units (VNNI, AMX): ONNX Runtime's own kernels run
int8 products there faster than float32, where torchao's int8 linear layers (`--dtype int8`) run slower.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import tempfile
import warnings
from pathlib import Path

import torch
from transformers.modeling_outputs import BaseModelOutput

__all__ = ["ONNX_INT8_MODEL_TYPES", "OnnxInt8Backbone", "quantize_backbone_onnx_int8"]

ONNX_INT8_MODEL_TYPES = ("hfkd_bert_dot", "hfkd_colbert")
"""Model types whose backbone is called once per text with its ids and mask and hands on its last hidden state."""

_INPUTS = ("input_ids", "attention_mask")


def _onnx_runtime():
    """ONNX Runtime (and the dynamo exporter's onnxscript), or one line naming the extra that installs them."""
    try:
        import onnxruntime
        import onnxscript  # noqa: F401
    except ImportError:
        raise ImportError("onnx-int8 inference needs ONNX Runtime: pip install 'hf-kd[onnx]'") from None
    return onnxruntime


class _LastHiddenState(torch.nn.Module):
    """The backbone as the exporter sees it: ids and mask in, the last hidden state out."""

    def __init__(self, backbone: torch.nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


class OnnxInt8Backbone(torch.nn.Module):
    """Stands in for a model's backbone: the same call (`input_ids`, `attention_mask` -> `last_hidden_state`), run by
    an ONNX Runtime session of its int8 export, on the CPU, with as many threads as PyTorch uses."""

    def __init__(self, model_path: str | Path, config):
        super().__init__()
        onnxruntime = _onnx_runtime()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        self.session = onnxruntime.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        # empty, so that the model still reports where it runs and in what precision (`model.device`, `model.dtype`)
        self.placement = torch.nn.Parameter(torch.empty(0), requires_grad=False)
        self.config = config  # what the model reads of its backbone (hidden size, embeddings' vocabulary)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_) -> BaseModelOutput:
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        feeds = {name: tensor.detach().to("cpu", torch.int64).numpy() for name, tensor in feeds.items()}
        hidden = self.session.run(["last_hidden_state"], feeds)[0]
        return BaseModelOutput(last_hidden_state=torch.from_numpy(hidden))


def quantize_backbone_onnx_int8(model) -> None:
    """Replaces `model.backbone` (a float32 zoo model of one of [`ONNX_INT8_MODEL_TYPES`], on the CPU) by an
    [`OnnxInt8Backbone`] of its int8 export. The export takes a minute for a six-layer MiniLM on two cores; the
    files live only until the session has read them."""
    _onnx_runtime()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model_type = getattr(model.config, "model_type", None)
    if model_type not in ONNX_INT8_MODEL_TYPES:
        raise ValueError(
            f"onnx-int8 covers {', '.join(ONNX_INT8_MODEL_TYPES)}, whose backbone hands on its last hidden state; "
            f"{model_type} does not: use --dtype int8 or bfloat16"
        )
    backbone = model.backbone
    example = (
        torch.full((2, 8), backbone.config.pad_token_id or 0, dtype=torch.long),
        torch.ones(2, 8, dtype=torch.long),
    )
    batch, tokens = torch.export.Dim("batch"), torch.export.Dim("tokens", max=backbone.config.max_position_embeddings)
    shapes = {name: {0: batch, 1: tokens} for name in _INPUTS}
    print("hf-kd: exporting the backbone to ONNX and quantising it to int8 (once per load)", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="hf-kd-onnx-") as work, _quiet():
        exported, quantised = Path(work) / "backbone.onnx", Path(work) / "backbone-int8.onnx"
        torch.onnx.export(
            _LastHiddenState(backbone).eval(), example, str(exported), input_names=list(_INPUTS),
            output_names=["last_hidden_state"], dynamic_shapes=shapes, dynamo=True, external_data=False,
            verbose=False,
        )  # fmt: skip
        quantize_dynamic(str(exported), str(quantised), per_channel=True, weight_type=QuantType.QInt8)
        model.backbone = OnnxInt8Backbone(quantised, backbone.config)


@contextlib.contextmanager
def _quiet():
    """The exporter's and the quantiser's progress lines, warnings and advice (torchvision operators it skips, axis
    names, pre-processing) say nothing about the result; they are silenced for the export alone."""
    loggers = [logging.getLogger(), logging.getLogger("torch.onnx")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
