#!/usr/bin/env bash
# Offline demo: zero-shot vs MeZO on the uci-sentiment task with the embedded splade-tiny model.
# One data seed (SEED=42 by default); a few minutes on 2 CPU cores. Appends two records to ./log.
set -euo pipefail
cd "$(dirname "$0")/.."
SEED=${SEED:-42}
COMMON=(--per_device_eval_batch_size 64 --disable_tqdm true)
export MODEL=splade-tiny TASK=uci-sentiment SEED
echo "== zero-shot (no training)"
TAG=demo-zero-shot bash finetune.sh --no_train "${COMMON[@]}" | grep -E '^(dev|test):'
echo "== MeZO: ${STEP:=200} steps, batch ${BS:=16}, lr ${LR:=1e-4}, eps ${EPS:=1e-3}"
TAG=demo-mezo STEP=$STEP EVAL_STEP=$((STEP / 10)) BS=$BS LR=$LR EPS=$EPS bash mezo.sh "${COMMON[@]}" \
    | grep -E '^(dev|test):|trainable'
echo "== summary (tools/gather_result.py)"
for tag in demo-zero-shot demo-mezo; do
    python tools/gather_result.py --condition "{'task_name': 'uci-sentiment', 'tag': '$tag'}" | grep -E '^(Tag|mean)'
done
