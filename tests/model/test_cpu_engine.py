"""The CPU engine (frames last: "matmul", and "kernels" with the C++ kernels) computes what the
plain channels-first ConvTasNet does.

Outputs and gradients of whole networks are compared between the engines with the same
parameters; the fused cells with hand-written gradients are checked against numpy and against
MindSpore's autodiff of the same expressions; graphs with a dynamic time axis (set_inputs, MINDIR)
and graph-kernel fusion (what init_device turns on for CPU) are checked against the plain graphs.
"""
import json
import os

import numpy as np
import pytest
import mindspore as ms
from mindspore import nn

from src.model.build import build_network, default_engine
from src.model.conv_tasnet import ConvTasNet
from src.model.cpu_engine import CpuConvTasNet
from src.model_utils.config import load_config
from src.model_utils.errors import UserError
from src.deploy.export import export_network
from src.model.fused_layers import (DepthwisePReLUNorm, FramePad, PReLUNorm, depthwise, gln,
                              prelu)
from helpers import (CHAINS, ROOT, SHORT, SMALL, chain_inputs, loss_and_gradients, run_python,
                     signals, twin_networks)
VARIANTS = {
    "gLN": (SMALL, 71),
    "gLN-edge-pad": ({**SMALL, "edge_pad": 2}, 70),
    "cLN-causal": ({**SMALL, "norm_type": "cLN", "causal": True}, 53),
    "BN": ({**SMALL, "norm_type": "BN"}, 48),
    "softmax-no-skip-3-speakers": ({**SMALL, "Sc": 0, "C": 3, "mask_nonlinear": "softmax"}, 45),
    "sigmoid-relu-encoder": ({**SMALL, "mask_nonlinear": "sigmoid",
                              "encoder_activation": "relu"}, 40),
}


def assert_close(actual, expected, rel=1e-5):
    """Equal up to `rel` times the largest magnitude of `expected` (float rounding)."""
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(actual, expected, rtol=rel, atol=rel * scale)


@pytest.mark.parametrize("engine", ["matmul", "kernels"])
@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_engines_give_the_same_outputs(name, engine):
    kwargs, length = VARIANTS[name]
    conv, matmul = twin_networks(kwargs, engine)
    conv.set_train(False)
    matmul.set_train(False)
    mixture, _ = signals(2, length, kwargs.get("C", 2))
    expected = conv(ms.Tensor(mixture)).asnumpy()
    actual = matmul(ms.Tensor(mixture)).asnumpy()
    assert actual.shape == expected.shape == (2, kwargs.get("C", 2), length)
    assert_close(actual, expected)


def assert_same_gradients(actual, expected, rel=1e-4):
    assert sorted(actual) == sorted(expected)
    for name, grad in expected.items():
        error = np.linalg.norm(actual[name] - grad)
        assert error <= rel * np.linalg.norm(grad) + 1e-7, name


@pytest.mark.slow
@pytest.mark.parametrize("name,engine", [("gLN", "matmul"), ("gLN", "kernels"),
                                              ("cLN-causal", "matmul")])
def test_engines_give_the_same_gradients(name, engine):
    # gLN runs the fused cells, cLN the unfused frames-last layers (as BN does).
    kwargs, length = VARIANTS[name]
    conv, matmul = twin_networks({**kwargs, **SHORT}, engine)
    mixture, sources = signals(2, length, kwargs.get("C", 2))
    lengths = np.array([length, length - 9], np.int32)  # a padded utterance in the batch
    loss_conv, grads_conv = loss_and_gradients(conv, mixture, sources, lengths)
    loss_matmul, grads_matmul = loss_and_gradients(matmul, mixture, sources, lengths)
    assert loss_matmul == pytest.approx(loss_conv, rel=1e-5)
    assert_same_gradients(grads_matmul, grads_conv)


def numpy_block_chain(v, weight, bias, a, gamma, beta, dilation, pads):
    """gLN(PReLU(depthwise(v) + bias)) in numpy; v [batch, K, H], weight [H, 1, 1, P]."""
    taps = weight.reshape(weight.shape[0], -1)                    # [H, P]
    padded = np.pad(v, ((0, 0), pads, (0, 0)))
    frames = v.shape[1]
    z = sum(padded[:, p * dilation:p * dilation + frames] * taps[:, p]
            for p in range(taps.shape[1])) + bias
    z = np.where(z > 0, z, a * z)
    mean = z.mean(axis=(1, 2), keepdims=True)
    var = z.var(axis=(1, 2), keepdims=True)
    return (z - mean) / np.sqrt(var + 1e-8) * gamma + beta


class PlainChain(nn.Cell):
    """The chain of DepthwisePReLUNorm without its hand-written gradient (autodiff)."""

    def __init__(self, dilation, pads):
        super().__init__()
        self.dilation, self.total_pad = dilation, pads[0] + pads[1]
        self.pad = FramePad(*pads)

    def construct(self, v, weight, bias, a, gamma, beta):
        taps = weight.reshape(weight.shape[0], -1).T
        z = depthwise(self.pad(v), taps, bias, self.dilation, self.total_pad)
        return gln(prelu(z, a), gamma, beta)


class PlainPReLUNorm(nn.Cell):
    def construct(self, u, a, gamma, beta):
        return gln(prelu(u, a), gamma, beta)


def input_gradients(cell, inputs, seed=7):
    """Gradients of <cell(*inputs), R> for a fixed random R with respect to every input."""
    tensors = [ms.Tensor(x) for x in inputs]
    weights = ms.Tensor(np.random.default_rng(seed).standard_normal(
        cell(*tensors).shape).astype(np.float32))

    def objective(*args):
        return (cell(*args) * weights).sum()
    grads = ms.jit(ms.grad(objective, grad_position=tuple(range(len(tensors)))))(*tensors)
    return [g.asnumpy() for g in grads]


# (dilation, pads, frames): symmetric and causal paddings, and inputs shorter than the padding.


@pytest.mark.slow
@pytest.mark.parametrize("dilation,pads,frames", CHAINS)
def test_depthwise_chain_matches_numpy_and_autodiff(dilation, pads, frames):
    inputs = chain_inputs(2, frames, 6, 3)
    fused = DepthwisePReLUNorm(3, dilation, pads)
    actual = fused(*[ms.Tensor(x) for x in inputs]).asnumpy()
    expected = numpy_block_chain(*inputs, dilation, pads)
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4)
    for got, want in zip(input_gradients(fused, inputs),
                         input_gradients(PlainChain(dilation, pads), inputs)):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_prelu_norm_gradient_matches_autodiff():
    u, _, _, a, gamma, beta = chain_inputs(2, 13, 6, 3)
    inputs = [u, a, gamma, beta]
    for got, want in zip(input_gradients(PReLUNorm(), inputs),
                         input_gradients(PlainPReLUNorm(), inputs)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


class DynamicLength(nn.Cell):
    """`net` compiled once for any length (a dynamic time axis, as evaluation does)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def construct(self, mixture):
        return self.net(mixture)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["matmul", "kernels"])
def test_dynamic_time_axis_and_mindir_give_the_static_outputs(tmp_path, engine, graph_mode):
    conv, matmul = twin_networks({**SMALL, **SHORT}, engine)
    conv.set_train(False)
    matmul.set_train(False)
    dynamic = DynamicLength(matmul)
    dynamic.set_inputs(ms.Tensor(shape=[1, None], dtype=ms.float32))
    # export_network: the "kernels" engine is exported in MindSpore's operators
    path = export_network(matmul, str(tmp_path / "model"))
    assert matmul.kernels == (engine == "kernels")
    graph = nn.GraphCell(ms.load(path))
    for length in (37, 64):
        mixture = ms.Tensor(signals(1, length, 2)[0])
        expected = conv(mixture).asnumpy()
        assert_close(dynamic(mixture).asnumpy(), expected)
        assert_close(graph(mixture).asnumpy(), expected)


@pytest.mark.parametrize("kwargs", [SMALL, VARIANTS["sigmoid-relu-encoder"][0],
                                    {**SMALL, "Sc": 0, "C": 3},
                                    VARIANTS["softmax-no-skip-3-speakers"][0]],
                         ids=["gLN", "sigmoid", "no-skip-3-speakers", "softmax"])
@pytest.mark.slow
def test_dynamic_batch_and_time_axes_give_the_static_outputs(kwargs, graph_mode):
    # Dynamic shapes broadcast the per-channel weights explicitly (fused_layers.broadcast_like):
    # with a batch of 2 the gains of gLN differ per utterance. They also mask and decode one
    # speaker at a time (except for the softmax mask): the speakers' order must be kept.
    conv, matmul = twin_networks({**kwargs, **SHORT}, "matmul")
    conv.set_train(False)
    matmul.set_train(False)
    dynamic = DynamicLength(matmul)
    dynamic.set_inputs(ms.Tensor(shape=[None, None], dtype=ms.float32))
    for batch, length in ((2, 37), (3, 64)):
        mixture = signals(batch, length, kwargs.get("C", 2))[0]
        mixture[1] *= 5.0
        mixture = ms.Tensor(mixture)
        assert_close(dynamic(mixture).asnumpy(), conv(mixture).asnumpy())


GRAPH_KERNEL_SCRIPT = """
import json, sys
import numpy as np
import mindspore as ms
sys.path.insert(0, {root!r})
from src.model_utils.config import load_config
from src.model_utils.device import init_device
sys.path.insert(0, {tests!r})
from helpers import SHORT, SMALL, loss_and_gradients, signals, twin_networks
init_device(load_config([]))
_, matmul = twin_networks({{**SMALL, **SHORT}}, {engine!r})
mixture, sources = signals(2, 64, 2)
loss, grads = loss_and_gradients(matmul, mixture, sources, np.array([64, 50], np.int32))
np.savez({out!r}, **grads)
print(json.dumps({{"graph_kernel": ms.get_context("enable_graph_kernel"),
                  "kernels": matmul.kernels, "loss": loss}}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["matmul", "kernels"])
def test_graph_kernel_fusion_on_cpu_keeps_the_gradients(tmp_path, engine):
    # In a subprocess: init_device turns graph-kernel fusion on for the whole process.
    out = str(tmp_path / "grads.npz")
    script = GRAPH_KERNEL_SCRIPT.format(root=ROOT, tests=os.path.join(ROOT, "tests"), out=out, engine=engine)
    report = json.loads(run_python(script).stdout.strip().splitlines()[-1])
    assert report["graph_kernel"] is True and report["kernels"] == (engine == "kernels")
    conv, _ = twin_networks({**SMALL, **SHORT})
    mixture, sources = signals(2, 64, 2)
    loss, grads = loss_and_gradients(conv, mixture, sources, np.array([64, 50], np.int32))
    assert report["loss"] == pytest.approx(loss, rel=1e-5)
    fused = np.load(out)
    assert_same_gradients({name: fused[name] for name in fused.files}, grads)


def test_engine_is_chosen_by_device():
    assert default_engine("CPU") == "kernels"
    assert default_engine("CPU", use_kernels=False) == "matmul"
    assert default_engine("GPU") == "plain"
    assert default_engine("Ascend") == "plain"
    cfg = load_config([f"--{k}={v}" for k, v in {**SMALL, "device_target": "CPU"}.items()])
    net = build_network(cfg)
    assert isinstance(net, CpuConvTasNet) and net.kernels
    assert type(build_network(cfg, "plain")) is ConvTasNet


def test_every_engine_has_the_plain_parameters():
    # Names and shapes: a checkpoint of any engine loads into any other.
    for kwargs in (SMALL, {**SMALL, "Sc": 0}, {**SMALL, "norm_type": "cLN"},
                   {**SMALL, "norm_type": "BN", "Sc": 0}):
        plain = [(n, p.shape) for n, p in ConvTasNet(**kwargs).parameters_and_names()]
        for kernels in (False, True):
            cpu = CpuConvTasNet(**kwargs, kernels=kernels)
            assert [(n, p.shape) for n, p in cpu.parameters_and_names()] == plain
            assert [p.name for p in cpu.get_parameters()] == [n for n, _ in plain]


def test_unknown_engine_refused():
    cfg = load_config([f"--{k}={v}" for k, v in SMALL.items()])
    with pytest.raises(UserError, match="engine: expected one of plain, matmul, kernels"):
        build_network(cfg, "fft")
