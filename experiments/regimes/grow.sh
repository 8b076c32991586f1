#!/usr/bin/env bash
# Issue 12, section 3: once pool A is complete (150 problems x 10 priors x 8), grow it for what the
# adaptive policy and the repetition baselines ask for beyond 8 samples per prior, at the lowest
# priority; then `python experiments/regimes/adaptive.py` reads it. Each step resumes (a rerun adds
# only what is missing, each sample with the seed it would have had). THREADS (default 2) sets
# llama.cpp's threads.
#   bash experiments/regimes/grow.sh          # log in runs/regimes-grow.log
set -euo pipefail
cd "$(dirname "$0")/../.."
export MARGINAL_DATA="${MARGINAL_DATA:-$(cd .. && pwd)/shared/data}"
THREADS="${THREADS:-2}"
POOL=experiments/regimes/pools/gsm8k-qwen05.db
{
  # adaptive at B = 16 and 32 (threshold 0.95, the default): the samples it repeats past 8
  nice -n 19 marginal replay "$POOL" --budgets 16,32 --policies adaptive --grow --threads "$THREADS"
  # repetition of the bank's first prior (what policy repetition spends on; 15 tokens a sample) to 32
  nice -n 19 marginal replay "$POOL" --priors default --budgets 32 --policies repetition --grow --threads "$THREADS"
  # repetition of the best single prior (teacher, 270 tokens a sample) to 16
  nice -n 19 marginal replay "$POOL" --priors teacher --budgets 16 --policies repetition --grow --threads "$THREADS"
} > runs/regimes-grow.log 2>&1
