#!/bin/bash
# Shared by run_standalone_train.sh, run_distribute_train.sh and run_eval.sh (sourced, not run):
# the user's environment (scripts/env.sh: PYTHON, PYTHONPATH, GLOG_v) and the functions below.

source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/env.sh" --script || exit 1

# resolve_dirs CONFIG_PATH [flags...]: checks that PYTHON imports MindSpore and that the
# configuration (the recipe and the flags applied) is valid, names and ranges, each failure one
# line; then sets OUTPUT_DIR and DATA_DIR to the absolute paths it gives, DEVICE_TARGET, and
# ENVIRONMENT, the line naming the MindSpore version, device target and interpreter, which it
# prints first.
resolve_dirs() {
    local resolved
    resolved=$("$PYTHON" -c '
import os, sys
from src.model_utils.errors import run_main

def main():
    from src.model_utils.environment import mindspore_version
    mindspore_version()  # before the configuration: a missing MindSpore is the first thing to fix
    from src.model_utils.config import load_config
    from src.model_utils.environment import environment_line
    cfg = load_config(sys.argv[1:])
    print(os.path.abspath(cfg.output_dir))
    print(os.path.abspath(cfg.data_dir))
    print(cfg.device_target)
    print(environment_line(cfg.device_target))

run_main(main)' --config_path="$1" "${@:2}") || exit 2
    OUTPUT_DIR=$(sed -n 1p <<< "$resolved")
    DATA_DIR=$(sed -n 2p <<< "$resolved")
    DEVICE_TARGET=$(sed -n 3p <<< "$resolved")
    ENVIRONMENT=$(sed -n 4p <<< "$resolved")
    echo "$ENVIRONMENT"
}

# require_data_dir: the data_dir of the configuration must exist before a run goes to the
# background (a one-line error instead of a log to look into).
require_data_dir() {
    if [ ! -d "$DATA_DIR" ]; then
        echo "error: data_dir: $DATA_DIR: folder not found (expected the output of preprocess.py;" \
             "give --data_dir)" >&2
        exit 2
    fi
}

# free_port: a TCP port nobody listens on now (for msrun's scheduler).
free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])'
}

# launch LOG command...: runs the command with its output appended to LOG (a resumed run continues
# the log of the run it resumes), after the ENVIRONMENT line; in the background, or in the
# foreground when WAIT=1 (then returns its exit status, and on failure prints the last line of
# LOG, the command's one-line error, on stderr).
launch() {
    local log=$1 status
    shift
    mkdir -p "$(dirname "$log")" || exit 1
    echo "$ENVIRONMENT" >> "$log"
    if [ "${WAIT:-0}" == "1" ]; then
        "$@" >> "$log" 2>&1
        status=$?
        if [ $status -ne 0 ]; then
            echo "$(tail -n 1 "$log") (log: $log)" >&2
        fi
        return $status
    fi
    nohup "$@" >> "$log" 2>&1 &
    LAUNCHED_PID=$!
}
