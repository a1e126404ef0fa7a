"""BERT_DOT configuration."""

from __future__ import annotations

from .configuration_ranking import RankingConfig, check_positive_int


class BertDotConfig(RankingConfig):
    r"""
    Configuration of [`BertDotModel`], the bi-encoder: one shared encoder for queries and passages, the CLS vector of
    each (optionally compressed by a linear layer), score = dot product without normalisation.

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
            Output size of a Linear(hidden, compression_dim) applied to the CLS vector; None (the paper's setting)
            keeps the CLS vector as is.

    Example:
    ```python
    >>> from transformers import BertConfig
    >>> from hf_kd import BertDotConfig, BertDotModel
    >>> model = BertDotModel(BertDotConfig(backbone_config=BertConfig(hidden_size=32, num_hidden_layers=2,
    ...                                    num_attention_heads=2, intermediate_size=64)))
    ```"""

    model_type = "hfkd_bert_dot"
    architecture = "bert_dot"

    def __init__(self, compression_dim: int | None = None, **kwargs):
        self.compression_dim = compression_dim
        super().__init__(**kwargs)

    @property
    def embedding_dim(self) -> int:
        return self.compression_dim or self.hidden_size

    def validate_ranking_config(self) -> None:
        super().validate_ranking_config()
        if self.compression_dim is not None:
            check_positive_int("compression_dim", self.compression_dim)


__all__ = ["BertDotConfig"]
