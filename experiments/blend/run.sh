#!/usr/bin/env bash
# Qwen2.5-Coder 1.5B / 0.5B blending pair on a GSM8K subset, greedy (see README.md).
set -euo pipefail
cd "$(dirname "$0")"
export MARGINAL_DATA=${MARGINAL_DATA:-/work/shared/data}
N=${N:-8}; T=${T:-320}
common=(--prior step-by-step --limit "$N" --max-tokens "$T" --threads 2 --n-ctx 4096 --max-seqs 8 --out gsm8k.db)
nice -n 10 marginal blend gsm8k --base qwen2.5-coder-1.5b --guide qwen2.5-coder-0.5b -v base -v guide -v blend "${common[@]}"
nice -n 10 marginal blend gsm8k --base qwen2.5-coder-0.5b --guide qwen2.5-coder-1.5b -v blend "${common[@]}"
nice -n 10 marginal blend gsm8k --base qwen2.5-coder-1.5b --guide qwen2.5-coder-0.5b -v nudge -v always "${common[@]}"
python summarize.py gsm8k.db
