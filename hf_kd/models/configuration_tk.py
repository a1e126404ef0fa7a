"""TK configuration."""

from __future__ import annotations

from .configuration_ranking import RankingConfig, check_positive_int, embedding_size_of

# The paper's 11 kernels: an exact-match kernel at 1.0, then 0.9, 0.7, ..., -0.9.
DEFAULT_KERNEL_MUS = (1.0, 0.9, 0.7, 0.5, 0.3, 0.1, -0.1, -0.3, -0.5, -0.7, -0.9)


def default_num_heads(embedding_dim: int, limit: int = 10) -> int:
    """The largest head count <= `limit` that divides the embedding size (10 for 300-d GloVe, 8 for 384 or 768)."""
    return max(h for h in range(1, limit + 1) if embedding_dim % h == 0)


class TKConfig(RankingConfig):
    r"""
    Configuration of [`TKModel`] (Transformer-Kernel): word embeddings, a few light transformer layers mixed with the
    raw embeddings by a learned weight, a cosine match matrix, RBF kernels, log-sum kernel pooling, Linear(K, 1).

    The paper uses 300-d GloVe embeddings; here (*choice*) TK uses the backbone's word-piece embeddings, so it shares
    the tokenizer of the other zoo models. Only the backbone's word embedding matrix is used, not its layers.

    Args:
        backbone_config (`PreTrainedConfig` or `dict`, *optional*):
            The configuration whose vocabulary and embedding size TK's embedding matrix follows. Defaults to DistilBERT.
        backbone_name_or_path (`str`, *optional*):
            The checkpoint whose word embeddings initialised TK's embedding matrix.
        max_query_length (`int`, *optional*, defaults to 30):
            Maximum query tokens.
        max_passage_length (`int`, *optional*, defaults to 200):
            Maximum passage tokens.
        num_layers (`int`, *optional*, defaults to 2):
            Transformer layers contextualising the embeddings (the paper: 2).
        num_attention_heads (`int`, *optional*):
            Heads per layer; must divide the embedding size. Defaults to the largest divisor <= 10 (the paper: 10 on
            300-d embeddings).
        intermediate_size (`int`, *optional*, defaults to 300):
            Feed-forward size of the transformer layers (the paper: 300).
        dropout (`float`, *optional*, defaults to 0.0):
            Dropout inside the transformer layers, in [0, 1).
        kernel_mus (`list[float]`, *optional*):
            Kernel centres; defaults to the paper's 11 (1.0, 0.9, 0.7, ..., -0.9).
        kernel_sigma (`float`, *optional*, defaults to 0.1):
            Width of every kernel (> 0).
        kernel_log_scale (`float`, *optional*, defaults to 0.01):
            Factor on the log of the kernel sums, as in TK's implementation.
        term_match_init (`bool`, *optional*, defaults to `False`):
            Start as a soft term matcher instead of the paper's initialisation (mixer 0.5, kernel weights uniform in
            +-0.014, which ranks at chance until trained): the mixer at 1.0 (the word embeddings alone) and the
            kernel weight `mu ** 4` for the kernels with `mu > 0.5` (exact and near matches), 0 for the others.
            Untrained on all-MiniLM-L6-v2's embeddings it re-ranks the DL20 dev queries at 0.378 nDCG@10, where
            the paper's initialisation gives 0.112.
        query_term_weights (`bool`, *optional*, defaults to `False`):
            Weigh each query token's pooled kernel features by a learned weight of its word piece (*choice*; the
            paper's TK weighs every query token alike). The weights start at 1, or at the word pieces' inverse
            document frequencies in a collection ([`TKModel.init_query_term_weights`]): BM25's notion that a rare
            term's match counts for more, which TK otherwise has to learn from many triples. `hf-kd train` starts
            them at the IDF of the training passages when it builds TK from a backbone.
        query_term_idf_power (`float`, *optional*, defaults to 1.0):
            The power of the IDF the query term weights start at (larger: rare terms count for more still).
        kernel_chunk_size (`int`, *optional*, defaults to 1):
            Kernels evaluated at once when scoring. 1 keeps the working memory at one (pairs, query tokens, passage
            tokens) match matrix and is the fastest on a CPU; `None` evaluates all kernels in one tensor K times
            that size. The scores are the same.
        compile_kernel_pooling (`bool`, *optional*, defaults to `False`):
            Score (not train) through `torch.compile`d kernel pooling: every kernel and the sum over passage tokens
            fused into one loop, so no (pairs, query tokens, passage tokens, kernels) tensor is built. About 5x faster
            kernel pooling on a CPU after a first call of about 30 s; needs a C++ compiler (CPU) or Triton (GPU).
            Where compilation fails, scoring falls back to `kernel_chunk_size` with a warning. The scores are the
            same to float rounding.

    Example:
    ```python
    >>> from transformers import BertConfig
    >>> from hf_kd import TKConfig, TKModel
    >>> model = TKModel(TKConfig(backbone_config=BertConfig(hidden_size=32, num_hidden_layers=2,
    ...                          num_attention_heads=2, intermediate_size=64)))
    ```"""

    model_type = "hfkd_tk"
    architecture = "tk"

    def __init__(
        self,
        num_layers: int = 2,
        num_attention_heads: int | None = None,
        intermediate_size: int = 300,
        dropout: float = 0.0,
        kernel_mus: list[float] | None = None,
        kernel_sigma: float = 0.1,
        kernel_log_scale: float = 0.01,
        term_match_init: bool = False,
        query_term_weights: bool = False,
        query_term_idf_power: float = 1.0,
        kernel_chunk_size: int | None = 1,
        compile_kernel_pooling: bool = False,
        **kwargs,
    ):
        self.compile_kernel_pooling = compile_kernel_pooling
        self.term_match_init = term_match_init
        self.query_term_weights = query_term_weights
        self.query_term_idf_power = query_term_idf_power
        self.kernel_chunk_size = kernel_chunk_size
        self.num_layers = num_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.dropout = dropout
        self.kernel_mus = list(kernel_mus) if kernel_mus is not None else list(DEFAULT_KERNEL_MUS)
        self.kernel_sigma = kernel_sigma
        self.kernel_log_scale = kernel_log_scale
        super().__init__(**kwargs)
        if self.num_attention_heads is None:
            self.num_attention_heads = default_num_heads(self.embedding_dim)

    @property
    def embedding_dim(self) -> int:
        return embedding_size_of(self.backbone_config)

    @property
    def vocab_size(self) -> int:
        return self.backbone_config.vocab_size

    def validate_ranking_config(self) -> None:
        super().validate_ranking_config()
        check_positive_int("num_layers", self.num_layers, minimum=0)
        check_positive_int("intermediate_size", self.intermediate_size)
        if self.num_attention_heads is not None:
            check_positive_int("num_attention_heads", self.num_attention_heads)
            if self.embedding_dim % self.num_attention_heads != 0:
                raise ValueError(
                    f"num_attention_heads ({self.num_attention_heads}) must divide the embedding size "
                    f"({self.embedding_dim})"
                )
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not self.kernel_mus:
            raise ValueError("kernel_mus must hold at least one kernel centre")
        if not float(self.kernel_sigma) > 0:
            raise ValueError(f"kernel_sigma must be > 0, got {self.kernel_sigma!r}")
        if self.kernel_chunk_size is not None:
            check_positive_int("kernel_chunk_size", self.kernel_chunk_size)
        if not float(self.query_term_idf_power) > 0:
            raise ValueError(f"query_term_idf_power must be > 0, got {self.query_term_idf_power!r}")


__all__ = ["TKConfig"]
