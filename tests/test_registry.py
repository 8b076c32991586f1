import pytest

from marginal.errors import MarginalError
from marginal.registry import Registry


def test_registry_table_order_help_and_suggestions():
    r: Registry[int] = Registry("policy")
    r.add("adaptive", 1, "stops early")
    r.add("fixed", 2)
    assert r.names() == ("adaptive", "fixed") and r.choices() == "adaptive|fixed" and len(r) == 2
    assert r.get("fixed") == 2 and "fixed" in r and "nope" not in r
    assert r.describe() == "adaptive: stops early\nfixed"
    with pytest.raises(
        MarginalError, match=r"unknown policy 'adaptiv' \(did you mean 'adaptive'\?\); expected one of: adaptive, fixed"
    ):
        r.get("adaptiv")
    with pytest.raises(ValueError, match="already registered"):
        r.add("fixed", 3)
