#!/bin/bash
# Trains Conv-TasNet data-parallel on RANK_SIZE devices, in the background.
#
# Usage: bash scripts/run_distribute_train.sh [RANK_SIZE] [RANK_TABLE_FILE] [CONFIG_PATH] [flags...]
#   RANK_SIZE        number of devices (processes), >= 2
#   RANK_TABLE_FILE  HCCL rank table (JSON) on Ascend; "" or none: launch with msrun instead
#                    (CPU, GPU, or Ascend without a table)
#   CONFIG_PATH      recipe applied over default_config.yaml (default: default_config.yaml alone)
#   flags            any setting as --key=value, e.g. --device_target=GPU --data_dir=./data
#
# Every device trains on batch_size mixtures of its own share of the data; the gradients are
# averaged, so one step uses batch_size x RANK_SIZE mixtures at the configured lr. Every process
# uses the same seed. Rank 0 writes the checkpoints, curves and config.yaml to output_dir.
# Logs: with a rank table, output_dir/device<i>/train.log (each process runs in its own folder;
# for several servers, run the script on each with DEVICE_NUM (processes on this server, default
# RANK_SIZE), RANK_START (its first rank, default 0) and DEVICE_START (its first device index,
# default 0)); with msrun, output_dir/msrun/worker_<i>.log and the launcher's output_dir/msrun.log
# (MASTER_PORT: the scheduler's port, default a free one). WAIT=1 runs in the foreground.
# Runs the Python of the environment it is started in (PYTHON chooses another; see scripts/env.sh);
# msrun's workers run it through output_dir/msrun/bin/python.
set -u
USAGE="Usage: bash $0 [RANK_SIZE] [RANK_TABLE_FILE] [CONFIG_PATH] [--key=value ...]"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if [ "${1:-}" == "-h" ] || [ "${1:-}" == "--help" ]; then echo "$USAGE"; exit 0; fi
if [ $# -lt 1 ]; then echo "$USAGE" >&2; exit 1; fi
RANK_SIZE=$1
RANK_TABLE=${2:-}
CONFIG_PATH=${3:-$ROOT/default_config.yaml}
shift $(( $# < 3 ? $# : 3 ))
fail() { echo "error: $*" >&2; echo "$USAGE" >&2; exit 1; }
if ! [[ "$RANK_SIZE" =~ ^[0-9]+$ ]] || [ "$RANK_SIZE" -lt 2 ]; then
    fail "RANK_SIZE: expected a number of devices >= 2, got '$RANK_SIZE'" \
         "(one device: scripts/run_standalone_train.sh)"
fi
if [ "$RANK_TABLE" == "none" ]; then RANK_TABLE=""; fi
if [ -n "$RANK_TABLE" ] && [ ! -f "$RANK_TABLE" ]; then
    fail "RANK_TABLE_FILE: $RANK_TABLE: file not found (give \"\" to launch with msrun)"
fi
if [ ! -f "$CONFIG_PATH" ]; then fail "CONFIG_PATH: $CONFIG_PATH: config file not found"; fi
CONFIG_PATH=$(realpath -- "$CONFIG_PATH")
source "$ROOT/scripts/train_common.sh"
resolve_dirs "$CONFIG_PATH" "$@"
if [ -n "$RANK_TABLE" ] && [ "$DEVICE_TARGET" != "Ascend" ]; then
    fail "RANK_TABLE_FILE: an HCCL rank table is for Ascend, device_target is $DEVICE_TARGET" \
         "(give \"\" to launch with msrun)"
fi
require_data_dir
# Absolute paths: with a rank table every process runs in its own folder.
ARGS=(--config_path="$CONFIG_PATH" "$@" --output_dir="$OUTPUT_DIR" --data_dir="$DATA_DIR"
      --distribute=true)

if [ -n "$RANK_TABLE" ]; then
    export RANK_TABLE_FILE=$(realpath -- "$RANK_TABLE")
    export RANK_SIZE
    DEVICE_START=${DEVICE_START:-0}
    RANK_START=${RANK_START:-0}
    DEVICE_NUM=${DEVICE_NUM:-$RANK_SIZE}
    PIDS=()
    for ((i = 0; i < DEVICE_NUM; i++)); do
        export DEVICE_ID=$((DEVICE_START + i))
        export RANK_ID=$((RANK_START + i))
        RUN_DIR="$OUTPUT_DIR/device$DEVICE_ID"
        mkdir -p "$RUN_DIR"
        pushd "$RUN_DIR" > /dev/null
        echo "$ENVIRONMENT" >> "$RUN_DIR/train.log"
        nohup "$PYTHON" "$ROOT/train.py" --device_id="$DEVICE_ID" "${ARGS[@]}" \
            >> "$RUN_DIR/train.log" 2>&1 &
        PIDS+=($!)
        popd > /dev/null
        echo "rank $RANK_ID on device $DEVICE_ID (pid ${PIDS[-1]}); log: $RUN_DIR/train.log"
    done
    if [ "${WAIT:-0}" == "1" ]; then
        status=0
        for pid in "${PIDS[@]}"; do wait "$pid" || status=1; done
        exit $status
    fi
    exit 0
fi

PORT=${MASTER_PORT:-$(free_port)}
LOG="$OUTPUT_DIR/msrun.log"
# msrun starts its workers with the `python` found on PATH: make that one PYTHON.
WORKER_BIN="$OUTPUT_DIR/msrun/bin"
mkdir -p "$WORKER_BIN" || exit 1
printf '#!/bin/sh\nexec %q "$@"\n' "$(realpath -s -- "$(command -v "$PYTHON")")" \
    > "$WORKER_BIN/python" && chmod +x "$WORKER_BIN/python" || exit 1
PATH="$WORKER_BIN:$PATH" launch "$LOG" "$PYTHON" -m mindspore.parallel.cluster.run \
    --worker_num="$RANK_SIZE" --local_worker_num="$RANK_SIZE" \
    --master_port="$PORT" --log_dir="$OUTPUT_DIR/msrun" --join=True \
    "$ROOT/train.py" "${ARGS[@]}"
status=$?
if [ "${WAIT:-0}" == "1" ]; then
    if [ $status -eq 0 ]; then tail -n 3 "$LOG"; fi
    exit $status
fi
echo "training on $RANK_SIZE devices with msrun in the background (pid $LAUNCHED_PID)"
echo "logs: $OUTPUT_DIR/msrun/worker_<rank>.log; launcher: $LOG"
