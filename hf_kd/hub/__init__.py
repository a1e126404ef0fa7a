"""Publishing on the Hugging Face Hub: model cards from `model_cards/`, checkpoints and teacher-score datasets; the
import of the paper's released checkpoints (`released`)."""

from .card_info import EvaluationResult, ModelCardInfo, collect_card_info, read_evaluation_results
from .cards import MODEL_CARDS_DIR, model_card_data, render_model_card
from .dataset_card import dataset_card_data, render_dataset_card
from .push import CHECKPOINT_IGNORE_PATTERNS, HubTokenError, HubUploadError, push_model, push_scores
from .released import RELEASED_LAYOUTS, ReleasedLayoutError, import_released, load_released

__all__ = [
    "CHECKPOINT_IGNORE_PATTERNS",
    "MODEL_CARDS_DIR",
    "EvaluationResult",
    "HubTokenError",
    "HubUploadError",
    "ModelCardInfo",
    "RELEASED_LAYOUTS",
    "ReleasedLayoutError",
    "collect_card_info",
    "dataset_card_data",
    "import_released",
    "load_released",
    "model_card_data",
    "push_model",
    "push_scores",
    "read_evaluation_results",
    "render_dataset_card",
    "render_model_card",
]
