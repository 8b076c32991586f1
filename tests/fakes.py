"""Deterministic stand-ins for unit tests of policies and sessions (never used by the package)."""

from __future__ import annotations

import numpy as np

from marginal.tasks.base import Extraction
from marginal.types import Chat, Completion, Prior, Problem, SampleSpec, prompt_key


class FakeBackend:
    """Answers 'ANSWER: a' with a drawn from a scripted distribution per prior.

    ``dists[prior_name]`` maps answers to probabilities; the prior is found by
    its tag in the system prompt. Draws use the spec's per-sequence seeds, as
    a real engine does, so the same seed gives the same completions.
    """

    name = "fake"

    def __init__(self, dists: dict[str, dict[str, float]], fail: set[str] = frozenset()):
        self.dists = dists
        self.fail = fail
        self.calls: list[tuple[int, SampleSpec]] = []

    def generate(self, prompts, spec: SampleSpec):
        self.calls.append((len(prompts), spec))
        out = []
        for p in prompts:
            assert isinstance(p, Chat)
            prior = p.messages[0].content.removeprefix("tag:")
            dist = self.dists[prior]
            comps = []
            for j in range(spec.n):
                seed = spec.sequence_seed(prompt_key(p), j)
                rng = np.random.default_rng(seed)
                a = rng.choice(list(dist), p=np.array(list(dist.values())) / sum(dist.values()))
                text = "gibberish" if prior in self.fail else f"ANSWER: {a}"
                comps.append(Completion(text, (1, 2, 3), -1.0, "stop", 10, 0 if j == 0 else 10, seed))
            out.append(comps)
        return out

    def close(self):
        pass


def fake_bank(names):
    return [Prior(n, system=f"tag:{n}") for n in names]


class FakeTask:
    """Extracts 'ANSWER: a'; an answer in ``unreadable`` fails extraction (a failed sample)."""

    name = "fake"

    def __init__(self, names, unreadable=frozenset()):
        self.names = names
        self.unreadable = unreadable

    def problems(self):
        return [Problem("p0", "what?", "42")]

    def bank(self):
        return fake_bank(self.names)

    def extract(self, text, problem):
        if text.startswith("ANSWER: ") and text.removeprefix("ANSWER: ") not in self.unreadable:
            return Extraction(text.removeprefix("ANSWER: "))
        return Extraction(None, "no_answer")

    def grade(self, answer, problem):
        return None if problem.answer is None else answer == problem.answer
