#!/bin/bash
# Offline inference of an exported MINDIR over the test split: on Ascend 310 with the C++ app of
# ascend310_infer/, or with DEVICE_TARGET=CPU through MindSpore on CPU (the same .bin files, the
# same postprocessing). Steps: preprocess -> build -> infer -> postprocess, each with its log in
# INFER_DIR; acc.log ends with "Average SISNR improvement: X".
#
# Usage: bash scripts/run_infer_310.sh [MINDIR_PATH] [DATA_PATH] [NEED_PREPROCESS] [DEVICE_ID]
#   MINDIR_PATH      the model written by export.py (dynamic or fixed --input_length)
#   DATA_PATH        the folder written by preprocess.py; its split `test_name` is scored
#   NEED_PREPROCESS  y: write the .bin inputs anew; n: reuse INFER_DIR/preprocess_Result
#   DEVICE_ID        Ascend device index (default 0; not used on CPU)
# Environment:
#   DEVICE_TARGET    Ascend (default) or CPU
#   CONFIG_PATH      the configuration the model was trained with (default: default_config.yaml)
#   INFER_DIR        working folder for inputs, results and logs (default: ./infer_310)
#   STREAM           1: MINDIR_PATH is a streaming step (export.py --stream=true, its .json
#                    sidecar beside it); every test utterance is streamed through it hop by hop,
#                    the state fed back (default 0: an offline model)
#   SAVE_WAV         postprocess also writes the separated sources of this many utterances to
#                    INFER_DIR/wav (default: none)
#   PYTHON           the Python with MindSpore (default: that of the environment the script is
#                    started in; see scripts/env.sh)
#   ASCEND_HOME_PATH the Ascend toolkit (default: /usr/local/Ascend/ascend-toolkit/latest)
set -u

usage() {
    echo "Usage: bash $0 [MINDIR_PATH] [DATA_PATH] [NEED_PREPROCESS y|n] [DEVICE_ID]" >&2
    echo "       (DEVICE_TARGET=CPU runs the pipeline with MindSpore on CPU; see the script's header)" >&2
}
abs_path() {
    realpath -m -- "$1"
}

if [ $# -lt 3 ] || [ $# -gt 4 ]; then
    usage
    exit 1
fi
MINDIR_PATH=$(abs_path "$1")
DATA_PATH=$(abs_path "$2")
NEED_PREPROCESS=$3
DEVICE_ID=${4:-0}
DEVICE_TARGET=${DEVICE_TARGET:-Ascend}
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONFIG_PATH=$(abs_path "${CONFIG_PATH:-$ROOT/default_config.yaml}")
INFER_DIR=$(abs_path "${INFER_DIR:-./infer_310}")
source "$ROOT/scripts/env.sh" --script || exit 1

if [ ! -f "$MINDIR_PATH" ]; then echo "error: $MINDIR_PATH: MINDIR file not found" >&2; exit 1; fi
if [ ! -d "$DATA_PATH" ]; then echo "error: $DATA_PATH: data folder not found" >&2; exit 1; fi
if [ ! -f "$CONFIG_PATH" ]; then echo "error: $CONFIG_PATH: config file not found" >&2; exit 1; fi
case "$NEED_PREPROCESS" in
    y|Y) NEED_PREPROCESS=y ;;
    n|N) NEED_PREPROCESS=n ;;
    *) echo "error: NEED_PREPROCESS: expected y or n, got '$NEED_PREPROCESS'" >&2; exit 1 ;;
esac
if ! [[ "$DEVICE_ID" =~ ^[0-9]+$ ]]; then
    echo "error: DEVICE_ID: expected a device index, got '$DEVICE_ID'" >&2
    exit 1
fi
if [ "$DEVICE_TARGET" != "Ascend" ] && [ "$DEVICE_TARGET" != "CPU" ]; then
    echo "error: DEVICE_TARGET: expected Ascend or CPU, got '$DEVICE_TARGET'" >&2
    exit 1
fi
mkdir -p "$INFER_DIR" || exit 1
COMMON=(--config_path="$CONFIG_PATH" --mindir_path="$MINDIR_PATH" --infer_dir="$INFER_DIR")
STREAM=${STREAM:-0}
case "$STREAM" in
    0) ;;
    1) COMMON+=(--stream=true) ;;
    *) echo "error: STREAM: expected 0 or 1, got '$STREAM'" >&2; exit 1 ;;
esac
RESULT_PATH="$INFER_DIR/result_Files"
# The results of an earlier run go first: a run that fails must not leave a score that looks current.
rm -rf "$RESULT_PATH" "$INFER_DIR/acc.log" "$INFER_DIR/eval_results.csv" \
    "$INFER_DIR/eval_summary.json" || exit 1

# run_step NAME LOG COMMAND...: runs the command with its output in LOG; stops the script on failure
# with the step's own one-line error when it wrote one, else with the end of LOG.
run_step() {
    local name=$1 log=$2 last
    shift 2
    echo "$name ... (log: $log)"
    if ! "$@" > "$log" 2>&1; then
        last=$(grep '^error: ' "$log" | tail -n 1)
        if [ -n "$last" ]; then
            echo "error: $name: ${last#error: }" >&2
        else
            echo "error: $name failed; the end of $log:" >&2
            tail -n 5 "$log" >&2
        fi
        exit 1
    fi
}

if [ "$DEVICE_TARGET" == "Ascend" ]; then
    ASCEND_HOME_PATH=${ASCEND_HOME_PATH:-/usr/local/Ascend/ascend-toolkit/latest}
    if [ ! -d "$ASCEND_HOME_PATH" ]; then
        echo "error: no Ascend toolkit at $ASCEND_HOME_PATH (set ASCEND_HOME_PATH); on a host" \
             "without Ascend, run the same pipeline on CPU with DEVICE_TARGET=CPU" >&2
        exit 1
    fi
    if [ -f "$ASCEND_HOME_PATH/../set_env.sh" ]; then
        # shellcheck disable=SC1091
        source "$ASCEND_HOME_PATH/../set_env.sh"
    fi
fi

# After the toolkit's set_env.sh: an Ascend build of MindSpore needs it to import.
"$PYTHON" -c 'import sys
from src.model_utils.environment import environment_line
from src.model_utils.errors import run_main
print(run_main(environment_line, sys.argv[1]))' "$DEVICE_TARGET" || exit 2

if [ "$NEED_PREPROCESS" == "y" ]; then
    run_step "preprocess" "$INFER_DIR/preprocess.log" \
        "$PYTHON" "$ROOT/preprocess_310.py" "${COMMON[@]}" --data_dir="$DATA_PATH"
elif [ ! -f "$INFER_DIR/preprocess_Result/manifest.json" ]; then
    echo "error: $INFER_DIR/preprocess_Result: no preprocessed inputs; pass NEED_PREPROCESS=y" >&2
    exit 1
fi

# A .bin cut short would crash the inference app: its size is checked against the manifest first.
run_step "check inputs" "$INFER_DIR/check.log" \
    "$PYTHON" "$ROOT/preprocess_310.py" "${COMMON[@]}" --check_inputs_only=true

if [ "$DEVICE_TARGET" == "Ascend" ]; then
    MINDSPORE_PATH=$("$PYTHON" -c "import os, mindspore; print(os.path.dirname(mindspore.__file__))") \
        || exit 1
    run_step "build" "$INFER_DIR/build.log" bash "$ROOT/ascend310_infer/build.sh" "$MINDSPORE_PATH"
    STREAM_FLAGS=()
    if [ "$STREAM" == "1" ]; then
        # The app takes the look-ahead delay from the sidecar as a flag (it parses no JSON).
        DELAY=$("$PYTHON" -c 'import sys
from src.deploy.stream_export import read_sidecar
from src.model_utils.errors import run_main
print(run_main(lambda: read_sidecar(sys.argv[1])["delay_samples"]))' "$MINDIR_PATH") || exit 1
        STREAM_FLAGS=(--stream=true --stream_delay="$DELAY")
    fi
    run_step "infer" "$INFER_DIR/infer.log" "$ROOT/ascend310_infer/out/main" \
        --mindir_path="$MINDIR_PATH" --input_path="$INFER_DIR/preprocess_Result/00_data" \
        --output_path="$RESULT_PATH" --device_id="$DEVICE_ID" ${STREAM_FLAGS[@]+"${STREAM_FLAGS[@]}"}
else
    run_step "infer (MindSpore on CPU)" "$INFER_DIR/infer.log" \
        "$PYTHON" "$ROOT/infer_cpu.py" "${COMMON[@]}"
fi
tail -n 1 "$INFER_DIR/infer.log"

run_step "postprocess" "$INFER_DIR/acc.log" "$PYTHON" "$ROOT/postprocess.py" "${COMMON[@]}" \
    ${SAVE_WAV:+"--save_wav=$SAVE_WAV"}
cat "$INFER_DIR/acc.log"
