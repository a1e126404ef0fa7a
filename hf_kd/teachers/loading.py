"""Teachers: any ranker behind one small interface, `Teacher.score(queries, passages)`.

Five kinds of teacher load through [`load_teacher`], by path, Hub id or `run:PATH`:

| kind | recognised by | scored with |
|---|---|---|
| `hf_kd` | an hf-kd `model_type` (any of the five architectures) | `model.prepare_inputs` + `forward` |
| `cross_encoder` | `config_sentence_transformers.json`, a CrossEncoder | `CrossEncoder.predict`, raw logits |
| `sentence_transformer` | `config_sentence_transformers.json`, a bi-encoder | the model's own similarity function |
| `sequence_classification` | a `*ForSequenceClassification` with one label | tokenizer pair encoding + `logits` |
| `run` | `run:PATH`, a TREC run file with scores | the run's score of (qid, pid) |

Scores are always the model's raw scores: logits without sigmoid for cross-encoders (whatever activation a
CrossEncoder folder declares), the model's own similarity function for bi-encoders (cosine for
all-mpnet-base-v2), the run's numbers for run files. A run scores only the pairs it holds; the others get NaN, and
[`hf_kd.teachers.score_triples`] drops (and counts) the triples they belong to instead of inventing a score.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import EntryNotFoundError
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer

from ..models import MODEL_CLASSES
from .base import Teacher
from .bm25_teacher import BM25_PREFIX, BM25Teacher
from .first_token import FirstTokenScoring
from .run_teacher import RUN_PREFIX, _load_run_teacher

__all__ = [
    "CrossEncoderTeacher",
    "HfKdTeacher",
    "SentenceTransformerTeacher",
    "SequenceClassificationTeacher",
    "load_teacher",
]

# Any one of these makes a tokenizer loadable; without them `AutoTokenizer` silently builds an empty vocabulary.
TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "vocab.json",
    "tokenizer.model",
)
_HF_KD_MODEL_TYPES = frozenset(model.config_class.model_type for model in MODEL_CLASSES.values())
_COMMIT_IN_PATH = re.compile(r"/snapshots/([0-9a-f]{40})(?:/|$)")


class HfKdTeacher(Teacher):
    """An hf-kd ranking model (BERT_CAT, the paper's teacher; the other zoo architectures score the same way),
    with its own tokenisation conventions and query / passage length limits."""

    kind = "hf_kd"

    def __init__(self, model, tokenizer, name_or_path: str, revision: str | None = None, name: str | None = None):
        config = model.config
        super().__init__(
            name_or_path,
            tokenizer,
            max_length=config.max_query_length + config.max_passage_length + 3,
            device=model.device,
            revision=revision,
            name=name,
        )
        self.model = model.eval()

    @torch.inference_mode()
    def score(self, queries: Sequence[str], passages: Sequence[str]) -> torch.Tensor:
        inputs = self.model.prepare_inputs(list(queries), list(passages), self.tokenizer)
        inputs = {key: value.to(self.device) for key, value in inputs.items()}
        return self._check_scores(self.model(**inputs).scores, len(queries))

    def pair_lengths(self, queries: Sequence[str], passages: Sequence[str]) -> np.ndarray:
        return np.asarray(self.model.pair_lengths(queries, passages, self.tokenizer), dtype=np.int64)

    def _export_onnx_int8(self) -> None:
        from ..evaluation.onnx_int8 import quantize_backbone_onnx_int8

        quantize_backbone_onnx_int8(self.model)


class SequenceClassificationTeacher(Teacher):
    """Any `AutoModelForSequenceClassification` cross-encoder with a single output logit; the pair is encoded
    by its tokenizer (`[CLS] q [SEP] p [SEP]` for BERT) and truncated `longest_first` to `max_length`."""

    kind = "sequence_classification"

    def __init__(
        self,
        model,
        tokenizer,
        name_or_path: str,
        max_length: int,
        revision: str | None = None,
        name: str | None = None,
    ):
        super().__init__(name_or_path, tokenizer, max_length, model.device, revision=revision, name=name)
        self.model = model.eval()
        self.first_token_scoring = FirstTokenScoring(self.model)

    @torch.inference_mode()
    def score(self, queries: Sequence[str], passages: Sequence[str]) -> torch.Tensor:
        features = self.tokenizer(
            list(queries),
            list(passages),
            padding=True,
            truncation="longest_first",
            max_length=self.max_length,
            return_tensors="pt",
        ).to(self.device)
        logits = self.first_token_scoring(lambda: self.model(**features).logits)
        return self._check_scores(logits, len(queries))

    def _export_onnx_int8(self) -> None:
        from ..evaluation.onnx_int8 import quantize_encoder_onnx_int8

        quantize_encoder_onnx_int8(self.model)
        self.first_token_scoring = FirstTokenScoring(self.model)  # ONNX Runtime runs every layer whole


class _SentenceTransformersTeacher(Teacher):
    """A teacher around a loaded sentence-transformers model (`CrossEncoder` or `SentenceTransformer`), whose
    tokenizer, length limit and device are the model's."""

    def __init__(self, model, name_or_path: str, revision: str | None = None, name: str | None = None):
        super().__init__(
            name_or_path,
            model.tokenizer,
            max_length=model.max_seq_length,
            device=model.device,
            revision=revision,
            name=name,
        )
        self.model = model


class CrossEncoderTeacher(_SentenceTransformersTeacher):
    """A sentence-transformers `CrossEncoder` folder, scored through `CrossEncoder.predict` without its
    activation function (raw logits)."""

    kind = "cross_encoder"

    def __init__(self, model, name_or_path: str, revision: str | None = None, name: str | None = None):
        super().__init__(model, name_or_path, revision=revision, name=name)
        self.first_token_scoring = FirstTokenScoring(model.model)

    def score(self, queries: Sequence[str], passages: Sequence[str]) -> torch.Tensor:
        scores = self.first_token_scoring(
            lambda: self.model.predict(
                list(zip(queries, passages)),
                batch_size=len(queries),
                activation_fn=torch.nn.Identity(),
                convert_to_tensor=True,
                show_progress_bar=False,
            )
        )
        return self._check_scores(scores, len(queries))

    def _export_onnx_int8(self) -> None:
        from ..evaluation.onnx_int8 import quantize_encoder_onnx_int8

        quantize_encoder_onnx_int8(self.model.model)
        self.first_token_scoring = FirstTokenScoring(self.model.model)  # ONNX Runtime runs every layer whole


class SentenceTransformerTeacher(_SentenceTransformersTeacher):
    """A sentence-transformers bi-encoder (any `SentenceTransformer` folder or Hub id, any backbone it supports),
    scored as the model scores: `encode_query` and `encode_document`, then the model's own similarity function
    (`model.similarity_fn_name`: cosine for all-mpnet-base-v2, dot product for dot-product models).

    Each batch encodes its distinct queries and passages once. Texts are truncated at `max_length` tokens each
    (the model's `max_seq_length` unless given).
    """

    kind = "sentence_transformer"

    @torch.inference_mode()
    def score(self, queries: Sequence[str], passages: Sequence[str]) -> torch.Tensor:
        distinct_queries, query_index = np.unique(np.asarray(queries, dtype=object), return_inverse=True)
        distinct_passages, passage_index = np.unique(np.asarray(passages, dtype=object), return_inverse=True)
        encode = {"convert_to_tensor": True, "show_progress_bar": False, "batch_size": len(distinct_passages)}
        query_vectors = self.model.encode_query(distinct_queries.tolist(), **encode)
        passage_vectors = self.model.encode_document(distinct_passages.tolist(), **encode)
        scores = self.model.similarity_pairwise(
            query_vectors[torch.as_tensor(query_index.reshape(-1))],
            passage_vectors[torch.as_tensor(passage_index.reshape(-1))],
        )
        return self._check_scores(scores, len(queries))

    def _pair_length(self, query_tokens: np.ndarray, passage_tokens: np.ndarray) -> np.ndarray:
        return np.minimum(passage_tokens, self.max_length)  # queries and passages are encoded apart

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "similarity": self.model.similarity_fn_name}

    def _export_onnx_int8(self) -> None:
        from ..evaluation.onnx_int8 import export_onnx_int8

        transformer = self.model[0]  # the module that runs the transformers encoder; pooling follows in PyTorch
        encoder = getattr(transformer, "model", None)
        if not isinstance(encoder, torch.nn.Module) or not hasattr(encoder, "embeddings"):
            raise ValueError(
                f"teacher {self.name_or_path!r}: onnx-int8 needs a transformers encoder as its first module"
            )
        transformer.model = export_onnx_int8(encoder)


def _has_file(name_or_path: str, filename: str, revision: str | None) -> bool:
    if Path(name_or_path).is_dir():
        return (Path(name_or_path) / filename).is_file()
    try:
        hf_hub_download(name_or_path, filename, revision=revision)
    except EntryNotFoundError:  # missing on the Hub, or offline and not in the cache
        return False
    return True


def _load_tokenizer(name_or_path: str, revision: str | None):
    if not any(_has_file(name_or_path, filename, revision) for filename in TOKENIZER_FILES):
        raise ValueError(
            f"teacher {name_or_path!r} has no tokenizer: none of {', '.join(TOKENIZER_FILES)} was found. Save the "
            "tokenizer the model was trained with beside it (`tokenizer.save_pretrained(folder)`)"
        )
    return AutoTokenizer.from_pretrained(name_or_path, revision=revision)


def _revision_of(config, name_or_path: str) -> str | None:
    commit = getattr(config, "_commit_hash", None)
    if commit:
        return commit
    match = _COMMIT_IN_PATH.search(Path(name_or_path).resolve().as_posix())
    return match.group(1) if match else None


def _cross_encoder_config(name_or_path: str, revision: str | None) -> dict | None:
    """The `config_sentence_transformers.json` of a sentence-transformers folder, or None."""
    if not _has_file(name_or_path, "config_sentence_transformers.json", revision):
        return None
    if Path(name_or_path).is_dir():
        path = Path(name_or_path) / "config_sentence_transformers.json"
    else:
        path = Path(hf_hub_download(name_or_path, "config_sentence_transformers.json", revision=revision))
    return json.loads(path.read_text(encoding="utf-8"))


def _default_max_length(tokenizer, config) -> int:
    limits = [getattr(config, "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None)]
    # tokenizers without a declared limit report a huge sentinel value
    limits = [limit for limit in limits if isinstance(limit, int) and 0 < limit < 100_000]
    return min(limits) if limits else 512


def load_teacher(
    name_or_path: str | os.PathLike,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    *,
    max_length: int | None = None,
    revision: str | None = None,
    name: str | None = None,
    queries: Mapping[str, str] | str | os.PathLike | None = None,
    collection: Mapping[str, str] | str | os.PathLike | None = None,
) -> Teacher:
    """Loads any ranker as a [`Teacher`].

    Args:
        name_or_path (`str` or `os.PathLike`): a local folder or a Hub id: an hf-kd checkpoint (any of the five
            architectures), a sentence-transformers `CrossEncoder` or `SentenceTransformer` folder, or any
            `AutoModelForSequenceClassification` checkpoint with one output logit (it must hold its tokenizer);
            or `run:PATH`, a TREC run file with scores (needs `queries` and `collection`); or `bm25:CORPUS`, BM25
            over a corpus (a BEIR folder or a collection TSV) for any pair of its passages.
        device (`str` or `torch.device`, *optional*): where to run; defaults to CUDA when available, else CPU.
        dtype (`torch.dtype` or `str`, *optional*): the dtype to load the weights in (defaults to the checkpoint's), or
            one of `hf_kd.evaluation.INFERENCE_DTYPES`: `"int8"` and `"onnx-int8"` load float32 weights and run the
            model in int8 ([`Teacher.quantize`]). BM25 and run teachers have no weights and ignore it.
        max_length (`int`, *optional*): the most tokens of one pair input for `AutoModelForSequenceClassification`
            and `CrossEncoder` teachers, of one text for `SentenceTransformer` teachers; defaults to the
            checkpoint's limit. hf-kd models use their config's `max_query_length` and `max_passage_length`.
        revision (`str`, *optional*): the Hub revision (branch, tag or commit) to load.
        name (`str`, *optional*): the teacher's short name in score columns; defaults to the last path component.
        queries, collection (`Mapping[str, str]` or a `id<TAB>text` TSV path, *optional*): the texts of the ids
            of a `run:` teacher.

    Returns:
        [`Teacher`]: an [`HfKdTeacher`], [`CrossEncoderTeacher`], [`SentenceTransformerTeacher`],
        [`SequenceClassificationTeacher`], [`RunTeacher`] or [`BM25Teacher`].

    Raises:
        ValueError: when the checkpoint has no tokenizer, does not output exactly one logit per pair, or has no
            scoring head; the message names the checkpoint.
    """
    if str(name_or_path).startswith(RUN_PREFIX):
        return _load_run_teacher(str(name_or_path)[len(RUN_PREFIX) :], queries, collection, name)
    if str(name_or_path).startswith(BM25_PREFIX):
        return BM25Teacher.from_corpus(str(name_or_path)[len(BM25_PREFIX) :], name=name)
    name_or_path = str(name_or_path)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    precision = dtype if isinstance(dtype, str) and dtype.endswith("int8") else None
    teacher = _load_neural_teacher(name_or_path, device, _weights_dtype(dtype), max_length, revision, name)
    if precision is not None:
        teacher.quantize(precision)
    return teacher


def _weights_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    from ..evaluation.loading import INFERENCE_DTYPES

    if dtype not in INFERENCE_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(INFERENCE_DTYPES)}, got {dtype!r}")
    return torch.float32 if dtype.endswith("int8") else getattr(torch, dtype)


def _load_neural_teacher(
    name_or_path: str,
    device: torch.device,
    dtype: torch.dtype | None,
    max_length: int | None,
    revision: str | None,
    name: str | None,
) -> Teacher:
    config = AutoConfig.from_pretrained(name_or_path, revision=revision)
    tokenizer = _load_tokenizer(name_or_path, revision)
    commit = _revision_of(config, name_or_path)
    dtype_kwargs = {} if dtype is None else {"dtype": dtype}

    if config.model_type in _HF_KD_MODEL_TYPES:
        model = AutoModel.from_pretrained(name_or_path, revision=revision, **dtype_kwargs).to(device)
        return HfKdTeacher(model, tokenizer, name_or_path, revision=commit, name=name)

    cross_encoder_config = _cross_encoder_config(name_or_path, revision)
    if cross_encoder_config is not None:
        return _load_sentence_transformers_teacher(
            name_or_path, cross_encoder_config, device, dtype_kwargs, max_length, revision, commit, name
        )
    return _load_sequence_classification(
        name_or_path, config, tokenizer, device, dtype_kwargs, max_length, revision, commit, name
    )


def _load_sentence_transformers_teacher(
    name_or_path: str,
    cross_encoder_config: dict,
    device: torch.device,
    dtype_kwargs: dict,
    max_length: int | None,
    revision: str | None,
    commit: str | None,
    name: str | None,
) -> CrossEncoderTeacher | SentenceTransformerTeacher:
    """A `CrossEncoder` or a `SentenceTransformer` bi-encoder, as its `config_sentence_transformers.json` says."""
    model_type = cross_encoder_config.get("model_type")
    if model_type is None:  # folders written before sentence-transformers 4 do not say; a CrossEncoder has a head
        model_type = "SentenceTransformer" if _has_file(name_or_path, "modules.json", revision) else "CrossEncoder"
    if model_type == "SentenceTransformer":
        return _load_sentence_transformer(name_or_path, device, dtype_kwargs, max_length, revision, commit, name)
    if model_type != "CrossEncoder":
        raise ValueError(
            f"teacher {name_or_path!r} is a sentence-transformers {model_type}; a teacher is a CrossEncoder or "
            "a SentenceTransformer bi-encoder"
        )
    return _load_cross_encoder(name_or_path, device, dtype_kwargs, max_length, revision, commit, name)


def _load_sequence_classification(
    name_or_path: str,
    config,
    tokenizer,
    device: torch.device,
    dtype_kwargs: dict,
    max_length: int | None,
    revision: str | None,
    commit: str | None,
    name: str | None,
) -> SequenceClassificationTeacher:
    """An `AutoModelForSequenceClassification` checkpoint with one output logit and a trained head."""
    architectures = getattr(config, "architectures", None) or []
    if architectures and not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise ValueError(
            f"teacher {name_or_path!r} is a {', '.join(architectures)} without a sequence-classification head; "
            "expected an hf-kd BERT_CAT, a CrossEncoder, or an AutoModelForSequenceClassification checkpoint "
            "with one output logit"
        )
    _check_single_logit(name_or_path, config.num_labels)
    model, loading_info = AutoModelForSequenceClassification.from_pretrained(
        name_or_path, revision=revision, output_loading_info=True, **dtype_kwargs
    )
    if loading_info["missing_keys"]:
        missing = sorted(loading_info["missing_keys"])
        raise ValueError(
            f"teacher {name_or_path!r} lacks trained weights for {missing[:5]}: its scores would come from a "
            "randomly initialised head"
        )
    return SequenceClassificationTeacher(
        model.to(device),
        tokenizer,
        name_or_path,
        max_length=max_length or _default_max_length(tokenizer, config),
        revision=commit,
        name=name,
    )


def _check_single_logit(name_or_path: str, num_labels: int) -> None:
    if num_labels != 1:
        raise ValueError(
            f"teacher {name_or_path!r} outputs {num_labels} logits per pair (num_labels={num_labels}); a teacher "
            "needs a single relevance logit (num_labels=1)"
        )


def _load_sentence_transformer(
    name_or_path: str,
    device: torch.device,
    dtype_kwargs: dict,
    max_length: int | None,
    revision: str | None,
    commit: str | None,
    name: str | None,
) -> SentenceTransformerTeacher:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(
        name_or_path, device=str(device), revision=revision, model_kwargs=dtype_kwargs or None
    ).eval()
    if max_length is not None:
        model.max_seq_length = max_length
    return SentenceTransformerTeacher(model, name_or_path, revision=commit, name=name)


def _load_cross_encoder(
    name_or_path: str,
    device: torch.device,
    dtype_kwargs: dict,
    max_length: int | None,
    revision: str | None,
    commit: str | None,
    name: str | None,
) -> CrossEncoderTeacher:
    from sentence_transformers import CrossEncoder

    cross_encoder = CrossEncoder(
        name_or_path,
        device=str(device),
        revision=revision,
        max_length=max_length,
        model_kwargs=dtype_kwargs or None,
        activation_fn=torch.nn.Identity(),
    )
    _check_single_logit(name_or_path, cross_encoder.num_labels)
    return CrossEncoderTeacher(cross_encoder, name_or_path, revision=commit, name=name)
