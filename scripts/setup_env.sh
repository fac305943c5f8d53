#!/bin/bash
# Creates .venv in the project root if absent, installs requirements.txt and requirements-test.txt
# into it (idempotent: a second run installs nothing), puts it first on PATH and sets up the rest as
# scripts/env.sh does. run_tests.sh and run_demo.sh source it, for a fresh machine;
# `source scripts/setup_env.sh` gives your shell the same environment. It leaves no shell option
# and no variable but PATH, PYTHONPATH and GLOG_v. The other scripts never make a .venv: they run
# in the environment they are started in (see scripts/env.sh).
__conv_tasnet_setup() {
    local root venv stamp want
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)" || return 1
    venv="$root/.venv"
    if [ ! -x "$venv/bin/python" ]; then
        echo "creating $venv"
        "${PYTHON:-python3}" -m venv "$venv" || return 1
    fi
    stamp="$venv/.requirements.sha"
    want="$(cat "$root/requirements.txt" "$root/requirements-test.txt" 2>/dev/null | sha1sum | cut -d' ' -f1)"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        "$venv/bin/python" -m pip install -q -r "$root/requirements.txt" \
            -r "$root/requirements-test.txt" || return 1
        echo "$want" > "$stamp"
    fi
    case ":$PATH:" in
        *":$venv/bin:"*) ;;
        *) export PATH="$venv/bin:$PATH" ;;
    esac
    source "$root/scripts/env.sh"
}
if __conv_tasnet_setup; then unset -f __conv_tasnet_setup; else unset -f __conv_tasnet_setup; false; fi
