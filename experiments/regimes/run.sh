#!/usr/bin/env bash
# Generate (or resume and grow) the two GSM8K pools of the regime study, in the background at low
# priority. Each command resumes: rerun it and it adds only the missing samples, each with the seed it
# would have had. THREADS (default 1 per pool) sets llama.cpp's threads, SLOTS (32) the sequences decoded
# together (continuous batching); LIMIT_A / LIMIT_B / LIMIT_H the problems; POOLS which pools run (a: GSM8K
# 0.5B, b: GSM8K 1.5B, h: HumanEval 0.5B, issue 12 section 5, meant for after the GSM8K pools).
#   bash experiments/regimes/run.sh            # pools a and b, logs in runs/regimes-*.log
#   POOLS=h THREADS=2 bash experiments/regimes/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
export MARGINAL_DATA="${MARGINAL_DATA:-$(cd .. && pwd)/shared/data}"
THREADS="${THREADS:-1}"
SLOTS="${SLOTS:-32}"
LIMIT_A="${LIMIT_A:-150}"
LIMIT_B="${LIMIT_B:-60}"
LIMIT_H="${LIMIT_H:-60}"
POOLS="${POOLS:-a b}"
DIR=experiments/regimes/pools
mkdir -p runs "$DIR"
# Pool B grows the study's GSM8K pool (same seed and settings, the first N test problems).
[ -f "$DIR/gsm8k-qwen15.db" ] || cp experiments/study/pools/gsm8k-qwen15.db "$DIR/gsm8k-qwen15.db"
# Pool A: Qwen2.5-Coder-0.5B, a seeded random subset, eight standard priors and the two weak ones.
A_PRIORS=default,step-by-step,teacher,checker,concise,plan-solve,verify,fewshot-a,answer-only,fewshot-wrong
run() { nice -n 19 marginal run "$@" --seed 0 --batch-samples 64 --slots "$SLOTS" --threads "$THREADS"; }
case " $POOLS " in *" a "*)
  run gsm8k --model qwen2.5-coder-0.5b --priors "$A_PRIORS" --samples 8 --limit "$LIMIT_A" --subset-seed 0 \
    --max-tokens 384 --out "$DIR/gsm8k-qwen05.db" > runs/regimes-a.log 2>&1 &
esac
case " $POOLS " in *" b "*)
  run gsm8k --model qwen2.5-coder-1.5b --priors 8 --samples 8 --limit "$LIMIT_B" --max-tokens 400 \
    --out "$DIR/gsm8k-qwen15.db" > runs/regimes-b.log 2>&1 &
esac
# HumanEval: a new pool (640 tokens: 384 truncated the docstring-echoing answers, so the study's pool cannot grow)
case " $POOLS " in *" h "*)
  run humaneval --model qwen2.5-coder-0.5b --priors 8 --samples 8 --limit "$LIMIT_H" --subset-seed 0 \
    --max-tokens 640 --out "$DIR/humaneval-qwen05.db" > runs/regimes-h.log 2>&1 &
esac
wait
