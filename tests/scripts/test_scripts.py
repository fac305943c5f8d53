"""The shell scripts run in the user's environment: the Python named by PYTHON (else the active
one), no .venv made for them, MindSpore's version first in the log, one-line errors for a missing
MindSpore, a missing data_dir or a value out of range; sourcing a helper leaves the shell as it
was, but for PATH, PYTHONPATH and GLOG_v."""
import os
import shutil
import subprocess
import sys

import pytest
from helpers import ROOT

DEMO_RECIPE = os.path.join("configs", "demo_cpu.yaml")


@pytest.fixture
def project(tmp_path):
    """A copy of the project without its .venv, so that a .venv made by a script would show."""
    copy = tmp_path / "project"
    copy.mkdir()
    for name in os.listdir(ROOT):
        path = os.path.join(ROOT, name)
        if name in ("src", "scripts", "configs"):
            shutil.copytree(path, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif name.endswith((".py", ".yaml", ".txt")) and os.path.isfile(path):
            shutil.copy(path, copy / name)
    return copy


def wrapper(tmp_path, name, extra=""):
    """An interpreter for PYTHON: a script that records its calls, then runs this Python."""
    calls = tmp_path / f"{name}.calls"
    path = tmp_path / name
    path.write_text(f'#!/bin/sh\necho "$@" >> "{calls}"\n{extra}exec "{sys.executable}" "$@"\n')
    path.chmod(0o755)
    return str(path), calls


def no_mindspore(tmp_path):
    """A PYTHON whose `import mindspore` fails as a missing library does."""
    fake = tmp_path / "fake" / "mindspore"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        'raise ImportError("libmindspore_backend.so: cannot open shared object file")\n')
    return wrapper(tmp_path, "python-without-mindspore",
                   f'export PYTHONPATH="{fake.parent}:$PYTHONPATH"\n')[0]


def user_env(**extra):
    """The environment of a user's shell: no project variables, no virtualenv activated."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHON", "PYTHONPATH", "VIRTUAL_ENV", "CONDA_PREFIX", "WAIT", "GLOG_v")}
    return {**env, **extra}


def run_script(project, name, *args, **env):
    return subprocess.run(["bash", str(project / "scripts" / name), *map(str, args)],
                          capture_output=True, text=True, cwd=project, env=user_env(**env),
                          timeout=300)


@pytest.mark.slow
def test_python_of_the_user_used_and_no_venv_made(project, tmp_path):
    python, calls = wrapper(tmp_path, "users-python")
    missing = tmp_path / "no-data"
    proc = run_script(project, "run_standalone_train.sh", 0, project / DEMO_RECIPE,
                      f"--data_dir={missing}", f"--output_dir={tmp_path / 'out'}",
                      PYTHON=python, WAIT="1")
    assert proc.returncode == 2
    import mindspore
    assert proc.stdout.splitlines()[0] == \
        f"MindSpore {mindspore.__version__}, device_target CPU, python {sys.executable}"
    assert proc.stderr.splitlines() == [
        f"error: data_dir: {missing}: folder not found (expected the output of preprocess.py; "
        "give --data_dir)"]
    assert calls.read_text().strip()                       # the user's interpreter ran
    assert not (project / ".venv").exists()
    assert not (tmp_path / "out").exists()                 # refused before anything was written


@pytest.mark.slow
def test_failure_in_the_foreground_is_one_line_with_the_log(project, tmp_path):
    python, _ = wrapper(tmp_path, "users-python")
    data = tmp_path / "empty-data"
    data.mkdir()
    out = tmp_path / "out"
    proc = run_script(project, "run_standalone_train.sh", 0, project / DEMO_RECIPE,
                      f"--data_dir={data}", f"--output_dir={out}", PYTHON=python, WAIT="1")
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {data}/train-360: no preprocessed")
    assert lines[0].endswith(f"(log: {out}/train.log)")
    log = (out / "train.log").read_text().splitlines()
    assert log[0].startswith("MindSpore ") and log[-1] in lines[0]


@pytest.mark.slow
def test_value_out_of_range_refused_before_the_background(project, tmp_path):
    python, _ = wrapper(tmp_path, "users-python")
    proc = run_script(project, "run_standalone_train.sh", 0, project / DEMO_RECIPE, "--N=0",
                      f"--output_dir={tmp_path / 'out'}", PYTHON=python)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == ["error: N: expected >= 1, got 0 (command line)"]
    assert "background" not in proc.stdout
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("script", ["run_standalone_train.sh", "run_distribute_train.sh",
                                    "run_eval.sh", "run_infer_310.sh"])
def test_missing_mindspore_is_one_line_naming_the_fix(project, tmp_path, script):
    data = tmp_path / "data"
    data.mkdir()
    model = tmp_path / "model.ckpt"
    model.write_bytes(b"")
    args = {"run_standalone_train.sh": [0, project / DEMO_RECIPE, f"--data_dir={data}"],
            "run_distribute_train.sh": [2, "", project / DEMO_RECIPE, f"--data_dir={data}"],
            "run_eval.sh": [model, data, project / DEMO_RECIPE],
            "run_infer_310.sh": [model, data, "y"]}[script]
    proc = run_script(project, script, *args, PYTHON=no_mindspore(tmp_path), DEVICE_TARGET="CPU",
                      INFER_DIR=str(tmp_path / "infer"))
    assert proc.returncode != 0
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: MindSpore cannot be imported by ")
    assert "libmindspore_backend.so" in lines[0]
    assert "pip install -r requirements.txt" in lines[0]
    assert "README: Running on Ascend or GPU" in lines[0]
    assert not (project / ".venv").exists()


def test_interpreter_that_does_not_exist(project, tmp_path):
    proc = run_script(project, "run_standalone_train.sh", 0, project / DEMO_RECIPE,
                      PYTHON=str(tmp_path / "nothing"))
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        f"error: PYTHON: '{tmp_path / 'nothing'}' is not an interpreter on this machine (set "
        "PYTHON to the Python that has MindSpore)"]


SNAPSHOT = 'echo "== options"; set -o; echo "== functions"; declare -F; echo "== variables"; ' \
    '(set -o posix; set) | grep -vE "^(_|BASH_[A-Z]+|FUNCNAME|LINENO|PIPESTATUS|RANDOM|SECONDS|' \
    'SRANDOM|EPOCHREALTIME|EPOCHSECONDS|BASHPID|BASH_COMMAND|PATH|PYTHONPATH|GLOG_v)="'


@pytest.mark.parametrize("helper", ["env.sh", "setup_env.sh"])
def test_sourcing_a_helper_leaves_only_path_pythonpath_glog(helper):
    script = (f'{SNAPSHOT} > "$1/before"; source "scripts/{helper}" > /dev/null; '
              f'{SNAPSHOT} > "$1/after"; false; echo alive; echo "PYTHONPATH=$PYTHONPATH"; '
              'echo "GLOG_v=$GLOG_v"')
    import tempfile
    with tempfile.TemporaryDirectory() as folder:
        proc = subprocess.run(["bash", "-c", script, "bash", folder], capture_output=True,
                              text=True, cwd=ROOT, env=user_env(), timeout=300)
        before = open(os.path.join(folder, "before")).read()
        after = open(os.path.join(folder, "after")).read()
    assert proc.returncode == 0, proc.stderr
    assert "alive" in proc.stdout.splitlines()             # no `set -e` left behind
    assert before == after                                 # no option, function or variable
    assert f"PYTHONPATH={ROOT}" in proc.stdout and "GLOG_v=3" in proc.stdout
