#!/bin/bash
# Trains Conv-TasNet on one device, in the background.
#
# Usage: bash scripts/run_standalone_train.sh [DEVICE_ID] [CONFIG_PATH] [train.py flags...]
#   DEVICE_ID    device index (default 0)
#   CONFIG_PATH  recipe applied over default_config.yaml, e.g. configs/libri2mix_8k_clean.yaml
#                (default: default_config.yaml alone)
#   flags        any setting as --key=value, e.g. --device_target=GPU --data_dir=./data
#                --resume=auto
# Checkpoints, curves, config.yaml and the log train.log go to the configured output_dir.
# WAIT=1 runs in the foreground and returns train.py's exit status.
# Runs the Python of the environment it is started in (PYTHON chooses another; see scripts/env.sh).
set -u
USAGE="Usage: bash $0 [DEVICE_ID] [CONFIG_PATH] [--key=value ...]"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if [ "${1:-}" == "-h" ] || [ "${1:-}" == "--help" ]; then echo "$USAGE"; exit 0; fi
DEVICE_ID=${1:-0}
CONFIG_PATH=${2:-$ROOT/default_config.yaml}
shift $(( $# < 2 ? $# : 2 ))
if ! [[ "$DEVICE_ID" =~ ^[0-9]+$ ]]; then
    echo "error: DEVICE_ID: expected a device index (0, 1, ...), got '$DEVICE_ID'" >&2
    echo "$USAGE" >&2
    exit 1
fi
if [ ! -f "$CONFIG_PATH" ]; then
    echo "error: CONFIG_PATH: $CONFIG_PATH: config file not found" >&2
    echo "$USAGE" >&2
    exit 1
fi
CONFIG_PATH=$(realpath -- "$CONFIG_PATH")
source "$ROOT/scripts/train_common.sh"
resolve_dirs "$CONFIG_PATH" "$@"
require_data_dir

LOG="$OUTPUT_DIR/train.log"
launch "$LOG" "$PYTHON" "$ROOT/train.py" --config_path="$CONFIG_PATH" --device_id="$DEVICE_ID" \
    --distribute=false "$@"
status=$?
if [ "${WAIT:-0}" == "1" ]; then
    if [ $status -eq 0 ]; then tail -n 3 "$LOG"; fi
    exit $status
fi
echo "training on device $DEVICE_ID in the background (pid $LAUNCHED_PID); log: $LOG"
