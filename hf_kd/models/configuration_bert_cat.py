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
        mean_cosine_score (`bool`, *optional*, defaults to `False`):
            Adds to the CLS head's score the cosine of the mean query-segment and the mean passage-segment token
            vectors after the last layer, and starts the head at zero: untrained, the model ranks as its
            sentence-transformers backbone (trained with mean pooling and cosine) lets it, instead of at chance;
            training adds what the head learns. `False` is the paper's CLS -> Linear.
            Needs a backbone with token types (BERT, MiniLM, ELECTRA, ALBERT; not DistilBERT), which mark the segments.

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

    def __init__(self, classifier_dropout: float = 0.0, mean_cosine_score: bool = False, **kwargs):
        self.classifier_dropout = classifier_dropout
        self.mean_cosine_score = mean_cosine_score
        kwargs.setdefault("num_labels", 1)  # one relevance logit, as `CrossEncoder` and teachers expect
        super().__init__(**kwargs)

    def validate_ranking_config(self) -> None:
        super().validate_ranking_config()
        if not 0.0 <= float(self.classifier_dropout) < 1.0:
            raise ValueError(f"classifier_dropout must be in [0, 1), got {self.classifier_dropout!r}")
        if self.mean_cosine_score and self.backbone_config.model_type == "distilbert":
            raise ValueError(
                "mean_cosine_score needs a backbone with token types to find the query and passage segments; "
                "DistilBERT has none"
            )


__all__ = ["BertCatConfig"]
