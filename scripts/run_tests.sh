#!/bin/bash
# Runs the test suite. Sets up .venv on the first run (see scripts/setup_env.sh).
# Usage: bash scripts/run_tests.sh [--fast] [pytest arguments...]
#   --fast  the daily tier: leaves out the tests marked slow (whole pipelines, msrun, kill -9,
#           graph compilations of training steps); without it, the whole suite (as CI runs it)
set -e
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
if [ "${1:-}" == "--fast" ]; then
    shift
    exec python -m pytest -q -m "not slow" "$@" tests
fi
exec python -m pytest -q "$@" tests
