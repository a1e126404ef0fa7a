"""hf-kd: cross-architecture knowledge distillation for neural passage ranking."""

__version__ = "0.1.0"
