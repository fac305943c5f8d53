"""The demo pipeline end to end on a tiny budget (the full demo trains for minutes)."""
import json
import os
import re
import subprocess

import pytest
import soundfile as sf
from helpers import ROOT

TINY = "--N=16 --B=8 --H=16 --Sc=8 --X=2 --R=1 --segment=1.0"


def run_demo(demo_dir):
    env = dict(os.environ, DEMO_SIZES="8,4,4", DEMO_EPOCHS="1", DEMO_FLAGS=TINY)
    result = subprocess.run(["bash", os.path.join(ROOT, "scripts", "run_demo.sh"), str(demo_dir)],
                            cwd=ROOT, env=env, capture_output=True, timeout=900)
    # decoded here, not with text=True, whose newline translation would hide carriage returns
    result.stdout, result.stderr = result.stdout.decode(), result.stderr.decode()
    return result


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path):
    demo = tmp_path / "demo"
    result = run_demo(demo)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = (demo / "summary.txt").read_text()
    eval_summary = json.loads((demo / "eval" / "eval_test" / "eval_summary.json").read_text())
    assert eval_summary["utterances"] == 4
    # The 310 pipeline's CPU path scores the exported MINDIR like eval.py scores the checkpoint.
    reported = float(re.search(r"Average SISNR improvement: (-?[\d.]+)", summary).group(1))
    assert abs(reported - eval_summary["si_snri"]) < 0.01
    for name in ("conv_tasnet-best.ckpt", "config.yaml", "curves.png", "train.log"):
        assert (demo / "train" / name).is_file(), name
    assert (demo / "export" / "conv_tasnet.mindir").is_file()
    separated = sorted(p.name for p in (demo / "separated").iterdir())
    assert len([n for n in separated if n.endswith(("_s1.wav", "_s2.wav"))]) == 2
    assert any(n.endswith(".png") for n in separated)
    mixture = sorted((demo / "librimix" / "Libri2Mix" / "wav8k" / "min" / "test" / "mix_clean")
                     .glob("*.wav"))[0]
    estimate = demo / "separated" / (mixture.stem + "_s1.wav")
    assert sf.info(str(estimate)).frames == sf.info(str(mixture)).frames
    for step in ("1. demo LibriMix", "2. preprocess", "3. train", "4. evaluate", "6. separate"):
        assert re.search(re.escape(step) + r"\s+\d+ s", summary), step
    # one summary, and a log a file can hold: progress as lines, no bar redrawn with "\r"
    assert summary.count("=== demo summary") == result.stdout.count("=== demo summary") == 1
    logs = [demo / "train" / "train.log"] + sorted((demo / "infer").glob("*.log"))
    for text in [result.stdout + result.stderr] + [p.read_bytes().decode() for p in logs]:
        assert "\r" not in text

    # A second run reuses every finished step and rewrites the summary.
    (demo / "summary.txt").unlink()
    again = run_demo(demo)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("reusing") == 6
    assert "Average SISNR improvement" in (demo / "summary.txt").read_text()
