"""Adapting a student to a corpus without relevance labels (`hf-kd adapt`)."""

from .budgets import BUDGETS, AdaptBudget, get_adapt_budget
from .pipeline import run_adaptation

__all__ = ["BUDGETS", "AdaptBudget", "get_adapt_budget", "run_adaptation"]
