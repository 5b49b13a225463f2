#!/usr/bin/env bash
# One prompt-based few-shot run of run.py: picks the task's template and label words, the data
# split TASK/K-SEED, and an output folder named after TAG and GRID_TAG. Extra arguments are
# passed to run.py last, so they override the defaults here. Called by finetune.sh and mezo.sh.
set -euo pipefail
cd "$(dirname "$0")"

TASK=${TASK:-SST-2}
SEED=${SEED:-13}
K=${K:-16}
MODEL=${MODEL:-roberta-large}
TYPE=${TYPE:-prompt}
TRAINER=${TRAINER:-standard}
TAG=${TAG:-}
GRID_TAG=${GRID_TAG:-}
NUM_GPU=${NUM_GPU:-1}
OPT=${OPT:-adam}
STEPS=${STEPS:-1000}
PYTHON=${PYTHON:-python}

SENT='*cls**sent_0*_It_was*mask*.*sep+*'
NLI='*cls**sent-_0*?*mask*,*+sentl_1**sep+*'
PARA='*cls**sent_0**mask*,*+sentl_1**sep+*'
TASK_EXTRA=()
case $TASK in
    SST-2) TEMPLATE=$SENT; MAPPING="{'0':'terrible','1':'great'}" ;;
    sst-5) TEMPLATE=$SENT; MAPPING="{0:'terrible',1:'bad',2:'okay',3:'good',4:'great'}"
           TASK_EXTRA=(--first_sent_limit 110 --other_sent_limit 20 --double_demo) ;;
    mr|cr) TEMPLATE=$SENT; MAPPING="{0:'terrible',1:'great'}"
           TASK_EXTRA=(--first_sent_limit 110 --other_sent_limit 50) ;;
    mpqa)  TEMPLATE=$SENT; MAPPING="{0:'terrible',1:'great'}"; TASK_EXTRA=(--first_sent_limit 110) ;;
    subj)  TEMPLATE='*cls**sent_0*_This_is*mask*.*sep+*'; MAPPING="{0:'subjective',1:'objective'}"
           TASK_EXTRA=(--first_sent_limit 110 --other_sent_limit 50) ;;
    CoLA)  TEMPLATE='*cls**sent_0*_This_is*mask*.*sep+*'; MAPPING="{'0':'incorrect','1':'correct'}" ;;
    trec)  TEMPLATE='*cls**mask*:*+sent_0**sep+*'
           MAPPING="{0:'Description',1:'Entity',2:'Expression',3:'Human',4:'Location',5:'Number'}"
           TASK_EXTRA=(--first_sent_limit 110) ;;
    MNLI)  TEMPLATE=$NLI; MAPPING="{'contradiction':'No','entailment':'Yes','neutral':'Maybe'}"
           TASK_EXTRA=(--max_seq_len 256 --first_sent_limit 240) ;;
    SNLI)  TEMPLATE=$NLI; MAPPING="{'contradiction':'No','entailment':'Yes','neutral':'Maybe'}"
           TASK_EXTRA=(--max_seq_len 256 --num_sample 4) ;;
    RTE)   TEMPLATE=$NLI; MAPPING="{'not_entailment':'No','entailment':'Yes'}"
           TASK_EXTRA=(--max_seq_len 256 --first_sent_limit 240) ;;
    QNLI)  TEMPLATE=$NLI; MAPPING="{'not_entailment':'No','entailment':'Yes'}" ;;
    MRPC|QQP) TEMPLATE=$PARA; MAPPING="{'0':'No','1':'Yes'}" ;;
    uci-sentiment) TEMPLATE=$SENT; MAPPING="{0:'terrible',1:'great'}"; TASK_EXTRA=(--first_sent_limit 110) ;;
    *) echo "run_fewshot.sh: TASK=$TASK has no template/mapping entry (known: SST-2 sst-5 mr cr mpqa subj CoLA trec MNLI SNLI RTE QNLI MRPC QQP uci-sentiment)" >&2; exit 2 ;;
esac

MODEL_NAME=${MODEL%/}; MODEL_NAME=${MODEL_NAME##*/}
OUTPUT_DIR=result/$TASK-$MODEL_NAME-$TYPE-$TRAINER-$TAG$GRID_TAG/$K-$SEED
DATA_DIR=data/k-shot-1k-test/$TASK/$K-$SEED

ARGS=(--model_name_or_path "$MODEL" --few_shot_type "$TYPE" --task_name "$TASK"
      --template "$TEMPLATE" --mapping "$MAPPING" --data_dir "$DATA_DIR"
      --overwrite_output_dir --output_dir "$OUTPUT_DIR" --num_k "$K" --tag "$TAG"
      --max_seq_length 128 --seed "$SEED" --do_eval --do_predict --do_train
      --trainer "$TRAINER" --optimizer "$OPT" --max_steps "$STEPS" --logging_steps 10
      --per_device_eval_batch_size 4 --evaluate_during_training
      "${TASK_EXTRA[@]}" "$@")

status=0
if [ "$NUM_GPU" -gt 1 ]; then
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}
    PORT=${MASTER_PORT:-$((20000 + RANDOM % 20000))}
    torchrun --nproc_per_node "$NUM_GPU" --master_port "$PORT" run.py "${ARGS[@]}" || status=$?
else
    "$PYTHON" run.py "${ARGS[@]}" || status=$?
fi
# Only the record in ./log persists, as in the reference; KEEP_OUTPUT=1 keeps the folder.
if [ "${KEEP_OUTPUT:-0}" != 1 ]; then
    rm -rf "$OUTPUT_DIR"
    rmdir "$(dirname "$OUTPUT_DIR")" result 2>/dev/null || true
fi
exit $status
