"""stream.py: files and raw PCM through standard input and output, hop by hop."""
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import yaml
import mindspore as ms

from src.model.checkpoint import load_network, save_checkpoint
from src.model.conv_tasnet import ConvTasNet
from src.model_utils.config import load_config
from helpers import ROOT

TINY = dict(N=8, L=16, B=4, H=8, Sc=4, P=3, X=2, R=1)
RATE = 8000


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """(folder, config path, checkpoint path, the offline model) of a random tiny causal model,
    and a gLN one's config and checkpoint beside it."""
    directory = tmp_path_factory.mktemp("stream")
    for name, settings in (("causal", {"norm_type": "cLN", "causal": True}), ("gln", {})):
        ms.set_seed(3)
        save_checkpoint(ConvTasNet(**TINY, **settings), str(directory / f"{name}.ckpt"))
        with open(directory / f"{name}.yaml", "w", encoding="utf-8") as f:
            yaml.safe_dump({**TINY, **settings, "sample_rate": RATE}, f)
    cfg = load_config([f"--config_path={directory}/causal.yaml"])
    net = load_network(cfg, str(directory / "causal.ckpt"), engine="plain")
    return directory, net


def run_stream(directory, *flags, name="causal", stdin=None):
    return subprocess.run([sys.executable, os.path.join(ROOT, "stream.py"),
                           f"--config_path={directory}/{name}.yaml",
                           f"--model_path={directory}/{name}.ckpt", *flags],
                          input=stdin, capture_output=True, cwd=str(directory), timeout=300,
                          env={**os.environ, "GLOG_v": "3"})


def offline(net, mixture):
    return net(ms.Tensor(mixture[None].astype(np.float32))).asnumpy()[0]


@pytest.mark.slow
def test_file_to_wavs_equals_offline(model):
    directory, net = model
    mixture = (np.random.default_rng(0).standard_normal(12_345) * 0.2).astype(np.float32)
    sf.write(directory / "talk.wav", mixture, RATE, subtype="FLOAT")
    result = run_stream(directory, "--input=talk.wav", "--output_dir=out", "--stream_hop_ms=8")
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    summary = result.stderr.decode()
    assert "algorithmic latency 8 ms" in summary and "real-time factor" in summary
    estimates = np.stack([sf.read(directory / "out" / f"talk_s{c}.wav", dtype="float32")[0]
                          for c in (1, 2)])
    expected = offline(net, mixture)
    assert estimates.shape == expected.shape
    assert np.abs(estimates - expected).max() <= 1e-5 * np.abs(expected).max()
    assert not [f for f in os.listdir(directory / "out") if f.startswith(".tmp-")]


@pytest.mark.slow
def test_raw_pcm_through_stdin_and_stdout(model):
    directory, net = model
    pcm = (np.random.default_rng(1).standard_normal(8_000) * 3000).astype("<i2")
    result = run_stream(directory, "--input=-", "--output_dir=-", stdin=pcm.tobytes())
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    out = np.frombuffer(result.stdout, "<i2").reshape(-1, 2).T
    expected = offline(net, pcm.astype(np.float32) / 32768)
    assert out.shape == expected.shape
    # One 16-bit step of rounding, and clipping where the random model's estimate is loud.
    assert np.abs(out / 32768 - np.clip(expected, -1, 32767 / 32768)).max() <= 1.5 / 32768


@pytest.mark.slow
def test_stdin_to_wav_files(model):
    directory, net = model
    pcm = (np.random.default_rng(2).standard_normal(1_001) * 3000).astype("<i2")
    result = run_stream(directory, "--input=-", "--output_dir=live", stdin=pcm.tobytes())
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    first, rate = sf.read(directory / "live" / "stdin_s1.wav", dtype="float32")
    assert rate == RATE and len(first) == len(pcm)


@pytest.mark.parametrize("flags,stdin,message", [
    (["--input=-", "--output_dir=-"], b"\x01\x02\x03", "standard input: ended inside a sample"),
    (["--input=missing.wav", "--output_dir=o"], None, "missing.wav: file not found"),
    (["--input=-", "--output_dir=-", "--stream_hop_ms=1.5"], b"",
     "stream_hop_ms: expected a whole number of encoder strides"),
])
@pytest.mark.slow
def test_bad_input_is_one_line(model, flags, stdin, message):
    directory, _ = model
    result = run_stream(directory, *flags, stdin=stdin)
    err = result.stderr.decode().strip().splitlines()
    assert result.returncode == 2 and err[-1].startswith("error: ") and message in err[-1]
    assert "Traceback" not in result.stderr.decode()


@pytest.mark.slow
def test_non_causal_model_refused_in_one_line(model):
    directory, _ = model
    result = run_stream(directory, "--input=-", "--output_dir=-", name="gln", stdin=b"")
    err = result.stderr.decode().strip().splitlines()
    assert result.returncode == 2
    assert "streaming needs a causal model" in err[-1] and "norm_type: gLN" in err[-1]


def test_dash_is_a_path_not_yaml():
    cfg = load_config(["--input=-", "--output_dir", "-"])
    assert cfg.input == "-" and cfg.output_dir == "-"
