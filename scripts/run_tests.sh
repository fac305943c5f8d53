#!/bin/bash
# Runs the whole test suite. Sets up .venv on the first run (see scripts/setup_env.sh).
# Usage: bash scripts/run_tests.sh [pytest arguments...]
set -e
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/setup_env.sh"
cd "$PROJECT_ROOT"
exec python -m pytest -q "$@" tests
