"""export.py --stream=true: the streaming step as a MINDIR with explicit state, its sidecar, the
310 pipeline's streaming mode (CPU path, C++ hop loop)."""
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml
import mindspore as ms

from src.deploy import stream_export
from src.deploy.export import load_mindir
from src.deploy.infer_310 import PREPROCESS_DIR, INPUT_DIR, RESULT_DIR
from src.deploy.stream_export import export_stream, read_sidecar, stream_graph
from src.deploy.streaming import StreamingSeparator
from src.evaluation.evaluate import SUMMARY_JSON, run_evaluation
from src.model.checkpoint import save_checkpoint
from src.model.conv_tasnet import ConvTasNet
from src.model_utils.config import load_config
from src.model_utils.errors import UserError
from src.data.preparation import prepare_dataset
from helpers import ROOT, config, make_tiny_librimix

# The whole module: pipelines in subprocesses, graphs compiled for export (run_tests.sh --fast
# leaves it out).
pytestmark = pytest.mark.slow

MS_DIR = os.path.dirname(ms.__file__)
TINY = dict(N=8, L=16, B=4, H=8, Sc=4, P=3, X=2, R=2)
RATE = 8000
ENV = {**os.environ, "PYTHONPATH": ROOT, "GLOG_v": "3"}


def causal_flags(**extra):
    """Flags of the tiny causal model; the export's check over 1 s of signal (the CLI export
    checks over 2 s)."""
    flags = {**TINY, "norm_type": "cLN", "causal": "true", "stream_hop_ms": 8,
             "stream_check_seconds": 1, **extra}
    return [f"--{key}={value}" for key, value in flags.items()]


def random_params(seed, **kwargs):
    ms.set_seed(seed)
    net = ConvTasNet(**TINY, norm_type="cLN", causal=True, **kwargs)
    net.set_train(False)
    return net, {name: p.asnumpy() for name, p in net.parameters_and_names()}


def relative_error(estimate, reference):
    return np.abs(estimate - reference).max() / np.abs(reference).max()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny causal checkpoint, its config, and export.py --stream=true run on them as a user
    runs it (its own process)."""
    root = tmp_path_factory.mktemp("stream_export")
    net, _ = random_params(11)
    save_checkpoint(net, str(root / "causal.ckpt"))
    with open(root / "config.yaml", "w") as f:
        yaml.safe_dump({**TINY, "norm_type": "cLN", "causal": True, "stream_hop_ms": 8}, f)
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "export.py"),
                           f"--config_path={root}/config.yaml", f"--ckpt_file={root}/causal.ckpt",
                           f"--file_name={root}/tiny", "--stream=true",
                           "--stream_check_seconds=2"],
                          capture_output=True, text=True, timeout=600, cwd=root, env=ENV)
    assert proc.returncode == 0, proc.stderr
    return {"root": root, "net": net, "stdout": proc.stdout,
            "config": str(root / "config.yaml"), "ckpt": str(root / "causal.ckpt"),
            "mindir": str(root / "tiny_stream.mindir")}


def test_export_writes_the_step_and_its_sidecar(exported):
    root = exported["root"]
    lines = exported["stdout"].splitlines()
    assert lines[0] == (f"exported {root}/tiny_stream.mindir (MINDIR streaming step: 64 samples "
                        f"in per call, 5 state tensors) and {root}/tiny_stream.json")
    match = re.fullmatch(r"checked: the reloaded MINDIR streamed over 2 s gives the streaming "
                         r"separator's output \(largest difference (\S+) relative\)", lines[1])
    assert match and float(match.group(1)) < 1e-4
    assert sorted(f for f in os.listdir(root) if f.startswith(("tiny", ".tmp"))) == \
        ["tiny_stream.json", "tiny_stream.mindir"]
    info = read_sidecar(exported["mindir"])
    H, D = TINY["H"], 2 * (1 + 2) * (TINY["P"] - 1)     # two repeats of dilations 1, 2
    assert [(s["name"], s["shape"], s["dtype"]) for s in info["inputs"]] == [
        ("samples", [1, 64], "float32"), ("encoder_history", [1, 15], "float32"),
        ("frames", [1], "float64"), ("norm_sums", [9, 2], "float64"),
        ("dconv_history", [D, H], "float32"), ("decoder_tail", [2, 8], "float32")]
    assert [s["name"] for s in info["outputs"]] == ["estimates", "new_encoder_history",
                                                    "new_frames", "new_norm_sums",
                                                    "new_dconv_history", "new_decoder_tail"]
    assert info["hop"] == 64 and info["delay_samples"] == 0 and info["n_src"] == 2
    # The MINDIR holds the inputs the sidecar names, in its order.
    from mindspore.train import mind_ir_pb2
    model = mind_ir_pb2.ModelProto()
    with open(exported["mindir"], "rb") as f:
        model.ParseFromString(f.read())
    shapes = [[int(d) for d in i.tensor[0].dims] for i in model.graph.input]
    assert shapes == [s["shape"] for s in info["inputs"]]


def test_reloaded_step_streams_the_offline_model_and_the_separator(exported):
    # Three seconds of signal, not a whole number of hops; the separator and the offline cell.
    graph = load_mindir(exported["mindir"])
    info = read_sidecar(exported["mindir"])
    rng = np.random.default_rng(5)
    mixture = (0.3 * rng.standard_normal(3 * RATE + 5)).astype(np.float32)
    streamed = stream_graph(graph, info, mixture)
    offline = exported["net"](ms.Tensor(mixture[None])).asnumpy()[0]
    assert streamed.shape == offline.shape
    assert relative_error(streamed, offline) < 1e-4
    params = {name: p.asnumpy() for name, p in exported["net"].parameters_and_names()}
    separator = StreamingSeparator.from_config(load_config(causal_flags()), params)
    numpy_stream = np.concatenate([separator.push(mixture[k:k + 64])
                                   for k in range(0, len(mixture), 64)] + [separator.finish()], 1)
    assert relative_error(streamed, numpy_stream) < 1e-4


# (0, relu) is the CLI export's (the fixture `exported`).
@pytest.mark.parametrize("lookahead,mask", [(0, "softmax"), (1, "sigmoid")])
def test_step_with_lookahead_and_other_masks_equals_offline(tmp_path, lookahead, mask):
    cfg = load_config(causal_flags(causal_lookahead=lookahead, mask_nonlinear=mask,
                                   stream_hop_ms=8))
    net, params = random_params(3, causal_lookahead=lookahead, mask_nonlinear=mask)
    path, _ = export_stream(cfg, params, str(tmp_path / "la"), log=lambda *_: None)
    info = read_sidecar(path)
    assert info["delay_samples"] == lookahead * TINY["L"] // 2 and info["hop"] == 64
    mixture = (0.3 * np.random.default_rng(1).standard_normal(2 * RATE + 7)).astype(np.float32)
    streamed = stream_graph(load_mindir(path), info, mixture)
    offline = net(ms.Tensor(mixture[None])).asnumpy()[0]
    assert relative_error(streamed, offline) < 1e-4


def test_nothing_is_published_when_the_check_fails(tmp_path, monkeypatch):
    cfg = load_config(causal_flags())
    _, params = random_params(2)
    monkeypatch.setattr(stream_export, "check_stream_mindir", lambda *args: 0.5)
    with pytest.raises(UserError, match=r"_stream.mindir: the reloaded streaming MINDIR differs "
                                        r"from the streaming separator by 0.5 relative"):
        export_stream(cfg, params, str(tmp_path / "bad"), log=lambda *_: None)
    assert os.listdir(tmp_path) == []


def test_the_check_tells_another_alignment(tmp_path, monkeypatch):
    # A step of the other look-ahead than the separator it is checked against fails the check.
    cfg = load_config(causal_flags(causal_lookahead=1))
    _, params = random_params(2)
    real = stream_export.make_stream_step
    monkeypatch.setattr(stream_export, "make_stream_step",
                        lambda *args: real(*args[:-1], 0))      # causal_lookahead comes last
    with pytest.raises(UserError, match="differs from the streaming separator"):
        export_stream(cfg, params, str(tmp_path / "bad"), log=lambda *_: None)


def test_stream_export_refusals(tmp_path):
    _, params = random_params(2)
    with pytest.raises(UserError, match="streaming needs a causal model"):
        export_stream(load_config([f"--{k}={v}" for k, v in TINY.items()]), params,
                      str(tmp_path / "x"))
    with pytest.raises(UserError, match="stream_hop_ms: expected a whole number of encoder"):
        export_stream(load_config(causal_flags(stream_hop_ms=0.5)), params, str(tmp_path / "x"))
    with pytest.raises(UserError, match="edge_pad: the streaming export needs edge_pad 0"):
        export_stream(load_config(causal_flags(edge_pad=8)), params, str(tmp_path / "x"))
    with pytest.raises(UserError, match="tiny.json: not found; a streaming MINDIR needs"):
        read_sidecar(str(tmp_path / "tiny.mindir"))
    assert os.listdir(tmp_path) == []


# ---- the 310 pipeline's streaming mode ----

@pytest.fixture(scope="module")
def tiny_set(exported):
    root = exported["root"].parent / "stream_data"
    in_dir = make_tiny_librimix(root / "librimix", sizes={"train-360": 1, "dev": 1, "test": 3},
                                min_seconds=0.3, max_seconds=0.6)
    data_dir = str(root / "data")
    prepare_dataset(config(in_dir=in_dir, out_dir=data_dir, splits="[test]",
                           preprocess_workers=1), log=lambda *_: None)
    return data_dir


def run_script(exported, tmp_path, *args, **env):
    env = {**ENV, "PYTHON": sys.executable, "CONFIG_PATH": exported["config"],
           "INFER_DIR": str(tmp_path / "infer"), **env}
    return subprocess.run(["bash", os.path.join(ROOT, "scripts", "run_infer_310.sh"), *args],
                          capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)


@pytest.mark.slow
def test_streamed_cpu_pipeline_scores_as_eval(exported, tiny_set, tmp_path, monkeypatch):
    proc = run_script(exported, tmp_path, exported["mindir"], tiny_set, "y", "0",
                      DEVICE_TARGET="CPU", STREAM="1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    reported = re.findall(r"^Average SISNR improvement: (-?[\d.]+)$", proc.stdout, re.M)
    assert len(reported) == 1
    assert re.search(r"inferred 3 inputs", (tmp_path / "infer" / "infer.log").read_text())
    inputs = sorted(os.listdir(tmp_path / "infer" / PREPROCESS_DIR / INPUT_DIR))
    assert len(inputs) == 3                                      # whole utterances
    assert sorted(os.listdir(tmp_path / "infer" / RESULT_DIR)) == \
        sorted([f[:-4] + "_0.bin" for f in inputs] + ["time_per_input.csv"])

    monkeypatch.setattr("src.model_utils.device.init_device", lambda cfg: None)
    cfg = load_config([f"--config_path={exported['config']}", f"--ckpt_file={exported['ckpt']}",
                       f"--data_dir={tiny_set}", f"--output_dir={tmp_path}/eval",
                       "--eval_sdr=false"])
    _, summary = run_evaluation(cfg, log=lambda *_: None)
    assert abs(float(reported[0]) - summary["si_snri"]) < 0.01
    with open(tmp_path / "infer" / SUMMARY_JSON) as f:
        assert json.load(f)["si_snri"] == pytest.approx(summary["si_snri"], abs=0.01)


def test_stream_mode_needs_the_sidecar_and_a_valid_stream_flag(exported, tiny_set, tmp_path):
    lone = tmp_path / "lone_stream.mindir"
    shutil.copy(exported["mindir"], lone)
    proc = run_script(exported, tmp_path, str(lone), tiny_set, "y", "0", DEVICE_TARGET="CPU",
                      STREAM="1")
    assert proc.returncode == 1
    assert "lone_stream.json: not found; a streaming MINDIR needs the sidecar" in proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    proc = run_script(exported, tmp_path, exported["mindir"], tiny_set, "y", "0", STREAM="yes")
    assert proc.returncode == 1 and "STREAM: expected 0 or 1, got 'yes'" in proc.stderr


# ---- the C++ app's streaming mode (compiled here; it runs only with an Ascend device) ----

CPP_FLAGS = ["-std=c++17", "-Wall", "-Werror", "-D_GLIBCXX_USE_CXX11_ABI=0", f"-I{MS_DIR}",
             f"-I{MS_DIR}/include", f"-I{ROOT}/ascend310_infer"]
needs_gxx = pytest.mark.skipif(shutil.which("g++") is None, reason="no C++ compiler on this host")

HOP_LOOP_DRIVER = r"""
#include <cstdio>
#include <cstring>
#include "inc/stream.h"
#include "inc/utils.h"
// A stand-in step with state: estimates c = (c + 1) * sample + the sum of all earlier samples
// (a float32 state fed back), and a call counter (int32 state).
int main() {
  std::vector<float> samples;
  for (int i = 0; i < 10; ++i) samples.push_back(static_cast<float>(i + 1));
  std::vector<std::vector<uint8_t>> zeros = {std::vector<uint8_t>(4, 0),
                                             std::vector<uint8_t>(4, 0)};
  int calls = 0;
  auto step = [&](const std::vector<float> &chunk, std::vector<std::vector<uint8_t>> *state,
                  std::vector<float> *out, std::string *) {
    float sum;
    int count;
    std::memcpy(&sum, (*state)[0].data(), 4);
    std::memcpy(&count, (*state)[1].data(), 4);
    out->assign(2 * chunk.size(), 0.0f);
    for (size_t i = 0; i < chunk.size(); ++i) {
      (*out)[i] = chunk[i] + sum;
      (*out)[chunk.size() + i] = 2 * chunk[i] + sum;
      sum += chunk[i];
    }
    ++count;
    std::memcpy((*state)[0].data(), &sum, 4);
    std::memcpy((*state)[1].data(), &count, 4);
    ++calls;
    return true;
  };
  std::vector<float> est;
  std::string error;
  for (size_t delay : {0, 2}) {
    calls = 0;
    bool ok = StreamSignal(samples, 4, delay, 2, zeros, step, &est, &error);
    std::printf("delay %zu ok %d calls %d:", delay, ok, calls);
    for (float v : est) std::printf(" %g", v);
    std::printf("\n");
  }
  Options o;
  const char *args[] = {"main", "--mindir_path=m", "--input_path=i", "--output_path=o",
                        "--stream=true", "--stream_delay=8"};
  bool done = ParseOptions(6, const_cast<char **>(args), &o, &error);
  std::printf("parse %d %d %d\n", done, o.stream, o.stream_delay);
  const char *bad[] = {"main", "--mindir_path=m", "--input_path=i", "--output_path=o",
                       "--stream=1"};
  Options p;
  done = ParseOptions(5, const_cast<char **>(bad), &p, &error);
  std::printf("bad %d %s\n", done, error.c_str());
  return 0;
}
"""


def expected_hop_loop(delay, hop=4):
    x = np.arange(1, 11, dtype=np.float64)
    padded = np.zeros(-(-(10 + delay) // hop) * hop)
    padded[:10] = x
    before = np.concatenate([[0], np.cumsum(padded)[:-1]])
    out = [padded + before, 2 * padded + before]
    return [v for c in out for v in c[delay:delay + 10]]


@needs_gxx
def test_cpp_hop_loop_feeds_the_state_back_and_cuts_the_delay(tmp_path):
    driver = tmp_path / "driver.cc"
    driver.write_text(HOP_LOOP_DRIVER)
    proc = subprocess.run(["g++", *CPP_FLAGS, str(driver),
                           os.path.join(ROOT, "ascend310_infer", "src", "utils.cc"),
                           "-o", str(tmp_path / "driver")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    out = subprocess.run([str(tmp_path / "driver")], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    for line, delay, calls in zip(out[:2], (0, 2), (3, 3)):
        head, values = line.split(":")
        assert head == f"delay {delay} ok 1 calls {calls}"
        assert [float(v) for v in values.split()] == expected_hop_loop(delay)
    assert out[2:] == ["parse 1 1 8", "bad 0 --stream: expected true or false, got '1'"]
