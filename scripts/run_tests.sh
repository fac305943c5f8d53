#!/bin/bash
# Runs the test suite. Sets up .venv on the first run (see scripts/setup_env.sh).
# Usage: bash scripts/run_tests.sh [--fast] [pytest arguments...]
#   --fast  the daily tier: leaves out the tests marked slow (whole pipelines, msrun, kill -9,
#           graph compilations of training steps); without it, the whole suite (as CI runs it)
# The tests run in TEST_WORKERS processes (pytest-xdist; default 2, a module's tests in one
# process so that its fixtures are built once); TEST_WORKERS=0 runs them in this process.
set -e
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
workers=(-n "${TEST_WORKERS:-2}" --dist loadscope)
if [ "${TEST_WORKERS:-2}" == "0" ]; then workers=(-p no:xdist); fi
if [ "${1:-}" == "--fast" ]; then
    shift
    exec python -m pytest -q "${workers[@]}" -m "not slow" "$@" tests
fi
exec python -m pytest -q "${workers[@]}" "$@" tests
