#!/bin/bash
# Runs the whole test suite. Sets up .venv on the first run (see scripts/setup_env.sh).
# Usage: bash scripts/run_tests.sh [pytest arguments...]
set -e
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
exec python -m pytest -q "$@" tests
