"""Tasks: benchmarks and user data, prompts, answer extraction, grading."""

from .base import Extraction, Task

__all__ = ["Extraction", "Task"]
