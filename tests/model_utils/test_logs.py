"""Logs a person can read: progress as plain lines where the output is a file, a bar on a terminal,
and MindSpore's C++ warnings off unless GLOG_v asks for them."""
import io
import os
import re
import subprocess
import sys

import pytest
from tqdm import tqdm

from src.model_utils.progress import LineProgress, progress_bar
from helpers import ROOT, make_tiny_librimix



class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_terminal_gets_a_bar_and_a_file_gets_lines():
    bar = progress_bar(total=3, desc="x", file=Terminal())
    assert isinstance(bar, tqdm)
    bar.close()
    assert isinstance(progress_bar(total=3, desc="x", file=io.StringIO()), LineProgress)


def test_lines_at_every_tenth_and_none_redrawn():
    out = io.StringIO()
    for _ in progress_bar(range(50), desc="checking", unit="mix", file=out):
        pass
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert [re.match(r"checking: (\d+)/50 mix \((\d+)%\), \d+ s, [\d.]+ mix/s$", l).group(1, 2)
            for l in lines] == [(str(5 * k), str(10 * k)) for k in range(1, 11)]


def test_lines_by_time_without_a_total_and_the_last_count_at_close():
    out = io.StringIO()
    bar = progress_bar(desc="epoch 2", unit="step", file=out, interval=0.0)
    bar.update(1)
    bar.set_postfix(loss="-3.500")
    bar.update(1)
    bar.write("a log line")
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert re.fullmatch(r"epoch 2: 1 step, \d+ s, [\d.]+ step/s", lines[0])
    assert re.fullmatch(r"epoch 2: 2 step, \d+ s, [\d.]+ step/s, loss=-3.500", lines[1])
    assert lines[2] == "a log line"

    quiet = io.StringIO()
    bar = progress_bar(total=1000, initial=200, desc="d", file=quiet, interval=1e9)
    bar.update(5)     # neither a further tenth nor the interval: no line yet
    assert quiet.getvalue() == ""
    bar.close()
    assert quiet.getvalue().startswith("d: 205/1000 it (20%)")


@pytest.mark.slow
def test_entry_point_logged_to_a_file_has_progress_lines_not_carriage_returns(tmp_path):
    in_dir = make_tiny_librimix(tmp_path / "librimix", sizes={"test": 4})
    log_path = tmp_path / "preprocess.log"
    with open(log_path, "w", encoding="utf-8") as log:
        result = subprocess.run(
            [sys.executable, os.path.join(ROOT, "preprocess.py"), f"--in_dir={in_dir}",
             f"--out_dir={tmp_path / 'out'}", "--splits=[test]", "--preprocess_workers=1"],
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, timeout=300)
    text = log_path.read_bytes().decode()   # not read_text(): it would turn "\r" into "\n"
    assert result.returncode == 0, text
    assert "\r" not in text
    assert re.search(r"^test: checking: 4/4 mix \(100%\)", text, re.M)
    assert re.search(r"^test: writing: 4/4 mix \(100%\)", text, re.M)


def run_train_without_data(tmp_path, env):
    """train.py up to its device set-up (which makes MindSpore warn), then a one-line error."""
    env = {k: v for k, v in os.environ.items() if k != "GLOG_v"} | env
    return subprocess.run([sys.executable, os.path.join(ROOT, "train.py"),
                           f"--data_dir={tmp_path / 'none'}", f"--output_dir={tmp_path / 'o'}",
                           "--cpu_graph_kernel=true"],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


@pytest.mark.slow
def test_mindspore_warnings_off_by_default_and_back_with_glog_v(tmp_path):
    quiet = run_train_without_data(tmp_path, {})
    assert quiet.returncode == 2
    assert quiet.stderr.splitlines() == [next(l for l in quiet.stderr.splitlines()
                                              if l.startswith("error: "))]
    assert "[WARNING]" not in quiet.stdout + quiet.stderr
    loud = run_train_without_data(tmp_path, {"GLOG_v": "2"})
    assert loud.returncode == 2
    assert "[WARNING]" in loud.stdout + loud.stderr
