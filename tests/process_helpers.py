"""Running a Python script in a fresh process, for settings that hold for a whole process
(graph-kernel fusion, a missing compiler)."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_python(script, **env):
    """Run `script` with this Python from the project root (extra environment `env`, MindSpore's
    log quiet); assert that it succeeded and return the CompletedProcess."""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=ROOT, env={**os.environ, "GLOG_v": "3", **env}, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result
