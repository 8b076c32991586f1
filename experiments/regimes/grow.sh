#!/usr/bin/env bash
# Issue 12, section 3: once a pool is complete (every problem x prior holds 8 samples), grow it for
# what the adaptive policies and the repetition baselines ask for beyond 8 samples per prior, at the
# lowest priority, in the two prior orders that experiments/regimes/adaptive.py scores (the bank's;
# the priors by accuracy on its calibration half). Each step resumes: a rerun adds only what is
# missing, each sample with the seed it would have had. THREADS (default 2) sets llama.cpp's threads,
# THRESHOLDS (default 0.95) the adaptive thresholds grown for.
#   bash experiments/regimes/grow.sh                                          # pool A
#   bash experiments/regimes/grow.sh experiments/regimes/pools/gsm8k-qwen15.db  # pool B
# Log: runs/regimes-grow-<pool>.log
set -euo pipefail
cd "$(dirname "$0")/../.."
export MARGINAL_DATA="${MARGINAL_DATA:-$(cd .. && pwd)/shared/data}"
THREADS="${THREADS:-2}"
POOL="${1:-experiments/regimes/pools/gsm8k-qwen05.db}"
ORDER="$(python experiments/regimes/adaptive.py "$POOL" --order)"
FIRST="${ORDER%%,*}"
grow() { nice -n 19 marginal replay "$POOL" --grow --threads "$THREADS" "$@"; }
{
  echo "calibrated order: $ORDER"
  for t in ${THRESHOLDS:-0.95}; do                              # adaptive's thresholds (THRESHOLDS="0.8 0.95")
    grow --budgets 16,32 --policies adaptive --threshold "$t"                      # bank order
    grow --budgets 16,32 --policies adaptive --threshold "$t" --priors "$ORDER"    # calibrated order
  done
  grow --budgets 32 --policies repetition --priors default      # the bank's first prior (pool A: 15 tokens a sample)
  grow --budgets 16 --policies repetition --priors "$FIRST"     # the calibrated first prior (pool A: ~270 tokens)
  for t in ${THRESHOLDS:-0.95}; do
    grow --budgets 16,32 --policies adaptive-plurality --threshold "$t" --priors "$ORDER"
  done
} > "runs/regimes-grow-$(basename "$POOL" .db).log" 2>&1
