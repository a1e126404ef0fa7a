"""Configuration shared by every hf-kd ranking architecture."""

from __future__ import annotations

from transformers import AutoConfig, DistilBertConfig, PreTrainedConfig

# Backbone families whose layers the models know how to address (used by PreTT and in error messages).
SUPPORTED_BACKBONE_TYPES = ("bert", "distilbert", "electra", "albert")


def build_backbone_config(backbone_config: PreTrainedConfig | dict | None) -> PreTrainedConfig:
    """Turns the nested backbone configuration (object, dict from `config.json`, or None) into a config object.

    None gives a DistilBERT configuration, the paper's student backbone.
    """
    if backbone_config is None:
        return DistilBertConfig()
    if isinstance(backbone_config, PreTrainedConfig):
        return backbone_config
    if isinstance(backbone_config, dict):
        kwargs = dict(backbone_config)
        model_type = kwargs.pop("model_type", None)
        if model_type is None:
            raise ValueError("backbone_config: a dict needs a `model_type` key (e.g. 'bert' or 'distilbert')")
        if model_type not in SUPPORTED_BACKBONE_TYPES:
            raise ValueError(
                f"backbone_config: unsupported backbone type {model_type!r}; "
                f"hf-kd models are built on BERT-family encoders: {', '.join(SUPPORTED_BACKBONE_TYPES)}"
            )
        return AutoConfig.for_model(model_type, **kwargs)
    raise TypeError(
        f"backbone_config must be a transformers config, a dict or None, got {type(backbone_config).__name__}"
    )


def hidden_size_of(backbone_config: PreTrainedConfig) -> int:
    """Width of the backbone's output vectors (`dim` for DistilBERT, `hidden_size` elsewhere)."""
    for name in ("hidden_size", "dim"):
        value = getattr(backbone_config, name, None)
        if isinstance(value, int):
            return value
    raise ValueError(f"cannot find the hidden size of backbone config {type(backbone_config).__name__}")


def embedding_size_of(backbone_config: PreTrainedConfig) -> int:
    """Width of the backbone's word embeddings (ALBERT and ELECTRA factorise them)."""
    value = getattr(backbone_config, "embedding_size", None)
    return value if isinstance(value, int) else hidden_size_of(backbone_config)


def num_layers_of(backbone_config: PreTrainedConfig) -> int:
    for name in ("num_hidden_layers", "n_layers"):
        value = getattr(backbone_config, name, None)
        if isinstance(value, int):
            return value
    raise ValueError(f"cannot find the number of layers of backbone config {type(backbone_config).__name__}")


def check_positive_int(name: str, value: object, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


class RankingConfig(PreTrainedConfig):
    r"""
    Base configuration of the hf-kd ranking models: the backbone configuration and the input lengths.

    Args:
        backbone_config (`PreTrainedConfig` or `dict`, *optional*):
            Configuration of the BERT-family encoder inside the ranker (BERT, DistilBERT, MiniLM, ELECTRA; ALBERT
            where the architecture allows). Defaults to a DistilBERT configuration, the paper's student backbone.
        backbone_name_or_path (`str`, *optional*):
            The checkpoint whose weights initialised the backbone (recorded by `from_backbone`, used by model cards).
        max_query_length (`int`, *optional*, defaults to 30):
            Maximum number of query word-piece tokens, special tokens excluded; longer queries are truncated.
        max_passage_length (`int`, *optional*, defaults to 200):
            Maximum number of passage word-piece tokens, special tokens excluded; longer passages are truncated.
        min_sub_batch_size (`int`, *optional*, defaults to 16):
            Rows of the smallest sub-batch the training forward pass splits a padded batch into: rows are sorted by
            length and encoded in groups padded to their own longest text, so less padding work is done. Equal
            scores to float rounding; 0 encodes every batch whole.
        pad_token_id (`int`, *optional*):
            The id the tokenizer pads with; defaults to the backbone's `pad_token_id`. Carried on the ranker's own
            config so that the Trainer finds the tokenizer and the model agreeing (it aligns the two, with a warning,
            when the config has none).
    """

    model_type = ""
    architecture = ""

    def __init__(
        self,
        backbone_config: PreTrainedConfig | dict | None = None,
        backbone_name_or_path: str | None = None,
        max_query_length: int = 30,
        max_passage_length: int = 200,
        min_sub_batch_size: int = 16,
        **kwargs,
    ):
        self.backbone_config = build_backbone_config(backbone_config)
        self.backbone_name_or_path = backbone_name_or_path
        self.max_query_length = max_query_length
        self.max_passage_length = max_passage_length
        self.min_sub_batch_size = min_sub_batch_size
        kwargs.setdefault("pad_token_id", getattr(self.backbone_config, "pad_token_id", None))
        super().__init__(**kwargs)
        self.validate_ranking_config()

    @property
    def hidden_size(self) -> int:
        return hidden_size_of(self.backbone_config)

    def validate_ranking_config(self) -> None:
        """Checks value ranges; subclasses extend it. Errors name the offending argument."""
        check_positive_int("max_query_length", self.max_query_length)
        check_positive_int("max_passage_length", self.max_passage_length)
        check_positive_int("min_sub_batch_size", self.min_sub_batch_size, minimum=0)
        max_positions = getattr(self.backbone_config, "max_position_embeddings", None)
        if isinstance(max_positions, int) and self.max_query_length + self.max_passage_length + 3 > max_positions:
            raise ValueError(
                f"max_query_length ({self.max_query_length}) + max_passage_length ({self.max_passage_length}) + 3 "
                f"special tokens exceed the backbone's max_position_embeddings ({max_positions})"
            )


__all__ = ["RankingConfig", "build_backbone_config", "hidden_size_of", "embedding_size_of", "num_layers_of"]
