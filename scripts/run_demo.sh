#!/bin/bash
# The whole pipeline on a generated demo LibriMix, on CPU, in minutes:
#   1. a synthetic mini LibriMix in the real layout (src/data/demo_data.py)
#   2. preprocess.py: JSON lists + MindRecord
#   3. scripts/run_standalone_train.sh: a small model (configs/demo_cpu.yaml), with validation,
#      checkpoints and the curve plot
#   4. eval.py: SI-SNRi and SDRi on the whole test utterances
#   5. export.py (MINDIR) and scripts/run_infer_310.sh's CPU path on it
#   6. separate.py on one test mixture: WAVs and a PNG
# Every step is the project's own entry point with config overrides.
#
# Usage: bash scripts/run_demo.sh [DEMO_DIR]
#   DEMO_DIR   where everything is written (default: ./demo); a finished step is not redone when
#              its output is there, so a second run only repeats what is missing.
# Environment:
#   DEMO_SEED    seed of the data and the training (default 0)
#   DEMO_EPOCHS  training epochs (default: the recipe's)
#   DEMO_SIZES   mixtures in train,dev,test (default 200,30,30)
#   DEMO_CONFIG  recipe (default configs/demo_cpu.yaml)
#   DEMO_FLAGS   extra --key=value flags for training, evaluation, export and separation
set -eu
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ "${1:-}" == "-h" ] || [ "${1:-}" == "--help" ]; then
    sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi
DEMO_DIR="$(realpath -m -- "${1:-./demo}")"
SEED=${DEMO_SEED:-0}
SIZES=${DEMO_SIZES:-200,30,30}
CONFIG="$(realpath -- "${DEMO_CONFIG:-$ROOT/configs/demo_cpu.yaml}")"
read -r -a FLAGS <<< "${DEMO_FLAGS:-}"
if [ -n "${DEMO_EPOCHS:-}" ]; then FLAGS+=("--epochs=$DEMO_EPOCHS"); fi

source "$ROOT/scripts/setup_env.sh"
# The steps run by the other scripts use the demo's .venv too, whatever PYTHON was before.
export PYTHON="$ROOT/.venv/bin/python"
cd "$ROOT"
mkdir -p "$DEMO_DIR"
declare -a STEP_NAMES STEP_SECONDS
step() {  # step NAME COMMAND...: run a step, time it, stop the demo when it fails
    local name=$1 start=$SECONDS
    shift
    echo
    echo "=== $name"
    if ! "$@"; then
        echo "demo stopped: step '$name' failed (see the messages above)" >&2
        exit 1
    fi
    STEP_NAMES+=("$name")
    STEP_SECONDS+=($((SECONDS - start)))
}

LIBRIMIX="$DEMO_DIR/librimix/Libri2Mix/wav8k/min"
DATA="$DEMO_DIR/data"
TRAIN="$DEMO_DIR/train"
EVAL="$DEMO_DIR/eval"
EXPORT="$DEMO_DIR/export"
INFER="$DEMO_DIR/infer"
SEPARATED="$DEMO_DIR/separated"

make_data() {
    if [ -f "$LIBRIMIX/demo_librimix.json" ]; then echo "reusing $LIBRIMIX"; return; fi
    "$PYTHON" make_demo_data.py --out_dir "$DEMO_DIR/librimix" --seed "$SEED" --sizes "$SIZES" \
        --cross_gender
}
run_preprocess() {
    if [ -f "$DATA/test/info.json" ]; then echo "reusing $DATA"; return; fi
    "$PYTHON" preprocess.py --config_path="$CONFIG" --in_dir="$LIBRIMIX" --out_dir="$DATA" \
        --splits="[train-360,dev,test]"
}
finished() {  # finished DIR: the step writing DIR completed in an earlier run (DIR/done)
    if [ -f "$1/done" ]; then echo "reusing $1"; return 0; fi
    return 1
}
run_train() {
    [ -f "$TRAIN/conv_tasnet-best.ckpt" ] && finished "$TRAIN" && return
    WAIT=1 bash scripts/run_standalone_train.sh 0 "$CONFIG" --data_dir="$DATA" \
        --output_dir="$TRAIN" --seed="$SEED" --resume=auto "${FLAGS[@]}"
    touch "$TRAIN/done"
}
run_eval() {
    finished "$EVAL" && return
    "$PYTHON" eval.py --config_path="$TRAIN/config.yaml" --ckpt_file="$TRAIN/conv_tasnet-best.ckpt" \
        --data_dir="$DATA" --output_dir="$EVAL" --save_wav=2 "${FLAGS[@]}"
    touch "$EVAL/done"
}
run_export() {
    mkdir -p "$EXPORT"
    "$PYTHON" export.py --config_path="$TRAIN/config.yaml" \
        --ckpt_file="$TRAIN/conv_tasnet-best.ckpt" --file_name="$EXPORT/conv_tasnet" "${FLAGS[@]}"
}
run_infer() {
    DEVICE_TARGET=CPU CONFIG_PATH="$TRAIN/config.yaml" INFER_DIR="$INFER" \
        bash scripts/run_infer_310.sh "$EXPORT/conv_tasnet.mindir" "$DATA" y 0
}
run_export_and_infer() {
    finished "$INFER" && return
    run_export && run_infer && touch "$INFER/done"
}
run_separate() {
    finished "$SEPARATED" && return
    local mixture
    mixture=$(ls "$LIBRIMIX/test/mix_clean/"*.wav | head -n 1)
    "$PYTHON" separate.py --config_path="$TRAIN/config.yaml" \
        --model_path="$TRAIN/conv_tasnet-best.ckpt" --input="$mixture" \
        --output_dir="$SEPARATED" --plot=true "${FLAGS[@]}"
    touch "$SEPARATED/done"
}

step "1. demo LibriMix" make_data
step "2. preprocess" run_preprocess
step "3. train" run_train
step "4. evaluate" run_eval
step "5. export + 310 pipeline (CPU)" run_export_and_infer
step "6. separate" run_separate

# The summary is built in full, then written once and shown once (appending to the file while
# reading it showed its heading twice).
SCORES=$("$PYTHON" - "$EVAL/eval_test/eval_summary.json" "$INFER/acc.log" <<'EOF'
import json, sys
from src.evaluation.evaluate import summary_line
print("eval.py on the test split: " + summary_line(json.load(open(sys.argv[1]))))
print("310 pipeline (CPU): " + open(sys.argv[2]).read().strip().splitlines()[-1])
EOF
)
{
    echo "=== demo summary"
    echo "$SCORES"
    echo "outputs:"
    echo "  demo LibriMix      $LIBRIMIX"
    echo "  JSON + MindRecord  $DATA"
    echo "  checkpoints, log, curves  $TRAIN (train.log, curves.png)"
    echo "  evaluation         $EVAL/eval_test (eval_results.csv, eval_summary.json, wav/)"
    echo "  MINDIR             $EXPORT/conv_tasnet.mindir"
    echo "  310 pipeline logs  $INFER (acc.log)"
    echo "  separated mixture  $SEPARATED"
    echo "time per step:"
    for i in "${!STEP_NAMES[@]}"; do
        printf '  %-34s %4d s\n' "${STEP_NAMES[$i]}" "${STEP_SECONDS[$i]}"
    done
} > "$DEMO_DIR/.summary.txt.tmp"
mv "$DEMO_DIR/.summary.txt.tmp" "$DEMO_DIR/summary.txt"
echo
cat "$DEMO_DIR/summary.txt"
