#!/usr/bin/env bash
# Prompt-based fine-tuning with MeZO (forward passes only): the paper's MeZO rows.
#   TASK=SST-2 K=16 SEED=42 BS=64 LR=1e-6 EPS=1e-3 MODEL=roberta-large bash mezo.sh [extra run.py flags]
set -euo pipefail
cd "$(dirname "$0")"
TASK=${TASK:-SST-2}
K=${K:-16}
SEED=${SEED:-42}
BS=${BS:-64}
LR=${LR:-1e-6}
EPS=${EPS:-1e-3}
WD=${WD:-0}
STEP=${STEP:-100000}
EVAL_STEP=${EVAL_STEP:-10000}
MODEL=${MODEL:-roberta-large}
EXTRA_TAG=${EXTRA_TAG:-ft}
MODEL_NAME=${MODEL%/}; MODEL_NAME=${MODEL_NAME##*/}
TAG=${TAG:-k$K-$MODEL_NAME-mezo-$EXTRA_TAG}
GRID_TAG=seed$SEED-bs$BS-lr$LR-eps$EPS-wd$WD-step$STEP-evalstep$EVAL_STEP
echo "TASK=$TASK K=$K SEED=$SEED BS=$BS LR=$LR EPS=$EPS WD=$WD STEP=$STEP EVAL_STEP=$EVAL_STEP MODEL=$MODEL TAG=$TAG"

TYPE=prompt GRID_TAG=$GRID_TAG TAG=$TAG STEPS=$STEP TASK=$TASK SEED=$SEED MODEL=$MODEL K=$K \
    bash run_fewshot.sh --per_device_train_batch_size "$BS" --learning_rate "$LR" --eval_steps "$EVAL_STEP" \
    --weight_decay "$WD" --zero_order_eps "$EPS" --zero_order_optim --lr_scheduler_type constant \
    --optimizer sgd --efficient_zero_order "$@"
