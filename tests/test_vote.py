"""marginal.vote: the one plurality vote, its tie rule and its credit, against brute-force references."""

from itertools import product

import numpy as np
import pytest

from marginal.analysis import pool_from_lists, weighted_credit
from marginal.errors import MarginalError
from marginal.vote import TIES, credit, credit_array, label_free_margin, ranked, tally, top, winner


def test_tally_counts_valid_samples_of_every_prior():
    assert tally([["a", None, "b"], [None], ["a"]]) == {"a": 2, "b": 1}
    assert tally([[None, None], []]) == {}
    assert tally([["a", "b"], ["b"]], weights=[2.0, 0.5]) == {"a": 2.0, "b": 2.5}
    assert tally([["a"], ["b"]], weights=[1.0, 0.0]) == {"a": 1.0}  # a prior of weight 0 does not vote
    with pytest.raises(MarginalError, match="one weight per prior"):
        tally([["a"]], weights=[1.0, 2.0])
    with pytest.raises(MarginalError, match=">= 0"):
        tally([["a"]], weights=[-1.0])


def test_tie_rule_is_alphabetically_smallest_first():
    c = {"b": 2, "a": 2, "c": 3, "d": 1}
    assert ranked(c) == ["c", "a", "b", "d"]
    assert top(c) == ("c",) and winner(c) == "c"
    assert winner({"b": 2, "a": 2}) == "a" and top({"b": 2, "a": 2}) == ("a", "b")
    assert winner({"9": 1, "10": 1}) == "10"  # string order, not numeric
    assert winner({}) is None and top({}) == () and ranked({"a": 0}) == []
    # weighted sums equal up to float error tie
    assert top({"x": 0.1 + 0.2, "y": 0.3}) == ("x", "y")


def test_label_free_margin():
    assert label_free_margin({"a": 3, "b": 1}) == pytest.approx(0.5)
    assert label_free_margin({"a": 2}) == 1.0
    assert label_free_margin({"a": 2, "b": 2}) == 0.0
    assert label_free_margin({}) == 0.0


def test_credit_split_strict_and_sets_of_correct_answers():
    tie = {"a": 2, "b": 2, "c": 1}
    assert credit(tie, "a") == 0.5 and credit(tie, "a", "strict") == 0.0
    assert credit(tie, "c") == 0.0
    assert credit(tie, {"a", "b"}) == 1.0 and credit(tie, {"a", "c"}) == 0.5
    assert credit({"a": 3, "b": 1}, "a", "strict") == 1.0
    assert credit({"a": 3, "b": 1}, {"a", "b"}, "strict") == 1.0
    assert credit({}, "a") == 0.0 and credit({}, "a", "strict") == 0.0
    with pytest.raises(MarginalError, match="ties must be"):
        credit(tie, "a", "coin")


def _reference_credit(votes: list[float], gold: int, ties: str) -> float:
    """Credit written out from the definition: T = the answers with the most votes (> 0)."""
    best = max(votes)
    if best <= 0:
        return 0.0
    T = [a for a, v in enumerate(votes) if abs(v - best) < 1e-9]
    if gold not in T:
        return 0.0
    return 1.0 / len(T) if ties == "split" else float(len(T) == 1)


@pytest.mark.parametrize("ties", TIES)
def test_credit_array_equals_credit_and_the_definition(ties):
    # every count vector over 3 answers with counts 0..3: integer and weighted
    vecs = np.array(list(product(range(4), repeat=3)))
    for scale in (1, 0.1):
        cnt = vecs * scale
        for gold in range(3):
            got = credit_array(cnt, gold, ties)
            want = [_reference_credit(list(v), gold, ties) for v in cnt]
            via_map = [credit({str(a): float(x) for a, x in enumerate(v) if x > 0}, str(gold), ties) for v in cnt]
            np.testing.assert_allclose(got, want)
            np.testing.assert_allclose(via_map, want)
    # per-vector gold columns broadcast
    np.testing.assert_allclose(
        credit_array(np.array([[2, 2], [3, 1]]), np.array([1, 1]), ties), [0.5 if ties == "split" else 0.0, 0.0]
    )


def test_weighted_credit_of_the_analyses_is_the_weighted_vote():
    """analysis.weights votes on arrays; drawing every stored sample makes it deterministic,
    so it must equal the string-level weighted vote of marginal.vote on each problem."""
    rng = np.random.default_rng(3)
    answers = [
        [[str(rng.choice(["g", "x", "y"])) if rng.random() > 0.15 else None for _ in range(3)] for _ in range(4)]
        for _ in range(30)
    ]
    pool = pool_from_lists(answers, ["g"] * 30)
    weights = np.array([[1.0, 1.0, 1.0, 1.0], [0.7, 0.2, 0.1, 0.0], [0.1, 0.1, 0.1, 0.3]])
    for k in (1, 2, 4):
        got = weighted_credit(pool, weights, k, 3, reps=4, seed=1)
        for s, w in enumerate(weights):
            want = [credit(tally(a[:k], list(w[:k])), "g") for a in answers]
            np.testing.assert_allclose(got[s], want, err_msg=f"K={k}, weights {w}")
