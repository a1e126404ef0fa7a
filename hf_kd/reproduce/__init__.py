"""The paper's experiment at small scale on the shared data: `hf-kd reproduce`."""

from .budgets import BUDGETS, Budget, get_budget
from .recipe import run_reproduction

__all__ = ["BUDGETS", "Budget", "get_budget", "run_reproduction"]
