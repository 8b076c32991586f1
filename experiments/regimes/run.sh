#!/usr/bin/env bash
# Generate (or resume and grow) the two GSM8K pools of the regime study, in the background at low
# priority. Each command resumes: rerun it and it adds only the missing samples, each with the seed it
# would have had. THREADS (default 1 per pool) sets llama.cpp's threads, SLOTS (32) the sequences decoded
# together (continuous batching); LIMIT_A / LIMIT_B the problems.
#   bash experiments/regimes/run.sh            # both pools, logs in runs/regimes-*.log
set -euo pipefail
cd "$(dirname "$0")/../.."
export MARGINAL_DATA="${MARGINAL_DATA:-$(cd .. && pwd)/shared/data}"
THREADS="${THREADS:-1}"
SLOTS="${SLOTS:-32}"
LIMIT_A="${LIMIT_A:-150}"
LIMIT_B="${LIMIT_B:-60}"
POOLS=experiments/regimes/pools
mkdir -p runs "$POOLS"
# Pool B grows the study's GSM8K pool (same seed and settings, the first N test problems).
[ -f "$POOLS/gsm8k-qwen15.db" ] || cp experiments/study/pools/gsm8k-qwen15.db "$POOLS/gsm8k-qwen15.db"
# Pool A: Qwen2.5-Coder-0.5B, a seeded random subset, eight standard priors and the two weak ones.
A_PRIORS=default,step-by-step,teacher,checker,concise,plan-solve,verify,fewshot-a,answer-only,fewshot-wrong
nice -n 19 marginal run gsm8k --model qwen2.5-coder-0.5b --priors "$A_PRIORS" --samples 8 \
  --limit "$LIMIT_A" --subset-seed 0 --max-tokens 384 --seed 0 --batch-samples 64 --slots "$SLOTS" --threads "$THREADS" \
  --out "$POOLS/gsm8k-qwen05.db" > runs/regimes-a.log 2>&1 &
nice -n 19 marginal run gsm8k --model qwen2.5-coder-1.5b --priors 8 --samples 8 \
  --limit "$LIMIT_B" --max-tokens 400 --seed 0 --batch-samples 64 --slots "$SLOTS" --threads "$THREADS" \
  --out "$POOLS/gsm8k-qwen15.db" > runs/regimes-b.log 2>&1 &
wait
