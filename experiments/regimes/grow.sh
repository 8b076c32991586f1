#!/usr/bin/env bash
# Issue 12, section 3: once pool A is complete (150 problems x 10 priors x 8), grow it for what the
# adaptive policies and the repetition baselines ask for beyond 8 samples per prior, at the lowest
# priority, in the two prior orders that experiments/regimes/adaptive.py scores (the bank's; the
# priors by accuracy on its calibration half). Each step resumes: a rerun adds only what is missing,
# each sample with the seed it would have had. THREADS (default 2) sets llama.cpp's threads.
#   bash experiments/regimes/grow.sh          # log in runs/regimes-grow.log
set -euo pipefail
cd "$(dirname "$0")/../.."
export MARGINAL_DATA="${MARGINAL_DATA:-$(cd .. && pwd)/shared/data}"
THREADS="${THREADS:-2}"
POOL=experiments/regimes/pools/gsm8k-qwen05.db
ORDER="$(python experiments/regimes/adaptive.py "$POOL" --order)"
FIRST="${ORDER%%,*}"
grow() { nice -n 19 marginal replay "$POOL" --grow --threads "$THREADS" "$@"; }
{
  echo "calibrated order: $ORDER"
  grow --budgets 16,32 --policies adaptive                      # bank order
  grow --budgets 16,32 --policies adaptive --priors "$ORDER"    # calibrated order
  grow --budgets 32 --policies repetition --priors default      # the bank's first prior, 15 tokens a sample
  grow --budgets 16 --policies repetition --priors "$FIRST"     # the calibrated first prior, ~270 tokens a sample
  grow --budgets 16,32 --policies adaptive-plurality --priors "$ORDER"
} > runs/regimes-grow.log 2>&1
