#!/bin/bash
# Scores a checkpoint on the whole utterances of the test split (SI-SNRi, SDRi), in the background.
#
# Usage: bash scripts/run_eval.sh [CKPT_FILE] [DATA_PATH] [CONFIG_PATH] [DEVICE_ID] [eval.py flags...]
#   CKPT_FILE    the checkpoint to score
#   DATA_PATH    the folder written by preprocess.py
#   CONFIG_PATH  the config it was trained with (<output_dir>/config.yaml; default: default_config.yaml)
#   DEVICE_ID    device index (default 0)
# Results: <output_dir>/eval_<test_name>/eval_results.csv and eval_summary.json; the log is
# <output_dir>/eval_<checkpoint name>.log (a stopped run resumes and continues it).
# WAIT=1 runs in the foreground and returns eval.py's exit status.
# Runs the Python of the environment it is started in (PYTHON chooses another; see scripts/env.sh).
set -u

if [ $# -lt 2 ]; then
    echo "Usage: bash $0 [CKPT_FILE] [DATA_PATH] [CONFIG_PATH] [DEVICE_ID] [eval.py flags...]" >&2
    exit 1
fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CKPT_FILE=$(realpath -m -- "$1")
DATA_PATH=$(realpath -m -- "$2")
CONFIG_PATH=$(realpath -m -- "${3:-$ROOT/default_config.yaml}")
DEVICE_ID=${4:-0}
shift $(( $# < 4 ? $# : 4 ))
if [ ! -f "$CKPT_FILE" ]; then echo "error: $CKPT_FILE: checkpoint not found" >&2; exit 1; fi
if [ ! -d "$DATA_PATH" ]; then echo "error: $DATA_PATH: data folder not found" >&2; exit 1; fi
if [ ! -f "$CONFIG_PATH" ]; then echo "error: $CONFIG_PATH: config file not found" >&2; exit 1; fi
if ! [[ "$DEVICE_ID" =~ ^[0-9]+$ ]]; then
    echo "error: DEVICE_ID: expected a device index, got '$DEVICE_ID'" >&2
    exit 1
fi
source "$ROOT/scripts/train_common.sh"
resolve_dirs "$CONFIG_PATH" "$@"

NAME=$(basename "$CKPT_FILE")
LOG="$OUTPUT_DIR/eval_${NAME%.*}.log"
launch "$LOG" "$PYTHON" "$ROOT/eval.py" --config_path="$CONFIG_PATH" --ckpt_file="$CKPT_FILE" \
    --data_dir="$DATA_PATH" --device_id="$DEVICE_ID" "$@"
status=$?
if [ "${WAIT:-0}" == "1" ]; then
    if [ $status -eq 0 ]; then tail -n 2 "$LOG"; fi
    exit $status
fi
echo "evaluating in the background (pid $LAUNCHED_PID); log: $LOG"
