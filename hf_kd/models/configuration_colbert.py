"""ColBERT configuration."""

from __future__ import annotations

from .configuration_ranking import RankingConfig, check_positive_int

COMPRESSION_INITS = ("random", "identity")


class ColBERTConfig(RankingConfig):
    r"""
    Configuration of [`ColBERTModel`]: every token of `[CLS] text [SEP]` is encoded, projected by
    Linear(hidden, compression_dim) and scored by late interaction (sum over query tokens of the max dot product
    over passage tokens).

    Args:
        backbone_config (`PreTrainedConfig` or `dict`, *optional*):
            The encoder's configuration (any BERT-family model, ALBERT included). Defaults to DistilBERT.
        backbone_name_or_path (`str`, *optional*):
            The checkpoint whose weights initialised the backbone.
        max_query_length (`int`, *optional*, defaults to 30):
            Maximum query tokens (special tokens and augmentation excluded).
        max_passage_length (`int`, *optional*, defaults to 200):
            Maximum passage tokens (special tokens excluded).
        compression_dim (`int`, *optional*, defaults to 128):
            Size of the per-token vectors. The paper's code keeps the hidden size (768); the original ColBERT uses
            128, which stores six times less per passage token. Set it to the hidden size to follow the paper.
        query_augmentation_tokens (`int`, *optional*, defaults to 8):
            Number of [MASK] tokens appended to every query (the released model used 8; 0 disables augmentation).
            They take part in attention and in the MaxSim sum.
        normalize_embeddings (`bool`, *optional*, defaults to `False`):
            L2-normalise the token vectors (cosine MaxSim). The paper scores raw dot products.
        mean_maxsim (`bool`, *optional*, defaults to `False`):
            Divide the MaxSim sum by the number of real query tokens (sentence-transformers' "meanmaxsim"). The
            ranking for one query is unchanged; the scale is not: with normalised vectors a score lies in [-1, 1],
            the scale of a cosine teacher, whose margins Margin-MSE asks the student to reproduce. `False` is the
            paper's sum.
        compression_init (`str`, *optional*, defaults to `"random"`):
            How the projection starts: `"random"` (the paper), or `"identity"` (needs `compression_dim` equal to
            the backbone's hidden size), which keeps the backbone's own token vectors until training moves them; on
            a sentence-transformers backbone the untrained model then already ranks.

    Example:
    ```python
    >>> from transformers import BertConfig
    >>> from hf_kd import ColBERTConfig, ColBERTModel
    >>> model = ColBERTModel(ColBERTConfig(backbone_config=BertConfig(hidden_size=32, num_hidden_layers=2,
    ...                                    num_attention_heads=2, intermediate_size=64), compression_dim=16))
    ```"""

    model_type = "hfkd_colbert"
    architecture = "colbert"

    def __init__(
        self,
        compression_dim: int = 128,
        query_augmentation_tokens: int = 8,
        normalize_embeddings: bool = False,
        mean_maxsim: bool = False,
        compression_init: str = "random",
        **kwargs,
    ):
        self.compression_dim = compression_dim
        self.query_augmentation_tokens = query_augmentation_tokens
        self.normalize_embeddings = normalize_embeddings
        self.mean_maxsim = mean_maxsim
        self.compression_init = compression_init
        super().__init__(**kwargs)

    def validate_ranking_config(self) -> None:
        super().validate_ranking_config()
        check_positive_int("compression_dim", self.compression_dim)
        check_positive_int("query_augmentation_tokens", self.query_augmentation_tokens, minimum=0)
        if self.compression_init not in COMPRESSION_INITS:
            raise ValueError(
                f"compression_init must be one of {', '.join(COMPRESSION_INITS)}, got {self.compression_init!r}"
            )
        if self.compression_init == "identity" and self.compression_dim != self.hidden_size:
            raise ValueError(
                f"compression_init='identity' needs compression_dim equal to the backbone's hidden size "
                f"({self.hidden_size}), got {self.compression_dim}"
            )


__all__ = ["ColBERTConfig"]
