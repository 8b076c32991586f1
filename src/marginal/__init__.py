"""marginal: K contextual priors x M samples, marginalized, with margins."""

from .types import Chat, Completion, Message, Prior, Problem, Sample, SampleSpec

__version__ = "0.1.0"

__all__ = ["Chat", "Completion", "Message", "Prior", "Problem", "Sample", "SampleSpec", "__version__"]
