"""BERT_CAT configuration."""

from __future__ import annotations

from .configuration_ranking import RankingConfig


class BertCatConfig(RankingConfig):
    r"""
    Configuration of [`BertCatModel`], the cross-encoder: `[CLS] query [SEP] passage [SEP]` through every layer,
    the CLS vector -> Linear(hidden, 1). The paper's teacher (BERT-Base) and strongest student (DistilBERT).

    Args:
        backbone_config (`PreTrainedConfig` or `dict`, *optional*):
            The encoder's configuration (any BERT-family model, ALBERT included). Defaults to DistilBERT.
        backbone_name_or_path (`str`, *optional*):
            The checkpoint whose weights initialised the backbone.
        max_query_length (`int`, *optional*, defaults to 30):
            Maximum query tokens (special tokens excluded).
        max_passage_length (`int`, *optional*, defaults to 200):
            Maximum passage tokens (special tokens excluded).
        classifier_dropout (`float`, *optional*, defaults to 0.0):
            Dropout on the CLS vector before the scoring layer, in [0, 1).

    Example:
    ```python
    >>> from transformers import BertConfig
    >>> from hf_kd import BertCatConfig, BertCatModel
    >>> config = BertCatConfig(backbone_config=BertConfig(hidden_size=32, num_hidden_layers=2,
    ...                        num_attention_heads=2, intermediate_size=64))
    >>> model = BertCatModel(config)
    ```"""

    model_type = "hfkd_bert_cat"
    architecture = "bert_cat"

    def __init__(self, classifier_dropout: float = 0.0, **kwargs):
        self.classifier_dropout = classifier_dropout
        kwargs.setdefault("num_labels", 1)  # one relevance logit, as `CrossEncoder` and teachers expect
        super().__init__(**kwargs)

    def validate_ranking_config(self) -> None:
        super().validate_ranking_config()
        if not 0.0 <= float(self.classifier_dropout) < 1.0:
            raise ValueError(f"classifier_dropout must be in [0, 1), got {self.classifier_dropout!r}")


__all__ = ["BertCatConfig"]
