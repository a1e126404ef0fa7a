"""PreTT configuration."""

from __future__ import annotations

from .configuration_ranking import RankingConfig, check_positive_int, num_layers_of

# Backbones whose transformer layers PreTT can call one by one.
PRETT_BACKBONE_TYPES = ("bert", "distilbert", "electra")
# Where passage positions start: after a fixed-size query slot (cacheable), or right after each query's own tokens
# (the paper's released PreTTR).
PASSAGE_POSITION_MODES = ("after_query_slot", "after_query")


class PreTTConfig(RankingConfig):
    r"""
    Configuration of [`PreTTModel`]: query and passage run separately through layers `0..split_layer-1`, are then
    concatenated and run jointly through the remaining layers; CLS -> Linear(hidden, 1, no bias).

    Passage positions continue after the query slot: passage token j gets position `max_query_length + 2 + j`
    (the query's `[CLS] q [SEP]` slot has a fixed size), so a passage's layer-k states do not depend on the query
    and can be cached. With `split_layer=0` the model is BERT_CAT on `[CLS] q [SEP] p [SEP]` with those positions.

    Args:
        backbone_config (`PreTrainedConfig` or `dict`, *optional*):
            The encoder's configuration; its layers must be addressable one by one (BERT, DistilBERT, MiniLM,
            ELECTRA; not ALBERT, whose layers are shared). Defaults to DistilBERT.
        backbone_name_or_path (`str`, *optional*):
            The checkpoint whose weights initialised the backbone.
        max_query_length (`int`, *optional*, defaults to 30):
            Maximum query tokens (special tokens excluded).
        max_passage_length (`int`, *optional*, defaults to 200):
            Maximum passage tokens (special tokens excluded).
        split_layer (`int`, *optional*, defaults to 3):
            k, the number of layers run separately (the paper: 3 of DistilBERT's 6). 0 <= k < number of layers.
        passage_positions (`str`, *optional*, defaults to `"after_query_slot"`):
            Where passage positions start. `"after_query_slot"`: passage token j gets position
            `max_query_length + 2 + j`, so a passage's layer-k states do not depend on the query and are cached.
            `"after_query"`: passage token j gets position `len([CLS] q [SEP]) + j`, right after the query's own
            tokens, as in the paper's released PreTTR (`hf-kd import`); the layers below k then depend on the query's
            length, so they run at scoring time and the cached passage representation is its token ids.
        mean_cosine_score (`bool`, *optional*, defaults to `False`):
            Adds to the CLS head's score the cosine of the mean query-token and the mean passage-token vectors after
            the last layer, and starts the head at zero: untrained, the model ranks as its sentence-transformers
            backbone (trained with mean pooling and cosine) lets it, instead of at chance; training adds what the
            head learns. `False` is the paper's CLS -> Linear.

    Example:
    ```python
    >>> from transformers import BertConfig
    >>> from hf_kd import PreTTConfig, PreTTModel
    >>> model = PreTTModel(PreTTConfig(backbone_config=BertConfig(hidden_size=32, num_hidden_layers=2,
    ...                                num_attention_heads=2, intermediate_size=64), split_layer=1))
    ```"""

    model_type = "hfkd_prett"
    architecture = "prett"

    def __init__(
        self,
        split_layer: int = 3,
        passage_positions: str = "after_query_slot",
        mean_cosine_score: bool = False,
        **kwargs,
    ):
        self.split_layer = split_layer
        self.passage_positions = passage_positions
        self.mean_cosine_score = mean_cosine_score
        super().__init__(**kwargs)

    @property
    def passage_position_offset(self) -> int:
        return self.max_query_length + 2

    def validate_ranking_config(self) -> None:
        super().validate_ranking_config()
        model_type = self.backbone_config.model_type
        if model_type not in PRETT_BACKBONE_TYPES:
            raise ValueError(
                f"backbone_config: PreTT needs a backbone whose layers can be addressed one by one "
                f"({', '.join(PRETT_BACKBONE_TYPES)}; e.g. BERT, DistilBERT, MiniLM), got {model_type!r}"
            )
        check_positive_int("split_layer", self.split_layer, minimum=0)
        if self.passage_positions not in PASSAGE_POSITION_MODES:
            raise ValueError(
                f"passage_positions must be one of {', '.join(PASSAGE_POSITION_MODES)}, got {self.passage_positions!r}"
            )
        num_layers = num_layers_of(self.backbone_config)
        if self.split_layer >= num_layers:
            raise ValueError(
                f"split_layer must be smaller than the backbone's {num_layers} layers, got {self.split_layer}"
            )


__all__ = ["PreTTConfig"]
