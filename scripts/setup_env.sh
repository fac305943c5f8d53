#!/bin/bash
# Creates .venv in the project root if absent and installs requirements.txt (and pytest when
# asked with "test"). Idempotent: a second run installs nothing new. Sourced by the other scripts.
set -e
PROJECT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$PROJECT_ROOT/.venv"
PYTHON_BIN="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
    echo "creating $VENV"
    "$PYTHON_BIN" -m venv "$VENV"
fi
STAMP="$VENV/.requirements.sha"
WANT="$(cat "$PROJECT_ROOT/requirements.txt" "$PROJECT_ROOT/requirements-test.txt" 2>/dev/null | sha1sum | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
    "$VENV/bin/python" -m pip install -q -r "$PROJECT_ROOT/requirements.txt" -r "$PROJECT_ROOT/requirements-test.txt"
    echo "$WANT" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
export PYTHONPATH="$PROJECT_ROOT${PYTHONPATH:+:$PYTHONPATH}"
# MindSpore's C++ warnings (GLOG) drown the logs of a CPU run; errors still show.
export GLOG_v="${GLOG_v:-3}"
