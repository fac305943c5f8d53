#!/bin/bash
# Shared by run_standalone_train.sh and run_distribute_train.sh (sourced, not run).

source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/setup_env.sh"

# resolve_dirs CONFIG_PATH [flags...]: sets OUTPUT_DIR and DATA_DIR to the absolute paths that the
# configuration gives (the recipe and the flags applied), and DEVICE_TARGET; a bad config is a
# one-line error.
resolve_dirs() {
    local resolved
    resolved=$(python -c '
import os, sys
from src.model_utils.errors import run_main
from src.model_utils.config import load_config

def main():
    cfg = load_config(sys.argv[1:])
    print(os.path.abspath(cfg.output_dir))
    print(os.path.abspath(cfg.data_dir))
    print(cfg.device_target)

run_main(main)' --config_path="$1" "${@:2}") || exit 2
    OUTPUT_DIR=$(sed -n 1p <<< "$resolved")
    DATA_DIR=$(sed -n 2p <<< "$resolved")
    DEVICE_TARGET=$(sed -n 3p <<< "$resolved")
}

# free_port: a TCP port nobody listens on now (for msrun's scheduler).
free_port() {
    python -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])'
}

# launch LOG command...: runs the command with its output appended to LOG (a resumed run continues
# the log of the run it resumes); in the background, or in the foreground when WAIT=1 (then returns
# its exit status).
launch() {
    local log=$1
    shift
    mkdir -p "$(dirname "$log")"
    if [ "${WAIT:-0}" == "1" ]; then
        "$@" >> "$log" 2>&1
        return $?
    fi
    nohup "$@" >> "$log" 2>&1 &
    LAUNCHED_PID=$!
}
