"""causal_lookahead: how far a causal model's outputs look ahead, in the offline model (plain and
CPU engines) and the streaming separator."""
import numpy as np
import pytest
import mindspore as ms

from causal_reference import causal_reference
from src.model.conv_tasnet import ConvTasNet
from src.model.cpu_engine import CpuConvTasNet
from src.model_utils.config import load_config
from src.model_utils.errors import UserError
from src.deploy.streaming import StreamingSeparator

TINY = dict(N=8, L=16, B=4, H=8, Sc=4, P=3, X=2, R=2, C=2)
S = TINY["L"] // 2


def first_dependent_output(u, lookahead):
    """The first output sample that may depend on input sample u: output t depends on the inputs
    up to S*floor(t/S) + lookahead*S."""
    return max(0, S * -(-u // S) - lookahead * S)


def net_for(engine, lookahead, seed=3):
    ms.set_seed(seed)
    cls = ConvTasNet if engine == "plain" else CpuConvTasNet
    kwargs = {} if engine == "plain" else {"kernels": engine == "kernels"}
    net = cls(**TINY, norm_type="cLN", causal=True, causal_lookahead=lookahead, **kwargs)
    net.set_train(False)
    return net


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["plain", "matmul", "kernels"])
@pytest.mark.parametrize("lookahead", [0, 1])
def test_outputs_depend_on_inputs_exactly_lookahead_strides_ahead(engine, lookahead):
    net = net_for(engine, lookahead)
    rng = np.random.default_rng(0)
    T = 40 * S
    base = (0.3 * rng.standard_normal(T)).astype(np.float32)
    positions = np.arange(10 * S, 13 * S + 1)          # every phase of a stride and a boundary
    batch = np.repeat(base[None], len(positions) + 1, axis=0)
    for row, u in enumerate(positions, 1):
        batch[row, u] += 1.0
    out = net(ms.Tensor(batch)).asnumpy()              # [1 + perturbed, C, T]
    for row, u in enumerate(positions, 1):
        changed = np.nonzero(np.abs(out[row] - out[0]).max(axis=0) > 1e-6)[0]
        # Nothing before the first output allowed to see u changes, and that output does.
        assert changed[0] == first_dependent_output(u, lookahead), (u, changed[:3])
    # One stride of look-ahead: output t on a stride boundary sees input t + L/2 exactly.
    if lookahead:
        assert first_dependent_output(12 * S + S, 1) == 12 * S


@pytest.mark.parametrize("lookahead", [0, 1])
def test_offline_model_equals_the_float64_reference(lookahead):
    net = net_for("plain", lookahead)
    params = {name: p.asnumpy() for name, p in net.parameters_and_names()}
    mixture = (0.3 * np.random.default_rng(1).standard_normal(3001)).astype(np.float32)
    got = net(ms.Tensor(mixture[None])).asnumpy()[0]
    expected = causal_reference(params, mixture.astype(np.float64), TINY["L"], TINY["X"],
                                TINY["R"], TINY["C"], lookahead=lookahead)
    assert np.abs(got - expected).max() / np.abs(expected).max() < 1e-5
    # The other alignment is another function: the test can tell them apart.
    other = causal_reference(params, mixture.astype(np.float64), TINY["L"], TINY["X"],
                             TINY["R"], TINY["C"], lookahead=1 - lookahead)
    assert np.abs(got - other).max() / np.abs(other).max() > 1e-2


@pytest.mark.parametrize("hops", [[S], [16 * S], [5, 13, 3]])
@pytest.mark.parametrize("edge_pad", [0, 3])
def test_streamer_with_lookahead_equals_offline(hops, edge_pad):
    cfg = load_config([f"--{k}={v}" for k, v in TINY.items() if k != "C"]
                      + ["--n_src=2", "--norm_type=cLN", "--causal=true", f"--edge_pad={edge_pad}",
                         "--causal_lookahead=1"])
    ms.set_seed(7)
    net = ConvTasNet(**TINY, norm_type="cLN", causal=True, edge_pad=edge_pad, causal_lookahead=1)
    net.set_train(False)
    params = {name: p.asnumpy() for name, p in net.parameters_and_names()}
    mixture = (0.3 * np.random.default_rng(2).standard_normal(2001)).astype(np.float32)
    offline = net(ms.Tensor(mixture[None])).asnumpy()[0]
    separator = StreamingSeparator.from_config(cfg, params)
    outputs, start, i = [], 0, 0
    while start < len(mixture):
        n = hops[i % len(hops)]
        outputs.append(separator.push(mixture[start:start + n]))
        start, i = start + n, i + 1
    if hops == [16 * S] and not edge_pad:
        # The outputs lag the inputs by one stride: the first hop is short by L/2 samples.
        assert [o.shape[1] for o in outputs[:3]] == [15 * S, 16 * S, 16 * S]
    streamed = np.concatenate(outputs + [separator.finish()], axis=1)
    assert streamed.shape == offline.shape
    assert np.abs(streamed - offline).max() / np.abs(offline).max() < 1e-5


def test_lookahead_settings_refused():
    with pytest.raises(UserError, match="causal_lookahead: expected 0 or 1 encoder strides, got 2"):
        ConvTasNet(**TINY, norm_type="cLN", causal=True, causal_lookahead=2)
    with pytest.raises(UserError, match="causal_lookahead"):
        load_config(["--causal_lookahead=2"])


def test_stream_cli_summary_states_the_lookahead_latency():
    from src.deploy.stream_runner import summary
    flags = [f"--{k}={v}" for k, v in TINY.items() if k != "C"] + ["--norm_type=cLN",
                                                                   "--causal=true"]
    plain = summary(load_config(flags), 128, 1.0, [])
    ahead = summary(load_config(flags + ["--causal_lookahead=1"]), 128, 1.0, [])
    assert plain[0].startswith("algorithmic latency 16 ms (one hop of 128 samples;")
    assert ahead[0].startswith("algorithmic latency 17 ms (one hop of 128 samples and the "
                               "look-ahead of one stride;")
