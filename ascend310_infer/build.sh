#!/bin/bash
# Builds ascend310_infer/out/main against the installed MindSpore (Ascend build).
# Usage: bash build.sh [MINDSPORE_PATH]   (default: the mindspore package of `python3`)
set -e
cd "$(dirname "${BASH_SOURCE[0]}")"
MINDSPORE_PATH=${1:-$(python3 -c "import os, mindspore; print(os.path.dirname(mindspore.__file__))")}
rm -rf out
mkdir out
cd out
cmake .. -DMINDSPORE_PATH="$MINDSPORE_PATH"
make
