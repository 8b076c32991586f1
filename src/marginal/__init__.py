"""marginal: K contextual priors x M samples, marginalized, with margins."""

from .types import Chat, Completion, Message, Prior, Problem, Sample, SampleSpec


def __getattr__(name: str):
    # Heavy parts load on first use, so `import marginal` stays fast and offline.
    if name in ("solve", "Session", "Result"):
        from . import session

        return getattr(session, name)
    if name == "load_pool":
        from .analysis import load_pool

        return load_pool
    raise AttributeError(f"module 'marginal' has no attribute {name!r}")


__version__ = "0.1.0"

__all__ = [
    "Chat",
    "Completion",
    "Message",
    "Prior",
    "Problem",
    "Result",
    "Sample",
    "SampleSpec",
    "Session",
    "load_pool",
    "solve",
    "__version__",
]
