"""The five ranking architectures, registered with the transformers Auto classes on import."""

from transformers import AutoConfig, AutoModel

from .configuration_bert_cat import BertCatConfig
from .configuration_bert_dot import BertDotConfig
from .configuration_colbert import ColBERTConfig
from .configuration_prett import PreTTConfig
from .configuration_ranking import RankingConfig
from .configuration_tk import TKConfig
from .modeling_bert_cat import BertCatModel
from .modeling_bert_dot import BertDotModel
from .modeling_colbert import ColBERTModel
from .modeling_prett import PreTTModel
from .modeling_ranking import EncodedBatch, RankingOutput, RankingPreTrainedModel, SplitRankingModel
from .modeling_tk import TKModel

MODEL_CLASSES = {
    "bert_cat": BertCatModel,
    "bert_dot": BertDotModel,
    "colbert": ColBERTModel,
    "prett": PreTTModel,
    "tk": TKModel,
}

for _model_class in MODEL_CLASSES.values():
    _config_class = _model_class.config_class
    AutoConfig.register(_config_class.model_type, _config_class, exist_ok=True)
    AutoModel.register(_config_class, _model_class, exist_ok=True)
    # Saved checkpoints then carry `auto_map` and a copy of this folder's code (trust_remote_code loading).
    _config_class.register_for_auto_class()
    _model_class.register_for_auto_class("AutoModel")


def model_class_for(architecture: str) -> type[RankingPreTrainedModel]:
    """The model class of an architecture name (`bert_cat`, `bert_dot`, `colbert`, `prett`, `tk`)."""
    try:
        return MODEL_CLASSES[architecture]
    except KeyError:
        raise ValueError(f"unknown architecture {architecture!r}; choose one of {', '.join(MODEL_CLASSES)}") from None


__all__ = [
    "BertCatConfig",
    "BertCatModel",
    "BertDotConfig",
    "BertDotModel",
    "ColBERTConfig",
    "ColBERTModel",
    "EncodedBatch",
    "MODEL_CLASSES",
    "PreTTConfig",
    "PreTTModel",
    "RankingConfig",
    "RankingOutput",
    "RankingPreTrainedModel",
    "SplitRankingModel",
    "TKConfig",
    "TKModel",
    "model_class_for",
]
