#!/usr/bin/env bash
# Blending evaluation (issue 7): two pairs x two tasks, variants and a gamma sweep, greedy.
# Each `marginal blend` line resumes (rows already stored are not regenerated), so the
# script can be rerun after an interruption. Usage: ./run.sh [humaneval|gsm8k] [qwen|cross]
set -euo pipefail
cd "$(dirname "$0")"
export MARGINAL_DATA=${MARGINAL_DATA:-../../../shared/data}
N=${N:-12}; T=${T:-320}; THREADS=${THREADS:-2}
VARIANTS=${VARIANTS:-"base guide blend nudge always geometric alpha0.25 alpha0.5 alpha0.75"}; SWEEP=${SWEEP:-"0.2 0.6 0.8"}
vflags=(); for v in $VARIANTS; do vflags+=(-v "$v"); done
gflags=(); for g in $SWEEP; do gflags+=(--gamma "$g"); done
tasks=${1:-"humaneval gsm8k"}; pairs=${2:-"cross qwen"}
for task in $tasks; do
  prior=$([ "$task" = gsm8k ] && echo step-by-step || echo default)
  common=(--prior "$prior" --limit "$N" --subset-seed 0 --max-tokens "$T" --threads "$THREADS" --n-ctx 4096 --max-seqs 12 --out "pools/$task.db")
  for pair in $pairs; do
    if [ "$pair" = qwen ]; then base=qwen2.5-coder-1.5b; guide=qwen2.5-coder-0.5b; else base=gemma3-270m; guide=smollm2-135m; fi
    # the method and every variant at the default gamma = 0.4
    marginal blend "$task" --base $base --guide $guide "${vflags[@]}" "${common[@]}"
    # the gamma sweep of the method
    marginal blend "$task" --base $base --guide $guide -v blend "${gflags[@]}" "${common[@]}"
    # the reverse pair, the method only
    marginal blend "$task" --base $guide --guide $base -v blend "${common[@]}"
  done
  marginal analyze "pools/$task.db" --json "$task.json"
done
marginal report pools/*.db --html report.html
