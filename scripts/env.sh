#!/bin/bash
# The environment of the project's scripts: the user's own Python and MindSpore (on Ascend or GPU,
# the build that matches CANN or CUDA), never one installed for them. Sourced by every script in
# scripts/; run_tests.sh and run_demo.sh first make the project's .venv with setup_env.sh.
#
#   source scripts/env.sh            exports PYTHONPATH (the project root first) and GLOG_v
#                                    (MindSpore's C++ log level, default 3: errors only) and
#                                    leaves nothing else in the shell: no option, no variable
#   source scripts/env.sh --script   for the scripts: also sets PYTHON, the interpreter they run,
#                                    and fails in one line when it is not one
# PYTHON: $PYTHON when set, else the python of the active virtualenv or conda environment, else
# python3.
__conv_tasnet_env() {
    local root
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)" || return 1
    case ":${PYTHONPATH:-}:" in
        *":$root:"*) ;;
        *) export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" ;;
    esac
    export GLOG_v="${GLOG_v:-3}"
    if [ "${1:-}" != "--script" ]; then return 0; fi
    if [ -z "${PYTHON:-}" ]; then
        if [ -n "${VIRTUAL_ENV:-}" ] && [ -x "$VIRTUAL_ENV/bin/python" ]; then
            PYTHON="$VIRTUAL_ENV/bin/python"
        elif [ -n "${CONDA_PREFIX:-}" ] && [ -x "$CONDA_PREFIX/bin/python" ]; then
            PYTHON="$CONDA_PREFIX/bin/python"
        else
            PYTHON=python3
        fi
    fi
    if ! command -v "$PYTHON" > /dev/null 2>&1; then
        echo "error: PYTHON: '$PYTHON' is not an interpreter on this machine (set PYTHON to the" \
             "Python that has MindSpore)" >&2
        return 1
    fi
}
if __conv_tasnet_env "$@"; then unset -f __conv_tasnet_env; else unset -f __conv_tasnet_env; false; fi
