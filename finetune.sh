#!/usr/bin/env bash
# Prompt-based fine-tuning with back-propagation (Adam): the paper's FT rows.
#   TASK=SST-2 K=16 SEED=42 BS=8 LR=1e-5 MODEL=roberta-large bash finetune.sh [extra run.py flags]
set -euo pipefail
cd "$(dirname "$0")"
TASK=${TASK:-SST-2}
K=${K:-16}
SEED=${SEED:-42}
BS=${BS:-8}
LR=${LR:-1e-5}
STEP=${STEP:-1000}
EVAL_STEP=${EVAL_STEP:-100}
MODEL=${MODEL:-roberta-large}
EXTRA_TAG=${EXTRA_TAG:-ft}
MODEL_NAME=${MODEL%/}; MODEL_NAME=${MODEL_NAME##*/}
TAG=${TAG:-k$K-$MODEL_NAME-$EXTRA_TAG}
GRID_TAG=seed$SEED-bs$BS-lr$LR-step$STEP-evalstep$EVAL_STEP
echo "TASK=$TASK K=$K SEED=$SEED BS=$BS LR=$LR STEP=$STEP EVAL_STEP=$EVAL_STEP MODEL=$MODEL TAG=$TAG"

TYPE=prompt GRID_TAG=$GRID_TAG TAG=$TAG STEPS=$STEP TASK=$TASK SEED=$SEED MODEL=$MODEL K=$K \
    bash run_fewshot.sh --per_device_train_batch_size "$BS" --learning_rate "$LR" \
    --eval_steps "$EVAL_STEP" "$@"
