"""The C++ kernels of the CPU engine (src/model/cpu_kernels.py): results, any length, the build.

Each kernel is compared with float64 numpy; the whole networks of every engine are compared in
tests/model/test_cpu_engine.py.
"""
import os

import numpy as np
import pytest
import mindspore as ms
from mindspore import nn

from src.model import cpu_kernels
from src.model.cpu_engine import CpuConvTasNet
from src.model.fused_layers import DepthwisePReLUNorm, GlobalNorm, PReLUNorm
from helpers import CHAINS, ROOT, SMALL, chain_inputs, run_python


def gln64(p, gamma, beta):
    """gLN in float64 over frames and channels of each utterance; p [batch, K, H]."""
    mean = p.mean(axis=(1, 2), keepdims=True)
    var = ((p - mean) ** 2).mean(axis=(1, 2), keepdims=True)
    return (p - mean) / np.sqrt(var + 1e-8) * gamma + beta


def prelu64(x, a):
    return np.where(x > 0, x, a * x)


def depthwise64(v, weight, bias, dilation, pads):
    taps = weight.reshape(weight.shape[0], -1).astype(np.float64)          # [H, P]
    padded = np.pad(v.astype(np.float64), ((0, 0), pads, (0, 0)))
    frames = v.shape[1]
    return sum(padded[:, p * dilation:p * dilation + frames] * taps[:, p]
               for p in range(taps.shape[1])) + bias


def run_kernel(cell, inputs, dynamic=False):
    cell.use_kernel(True)
    if dynamic:
        cell.set_inputs(ms.Tensor(shape=[None, None, inputs[0].shape[2]], dtype=ms.float32),
                        *[ms.Tensor(x) for x in inputs[1:]])
    return cell(*[ms.Tensor(x) for x in inputs]).asnumpy()


def assert_close64(actual, expected, rel=1e-5):
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(actual, expected, rtol=rel, atol=rel * scale)


@pytest.mark.parametrize("dilation,pads,frames", CHAINS)
def test_depthwise_prelu_norm_kernel_matches_float64(dilation, pads, frames):
    v, weight, bias, a, gamma, beta = chain_inputs(2, frames, 6, 3)
    actual = run_kernel(DepthwisePReLUNorm(3, dilation, pads), [v, weight, bias, a, gamma, beta])
    expected = gln64(prelu64(depthwise64(v, weight, bias, dilation, pads), a), gamma, beta)
    assert actual.shape == v.shape
    assert_close64(actual, expected)


def test_prelu_norm_and_global_norm_kernels_match_float64():
    u, _, _, a, gamma, beta = chain_inputs(3, 17, 5, 3)
    assert_close64(run_kernel(PReLUNorm(), [u, a, gamma, beta]),
                   gln64(prelu64(u.astype(np.float64), a), gamma, beta))
    assert_close64(run_kernel(GlobalNorm(), [u, gamma, beta]),
                   gln64(u.astype(np.float64), gamma, beta))


def test_kernels_run_a_graph_compiled_for_any_length():
    cell = DepthwisePReLUNorm(3, 4, (4, 4))
    for frames, batch in ((40, 1), (7, 2)):
        v, weight, bias, a, gamma, beta = chain_inputs(batch, frames, 8, 3)
        actual = run_kernel(cell, [v, weight, bias, a, gamma, beta], dynamic=True)
        expected = gln64(prelu64(depthwise64(v, weight, bias, 4, (4, 4)), a), gamma, beta)
        assert actual.shape == (batch, frames, 8)
        assert_close64(actual, expected)


def test_gln_statistics_stay_exact_with_a_large_mean():
    # Sums in double: a float32 E[x^2] - E[x]^2 would lose the variance of values near 1000.
    rng = np.random.default_rng(0)
    u = (1000 + rng.standard_normal((1, 2000, 64))).astype(np.float32)
    gamma, beta = np.ones(64, np.float32), np.zeros(64, np.float32)
    actual = run_kernel(GlobalNorm(), [u, gamma, beta])
    assert_close64(actual, gln64(u.astype(np.float64), gamma, beta), rel=1e-4)


def test_build_is_cached_per_source_and_written_whole(tmp_path, monkeypatch):
    first = cpu_kernels.build(str(tmp_path))
    stamp = os.stat(first).st_mtime_ns
    assert cpu_kernels.build(str(tmp_path)) == first
    assert os.stat(first).st_mtime_ns == stamp                  # reused, not rebuilt
    changed = tmp_path / "changed.cc"
    changed.write_text(open(cpu_kernels.SOURCE).read() + "\n// changed\n")
    monkeypatch.setattr(cpu_kernels, "SOURCE", str(changed))
    second = cpu_kernels.build(str(tmp_path))
    assert second != first and os.path.exists(second)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["changed.cc", os.path.basename(first), os.path.basename(second)])  # no temporaries


def test_missing_compiler_is_an_oserror(tmp_path):
    with pytest.raises(OSError, match="no C\\+\\+ compiler 'no-such-c\\+\\+'"):
        cpu_kernels.build(str(tmp_path), compiler="no-such-c++")
    assert not any(tmp_path.iterdir())


NO_COMPILER_SCRIPT = """
import sys
import numpy as np
import mindspore as ms
sys.path.insert(0, {root!r})
from src.model import cpu_kernels
builds = []
real_build = cpu_kernels.build
def spy(*args, **kwargs):
    builds.append(1)
    return real_build(*args, **kwargs)
cpu_kernels.build = spy
from src.model.build import build_network
from src.model.convert import convert
from src.model_utils.config import load_config
from src.model_utils.errors import UserError
sys.path.insert(0, {tests!r})
from helpers import SMALL
ms.set_context(mode=ms.GRAPH_MODE)
flags = [f"--{{k}}={{v}}" for k, v in SMALL.items()] + ["--device_target=CPU"]
cfg = load_config(flags)
for engine in ("plain", "matmul"):
    build_network(cfg, engine)
print("engine", type(build_network(load_config(flags + ["--cpu_kernels=false"]))).__name__)
convert({fixture!r}, {out!r}, load_config([]))
print("builds before the default engine", len(builds))
net = build_network(cfg)
print("default kernels", net.kernels)
print("shape", net(ms.Tensor(np.zeros((1, 64), np.float32))).shape)
try:
    build_network(cfg, "kernels")
except UserError as err:
    print("refused", err)
"""


@pytest.mark.slow
def test_only_the_kernels_engine_compiles_and_falls_back_without_a_compiler(tmp_path):
    cache = tmp_path / "cache"
    fixture = os.path.join(ROOT, "tests", "fixtures", "pytorch", "asteroid_serialized.pth")
    result = run_python(NO_COMPILER_SCRIPT.format(root=ROOT, tests=os.path.join(ROOT, "tests"), fixture=fixture,
                                                  out=str(tmp_path / "converted.ckpt")),
                        CXX="no-such-c++", CONV_TASNET_KERNEL_CACHE=str(cache))
    # The plain and matmul engines and convert_pytorch's conversion never call the compiler.
    assert "engine CpuConvTasNet" in result.stdout
    assert "builds before the default engine 0" in result.stdout
    # The default engine tries the kernels once and, without a compiler, is matmul.
    assert "default kernels False" in result.stdout
    assert "shape (1, 2, 64)" in result.stdout
    assert "refused engine: the CPU kernels cannot be built" in result.stdout
    assert "CPU kernels not built (no C++ compiler 'no-such-c++' on PATH)" in result.stderr
    assert not cache.exists() or not any(cache.iterdir())


@pytest.mark.slow
def test_exported_graph_holds_no_kernel(tmp_path):
    from src.deploy.export import export_network
    net = CpuConvTasNet(**SMALL, kernels=True)
    net.set_train(False)
    path = export_network(net, str(tmp_path / "model"))
    graph = nn.GraphCell(ms.load(path))
    mixture = ms.Tensor(np.random.default_rng(1).standard_normal((1, 50)).astype(np.float32))
    np.testing.assert_allclose(graph(mixture).asnumpy(), net(mixture).asnumpy(), rtol=1e-4,
                               atol=1e-5)
    with open(path, "rb") as f:
        assert b"Custom" not in f.read()
