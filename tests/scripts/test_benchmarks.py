"""The model benchmark runs its measurements and reports them (timings are not asserted)."""
import json
import os
import subprocess
import sys

import pytest
from helpers import ROOT

BENCH = os.path.join(ROOT, "benchmarks", "bench_model.py")
TINY = ["--N=16", "--L=16", "--B=8", "--H=16", "--Sc=8", "--X=2", "--R=1", "--device_target=CPU"]


def run_bench(*args):
    return subprocess.run([sys.executable, BENCH, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_bench_model_measures_training_and_the_exported_model():
    result = run_bench(*TINY, "--measure=framework,train,infer,mindir", "--repeats=2", "--warmup=0",
                       "--batch=2", "--seconds=0.5", "--infer_seconds=1.0", "--profile")
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["settings"]["batch"] == 2
    for kind in ("train", "infer", "mindir"):
        measured = report[kind]
        assert "error" not in measured, measured
        assert len(measured["times_s"]) == 2
        assert 0 < measured["min_s"] <= measured["median_s"]
        assert measured["peak_rss_mb"] > 0
    # The profile names the operators of the engine that ran: on CPU matrix products and
    # the C++ kernels (Custom).
    operators = [name for name, _, _ in report["train"]["top_operators_ms_per_call"]]
    assert "MatMul" in operators and "Custom" in operators, operators
    # The framework alone, before any graph, is part of every other measurement's peak.
    assert 0 < report["framework"]["peak_rss_mb"] < report["train"]["peak_rss_mb"]
    assert report["train"]["samples_per_s"] == 2 / report["train"]["median_s"]
    assert report["infer"]["rtf"] == report["infer"]["median_s"] / 1.0
    # On CPU the network runs with its C++ kernels; the export holds MindSpore's operators.
    assert report["train"]["engine"] == "kernels"
    assert report["mindir"]["engine_exported"] == "matmul"


def test_bench_model_refuses_bad_flags_in_one_line():
    for args, expected in ((["--measure=train,fly"], "--measure"),
                           (["--batch=0"], "--batch"),
                           (["--no_such_key=1"], "no_such_key")):
        result = run_bench(*TINY, *args)
        assert result.returncode == 2, args
        assert expected in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
