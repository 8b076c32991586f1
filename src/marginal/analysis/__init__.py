"""Analysis of a stored pool: pure numpy, never generates.

- ``pool``: a run as arrays (``load_pool``, ``pool_from_lists``).
- ``accuracy``: expected vote accuracy of every allocation (K priors x M
  samples), exact or Monte Carlo with common random numbers; pass@k, oracle.
- ``margins``: Γ_K, label-free margins, dominance, alignment drift (κ, λ),
  regimes, bias-variance and the normal approximation, per-prior stats.
- ``weights``: weighted marginalization compared with uniform, held out.
- ``planner``: (K, M) for a budget from a calibration split, judged held out.
- ``subbank``: a sub-bank of the pool's priors; greedy bank selection, cross-fitted.
- ``regimes``: the regime test (does calibration drift predict the held-out
  diversity-first gain, over random sub-banks).

Left out: plots and HTML (``marginal.report``), adaptive policies.
"""

from .accuracy import (
    Grid,
    accuracy_grid,
    brute_force_accuracy,
    grid_cells,
    mc_cell,
    oracle_grid,
    pass_at_k,
    pool_pass_at_k,
)
from .margins import (
    BiasVariance,
    Drift,
    Margins,
    PriorStats,
    bias_variance,
    drift,
    label_free_margins,
    margins,
    moments,
    prior_stats,
    shares,
)
from .planner import Bucket, PlannerResult, Scored, plan
from .pool import FAILED, MISSING, Pool, load_pool, pool_from_lists
from .weights import WeightComparison, compare_weights, prior_weights, split_problems, weighted_credit

__all__ = [
    "FAILED",
    "MISSING",
    "BiasVariance",
    "Bucket",
    "Drift",
    "Grid",
    "Margins",
    "PlannerResult",
    "Pool",
    "PriorStats",
    "Scored",
    "WeightComparison",
    "accuracy_grid",
    "bias_variance",
    "brute_force_accuracy",
    "compare_weights",
    "drift",
    "grid_cells",
    "label_free_margins",
    "load_pool",
    "margins",
    "mc_cell",
    "moments",
    "oracle_grid",
    "pass_at_k",
    "plan",
    "pool_from_lists",
    "pool_pass_at_k",
    "prior_stats",
    "prior_weights",
    "shares",
    "split_problems",
    "weighted_credit",
]

from .regimes import RegimeTest, pick_examples, regime_test, spearman  # noqa: E402
from .subbank import Arm, BankSelection, Paired, pick_priors, select_bank, sub_bank  # noqa: E402
from .summary import Analysis, analyze  # noqa: E402

__all__ += [
    "Analysis",
    "Arm",
    "BankSelection",
    "Paired",
    "RegimeTest",
    "analyze",
    "pick_examples",
    "pick_priors",
    "regime_test",
    "select_bank",
    "spearman",
    "sub_bank",
]
