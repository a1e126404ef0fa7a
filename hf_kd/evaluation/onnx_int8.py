"""int8 inference through ONNX Runtime (the `onnx` extra): a model's transformer encoder is exported to ONNX
(`torch.onnx.export`, dynamo), its linear weights quantised to int8 per output channel by ONNX Runtime's dynamic
quantisation (activations to uint8 as they come), and ONNX Runtime runs it in place of the encoder. Tokenisation,
pooling, heads, projections and scores stay in PyTorch and in float32.

It covers the zoo architectures whose backbone is called once per text or pair with its ids, mask and token types
(BERT_DOT, ColBERT, BERT_CAT: [`quantize_backbone_onnx_int8`]) and any transformers model with a head on an encoder,
such as a `*ForSequenceClassification` cross-encoder teacher or a sentence-transformers model's transformer
([`quantize_encoder_onnx_int8`]).

This is the int8 route for processors without int8 dot-product units (VNNI, AMX): ONNX Runtime's own kernels run
int8 products there faster than float32, where torchao's int8 linear layers (`--dtype int8`) run slower.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import sys
import tempfile
import warnings
from pathlib import Path

import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling

from ..models.first_token import can_run_last_layer_for_first_token, last_layer_for_first_token

__all__ = [
    "ONNX_INT8_MODEL_TYPES",
    "OnnxInt8Backbone",
    "export_onnx_int8",
    "head_reads_the_first_token_only",
    "quantize_backbone_onnx_int8",
    "quantize_encoder_onnx_int8",
]

ONNX_INT8_MODEL_TYPES = ("hfkd_bert_dot", "hfkd_colbert", "hfkd_bert_cat")
"""Model types whose backbone is called once per text or pair with its ids, mask and token types, and hands on its
last hidden state."""


def _onnx_runtime():
    """ONNX Runtime (and the dynamo exporter's onnxscript), or one line naming the extra that installs them."""
    try:
        import onnxruntime
        import onnxscript  # noqa: F401
    except ImportError:
        raise ImportError("onnx-int8 inference needs ONNX Runtime: pip install 'hf-kd[onnx]'") from None
    return onnxruntime


def _input_names(encoder: torch.nn.Module) -> tuple[str, ...]:
    """The inputs the export takes: ids and mask, and token types where the encoder has more than one."""
    takes_token_types = "token_type_ids" in inspect.signature(encoder.forward).parameters
    if takes_token_types and getattr(encoder.config, "type_vocab_size", 0) > 1:
        return ("input_ids", "attention_mask", "token_type_ids")
    return ("input_ids", "attention_mask")


def _output_names(encoder: torch.nn.Module) -> tuple[str, ...]:
    return (
        ("last_hidden_state", "pooler_output")
        if getattr(encoder, "pooler", None) is not None
        else ("last_hidden_state",)
    )


class _Exported(torch.nn.Module):
    """The encoder as the exporter sees it: its named inputs in, its hidden states (and pooled vector) out."""

    def __init__(self, encoder: torch.nn.Module, input_names: tuple[str, ...], output_names: tuple[str, ...]):
        super().__init__()
        self.encoder, self.input_names, self.output_names = encoder, input_names, output_names

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.encoder(**dict(zip(self.input_names, inputs)))
        return tuple(outputs[name] for name in self.output_names)


class OnnxInt8Backbone(torch.nn.Module):
    """Stands in for a transformer encoder: the same call (`input_ids`, `attention_mask`, `token_type_ids` ->
    `last_hidden_state`, and `pooler_output` where the encoder has a pooler), run by an ONNX Runtime session of its
    int8 export, on the CPU, with as many threads as PyTorch uses. Exported with `first_token_only`, its
    `last_hidden_state` is (n, 1, H)."""

    def __init__(
        self,
        model_path: str | Path,
        config,
        input_names: tuple[str, ...],
        output_names: tuple[str, ...],
        first_token_only: bool = False,
    ):
        super().__init__()
        self.first_token_only = first_token_only  # the last hidden state holds the first position alone
        onnxruntime = _onnx_runtime()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        self.session = onnxruntime.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        self.input_names, self.output_names = input_names, output_names
        # empty, so that the model still reports where it runs and in what precision (`model.device`, `model.dtype`)
        self.placement = torch.nn.Parameter(torch.empty(0), requires_grad=False)
        self.config = config  # what the model reads of its encoder (hidden size, embeddings' vocabulary)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **_,
    ) -> BaseModelOutputWithPooling:
        if position_ids is not None or inputs_embeds is not None:
            raise ValueError("an onnx-int8 encoder takes ids, mask and token types; not position_ids or inputs_embeds")
        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        if given["attention_mask"] is None:
            given["attention_mask"] = torch.ones_like(input_ids)
        if given["token_type_ids"] is None:
            given["token_type_ids"] = torch.zeros_like(input_ids)
        feeds = {name: given[name].detach().to("cpu", torch.int64).numpy() for name in self.input_names}
        outputs = self.session.run(list(self.output_names), feeds)
        return BaseModelOutputWithPooling(
            **{name: torch.from_numpy(out) for name, out in zip(self.output_names, outputs)}
        )


def _example_inputs(encoder: torch.nn.Module, input_names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Two seeded random texts of 12 tokens, the second padded after 8, token types 1 on their second half."""
    ids = torch.randint(0, encoder.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, 8:] = 0
    types = torch.zeros(2, 12, dtype=torch.long)
    types[:, 6:] = 1
    inputs = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    return {name: inputs[name] for name in input_names}


def head_reads_the_first_token_only(model: torch.nn.Module, encoder: torch.nn.Module) -> bool:
    """Whether `model`'s output (a transformers model with a head on `encoder`) stays the same when the encoder's last
    layer computes position 0 alone (`hf_kd.models.first_token`): true of heads that read the first token (BERT's
    pooler, the RoBERTa and ELECTRA classification heads), false of heads that pool every token."""
    if not can_run_last_layer_for_first_token(encoder):
        return False
    inputs = _example_inputs(encoder, _input_names(encoder))
    with torch.inference_mode():
        whole = model(**inputs)[0]
        with last_layer_for_first_token(encoder):
            first = model(**inputs)[0]
    return whole.shape == first.shape and torch.allclose(whole, first, rtol=1e-4, atol=1e-5)


def export_onnx_int8(encoder: torch.nn.Module, first_token_only: bool = False) -> OnnxInt8Backbone:
    """The int8 ONNX Runtime stand-in of `encoder` (a float32 transformers encoder on the CPU, e.g. `BertModel`). The
    export takes a minute for a six-layer MiniLM on two cores; the files live only until the session has read them.

    With `first_token_only` (for a head that reads the first token alone), the export's last layer computes position
    0 only (`hf_kd.models.first_token`), so its `last_hidden_state` is (n, 1, H); where that does not apply to the
    encoder's layers, it runs whole."""
    _onnx_runtime()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    input_names, output_names = _input_names(encoder), _output_names(encoder)
    example = tuple(_example_inputs(encoder, input_names).values())
    batch, tokens = torch.export.Dim("batch"), torch.export.Dim("tokens", max=encoder.config.max_position_embeddings)
    shapes = ({0: batch, 1: tokens},) * len(input_names)
    first_token = last_layer_for_first_token(encoder) if first_token_only else contextlib.nullcontext()
    print("hf-kd: exporting the encoder to ONNX and quantising it to int8 (once per load)", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="hf-kd-onnx-") as work, _quiet(), first_token as applied:
        exported, quantised = Path(work) / "encoder.onnx", Path(work) / "encoder-int8.onnx"
        torch.onnx.export(
            _Exported(encoder, input_names, output_names).eval(), example, str(exported),
            input_names=list(input_names), output_names=list(output_names), dynamic_shapes=(shapes,),
            dynamo=True, external_data=False, verbose=False,
        )  # fmt: skip
        quantize_dynamic(str(exported), str(quantised), per_channel=True, weight_type=QuantType.QInt8)
        return OnnxInt8Backbone(quantised, encoder.config, input_names, output_names, first_token_only=bool(applied))


def quantize_backbone_onnx_int8(model) -> None:
    """Replaces `model.backbone` (a float32 zoo model of one of [`ONNX_INT8_MODEL_TYPES`], on the CPU) by an
    [`OnnxInt8Backbone`] of its int8 export."""
    _onnx_runtime()
    model_type = getattr(model.config, "model_type", None)
    if model_type not in ONNX_INT8_MODEL_TYPES:
        raise ValueError(
            f"onnx-int8 covers {', '.join(ONNX_INT8_MODEL_TYPES)}, whose backbone hands on its last hidden state; "
            f"{model_type} does not: use --dtype int8 or bfloat16"
        )
    # BERT_CAT's head reads the first token alone, unless it adds the segments' mean cosine
    first_token_only = model_type == "hfkd_bert_cat" and not getattr(model.config, "mean_cosine_score", False)
    model.backbone = export_onnx_int8(model.backbone, first_token_only)


def quantize_encoder_onnx_int8(model) -> None:
    """Replaces the encoder of a transformers model with a head (`model.base_model`, e.g. the `bert` of a
    `BertForSequenceClassification`; float32, on the CPU) by an [`OnnxInt8Backbone`] of its int8 export; the head
    stays in PyTorch."""
    prefix = getattr(model, "base_model_prefix", "")
    encoder = getattr(model, prefix, None) if prefix else None
    if not isinstance(encoder, torch.nn.Module) or not hasattr(encoder, "embeddings"):
        raise ValueError(
            f"onnx-int8 needs a transformers model with a head on an encoder; {type(model).__name__} has none"
        )
    setattr(model, prefix, export_onnx_int8(encoder, head_reads_the_first_token_only(model, encoder)))


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
