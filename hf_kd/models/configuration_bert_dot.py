"""BERT_DOT configuration."""

from __future__ import annotations

from .configuration_ranking import RankingConfig, check_positive_int

POOLING_MODES = ("cls", "mean")


class BertDotConfig(RankingConfig):
    r"""
    Configuration of [`BertDotModel`], the bi-encoder: one shared encoder for queries and passages, the CLS vector
    (or mean) of each (optionally compressed by a linear layer), score = dot product without normalisation.

    Args:
        backbone_config (`PreTrainedConfig` or `dict`, *optional*):
            The encoder's configuration (any BERT-family model, ALBERT included). Defaults to DistilBERT.
        backbone_name_or_path (`str`, *optional*):
            The checkpoint whose weights initialised the backbone.
        max_query_length (`int`, *optional*, defaults to 30):
            Maximum query tokens (special tokens excluded).
        max_passage_length (`int`, *optional*, defaults to 200):
            Maximum passage tokens (special tokens excluded).
        compression_dim (`int`, *optional*):
            Output size of a Linear(hidden, compression_dim) applied to the pooled vector; None (the paper's
            setting) keeps it as is.
        pooling (`str`, *optional*, defaults to `"cls"`):
            How token vectors become one vector: `"cls"` (the paper) or `"mean"` over real tokens (the pooling of
            sentence-embedding backbones such as all-MiniLM-L6-v2, which start better with it).
        normalize_embeddings (`bool`, *optional*, defaults to `False`):
            L2-normalise the vectors, so the dot product is the cosine similarity. The paper scores raw dot
            products; cosine is how sentence-embedding models such as all-MiniLM-L6-v2 are used zero-shot.

    Example:
    ```python
    >>> from transformers import BertConfig
    >>> from hf_kd import BertDotConfig, BertDotModel
    >>> model = BertDotModel(BertDotConfig(backbone_config=BertConfig(hidden_size=32, num_hidden_layers=2,
    ...                                    num_attention_heads=2, intermediate_size=64)))
    ```"""

    model_type = "hfkd_bert_dot"
    architecture = "bert_dot"

    def __init__(
        self, compression_dim: int | None = None, pooling: str = "cls", normalize_embeddings: bool = False, **kwargs
    ):
        self.compression_dim = compression_dim
        self.pooling = pooling
        self.normalize_embeddings = normalize_embeddings
        super().__init__(**kwargs)

    @property
    def embedding_dim(self) -> int:
        return self.compression_dim or self.hidden_size

    def validate_ranking_config(self) -> None:
        super().validate_ranking_config()
        if self.compression_dim is not None:
            check_positive_int("compression_dim", self.compression_dim)
        if self.pooling not in POOLING_MODES:
            raise ValueError(f"pooling must be one of {', '.join(POOLING_MODES)}, got {self.pooling!r}")


__all__ = ["BertDotConfig"]
