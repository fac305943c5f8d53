"""The causal model on long signals, and the streaming separator against the offline model."""
import numpy as np
import pytest
import mindspore as ms

from causal_reference import causal_reference
from src.model.checkpoint import load_network, save_checkpoint
from src.model.conv_tasnet import ConvTasNet, CumulativeLayerNorm
from src.model.cpu_engine import CpuConvTasNet, norm_frames_last
from src.model_utils.config import load_config
from src.model_utils.errors import UserError
from src.deploy import streaming
from src.deploy.streaming import StreamingSeparator, load_streaming_separator

RATE = 8000
# Tiny causal models: every part of the network (cLN, dilations up to 2^(X-1), skip or not), few
# channels, so that a minute of signal takes seconds.
TINY = dict(N=8, L=16, B=4, H=8, P=3, X=2, R=2)


def relative_error(estimate, reference):
    return np.abs(estimate - reference).max() / np.abs(reference).max()


def speech_like(seconds, seed=0):
    """Noise under a syllable-rate envelope with pauses, the level changing over time [T]."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    envelope = np.maximum(np.sin(2 * np.pi * 3.1 * t) * np.sin(2 * np.pi * 0.13 * t), 0)
    return (rng.standard_normal(len(t)) * (0.05 + envelope) * 0.3).astype(np.float32)


def tiny_config(C, Sc, **extra):
    flags = {**TINY, "Sc": Sc, "n_src": C, "norm_type": "cLN", "causal": True, **extra}
    return load_config([f"--{key}={value}" for key, value in flags.items()])


@pytest.fixture(scope="module", params=[(2, 4), (2, 0), (3, 4), (3, 0)],
                ids=["C2-skip", "C2-noskip", "C3-skip", "C3-noskip"])
def minute(request, tmp_path_factory):
    """(config, checkpoint, 60-s mixture, the offline model's estimates [C, T]) of a tiny causal
    model with random weights, the offline output from the plain MindSpore cell."""
    C, Sc = request.param
    cfg = tiny_config(C, Sc)
    ms.set_seed(C * 10 + Sc)
    path = str(tmp_path_factory.mktemp("streaming") / "causal.ckpt")
    save_checkpoint(ConvTasNet(**TINY, Sc=Sc, C=C, norm_type="cLN", causal=True), path)
    net = load_network(cfg, path, engine="plain")
    mixture = speech_like(60)
    offline = net(ms.Tensor(mixture[None])).asnumpy()[0]
    return cfg, path, mixture, offline


def stream(separator, mixture, hop):
    """Push `mixture` in hops of `hop` samples; every output and the final one."""
    outputs = [separator.push(mixture[start:start + hop])
               for start in range(0, len(mixture), hop)]
    return outputs, separator.finish()


def check_stream_equals_offline(minute, strides, seconds=None):
    """Streams the minute (or its first `seconds`) in hops of `strides` encoder strides. The model
    is causal, so the outputs of a prefix equal the offline outputs over that prefix."""
    cfg, path, mixture, offline = minute
    hop = strides * cfg.L // 2
    if seconds is not None:
        mixture = mixture[:seconds * RATE - seconds * RATE % hop]
    outputs, last = stream(load_streaming_separator(cfg, path), mixture, hop)
    # A hop of whole strides returns as many samples as it brings: no delay beyond the hop.
    assert [o.shape[1] for o in outputs[:-1]] == [hop] * (len(outputs) - 1)
    if seconds is not None:
        streamed, offline = np.concatenate(outputs, axis=1), offline[:, :len(mixture)]
    else:
        streamed = np.concatenate(outputs + [last], axis=1)
    assert streamed.shape == offline.shape
    assert relative_error(streamed, offline) < 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("strides", [16, 64])
def test_stream_equals_offline_on_a_minute(minute, strides):
    check_stream_equals_offline(minute, strides)


@pytest.mark.slow
@pytest.mark.parametrize("strides", [1, 4])
def test_stream_equals_offline_in_small_hops(minute, strides):
    # the first 8 s: one push per stride costs Python overhead, not what the minute tests check
    check_stream_equals_offline(minute, strides, seconds=8)


@pytest.mark.parametrize("kernels", [True, False], ids=["kernels", "numpy"])
@pytest.mark.parametrize("hops", [[1], [8], [5, 13, 3], [200]])
@pytest.mark.parametrize("edge_pad", [0, 3])
def test_stream_of_any_block_sizes_equals_offline(hops, edge_pad, kernels):
    # Blocks that are not whole strides, a stream shorter than a frame's look-back, edge padding.
    cfg = tiny_config(2, 4, edge_pad=edge_pad)
    ms.set_seed(7)
    net = ConvTasNet(**TINY, Sc=4, C=2, norm_type="cLN", causal=True, edge_pad=edge_pad)
    net.set_train(False)
    params = {name: p.asnumpy() for name, p in net.parameters_and_names()}
    mixture = speech_like(0.3, seed=1)[:2001]
    offline = net(ms.Tensor(mixture[None])).asnumpy()[0]
    separator = StreamingSeparator.from_config(cfg, params, kernels=kernels)
    assert (separator.kernels is not None) == kernels      # this machine has a C++ compiler
    outputs, start, i = [], 0, 0
    while start < len(mixture):
        outputs.append(separator.push(mixture[start:start + hops[i % len(hops)]]))
        start, i = start + hops[i % len(hops)], i + 1
    streamed = np.concatenate(outputs + [separator.finish()], axis=1)
    assert streamed.shape == offline.shape
    assert relative_error(streamed, offline) < 1e-5


@pytest.mark.parametrize("isa_flags", [(), ("-mno-avx512f",)], ids=["native", "no-avx512"])
def test_block_kernel_of_wide_layers_equals_offline(isa_flags, monkeypatch, tmp_path):
    # Widths over several 16-column panels of stream_block.cc's products, not multiples of 16
    # (B + Sc = 33: a pair of panels and a single one; H = 40: padded columns), and hops of
    # 1-21 frames (its tiles of 8 rows and every remainder); also built without AVX-512, the
    # code CPUs without it run.
    from src.model.cpu_kernels import build
    path = build(directory=str(tmp_path), source_path=streaming.STREAM_SOURCE,
                 extra_flags=isa_flags)
    monkeypatch.setattr(streaming, "block_kernels", lambda: streaming.load_block_kernels(path))
    sizes = dict(N=24, L=8, B=20, H=40, Sc=13, P=3, X=2, R=1)
    cfg = load_config([f"--{k}={v}" for k, v in dict(sizes, n_src=2, norm_type="cLN",
                                                     causal=True).items()])
    ms.set_seed(3)
    net = ConvTasNet(**sizes, C=2, norm_type="cLN", causal=True)
    params = {name: p.asnumpy() for name, p in net.parameters_and_names()}
    mixture = speech_like(0.5, seed=2)
    offline = net(ms.Tensor(mixture[None])).asnumpy()[0]
    separator = StreamingSeparator.from_config(cfg, params)
    assert separator.kernels is not None
    outputs, start, i = [], 0, 0
    frames = [1, 8, 13, 16, 21, 7]
    while start < len(mixture):
        hop = frames[i % len(frames)] * cfg.L // 2
        outputs.append(separator.push(mixture[start:start + hop]))
        start, i = start + hop, i + 1
    streamed = np.concatenate(outputs + [separator.finish()], axis=1)
    assert streamed.shape == offline.shape
    assert relative_error(streamed, offline) < 1e-5


def test_without_a_compiler_numpy_alone_streams(monkeypatch, caplog):
    monkeypatch.setenv("CXX", "no-such-compiler")
    monkeypatch.setattr(streaming, "block_kernels", streaming.block_kernels.__wrapped__)
    cfg = tiny_config(2, 4)
    params = {name: p.asnumpy() for name, p in
              ConvTasNet(**TINY, Sc=4, C=2, norm_type="cLN", causal=True).parameters_and_names()}
    with caplog.at_level("WARNING"):
        separator = StreamingSeparator.from_config(cfg, params)
    assert separator.kernels is None
    assert "streaming kernels not built (no C++ compiler 'no-such-compiler' on PATH)" in caplog.text
    assert separator.push(speech_like(0.1)).shape == (2, 800)


def test_state_does_not_grow_with_the_stream(minute):
    cfg, path, mixture, _ = minute
    separator = load_streaming_separator(cfg, path)

    def state_bytes():
        arrays = [separator.pending, separator.ready, separator.tail]
        arrays += [block.history for block in separator.blocks]
        return sum(a.nbytes for a in arrays)
    separator.push(mixture[:RATE])
    after_one_second = state_bytes()
    for start in range(RATE, 10 * RATE, 4 * cfg.L):
        separator.push(mixture[start:start + 4 * cfg.L])
    assert state_bytes() == after_one_second


def test_non_causal_model_refused(tmp_path):
    cfg = load_config([f"--{key}={value}" for key, value in TINY.items()])
    path = str(tmp_path / "gln.ckpt")
    save_checkpoint(ConvTasNet(**TINY), path)
    with pytest.raises(UserError, match=r"gln.ckpt: streaming needs a causal model .*gLN"):
        load_streaming_separator(cfg, path)


def test_cumulative_norm_is_accurate_on_long_inputs(graph_mode):
    # Frames with a large mean and a small spread: the variance is a small difference of two
    # large running sums, where float32 accumulation loses most of its digits after 10^5 frames.
    frames = 300_000
    x = 1 + 0.05 * np.random.default_rng(4).standard_normal((1, 4, frames))
    norm = CumulativeLayerNorm(4)
    y = norm(ms.Tensor(x.astype(np.float32))).asnumpy()
    count = 4 * np.arange(1, frames + 1)
    mean = np.cumsum(x.sum(axis=1)) / count
    var = np.cumsum((x * x).sum(axis=1)) / count - mean * mean
    expected = (x - mean) / np.sqrt(var + 1e-8)
    assert relative_error(y, expected) < 1e-5
    # The CPU engine's cLN (frames last, [batch, K, channels]) accumulates the same way.
    y = norm_frames_last(norm, "cLN", ms.Tensor(x.transpose(0, 2, 1).astype(np.float32)))
    assert relative_error(y.asnumpy().transpose(0, 2, 1), expected) < 1e-5


@pytest.mark.slow
def test_offline_causal_model_matches_float64_on_ten_minutes(graph_mode):
    sizes = dict(N=8, L=16, B=8, H=16, Sc=8, P=3, X=2, R=1, C=2)   # 5 cLNs over 600,000 frames
    ms.set_seed(0)
    net = CpuConvTasNet(**sizes, norm_type="cLN", causal=True)
    net.set_train(False)
    mixture = (np.random.default_rng(0).standard_normal(600 * RATE) * 0.3).astype(np.float32)
    estimates = net(ms.Tensor(mixture[None])).asnumpy()[0]
    params = {name: p.asnumpy() for name, p in net.parameters_and_names()}
    expected = causal_reference(params, mixture.astype(np.float64), sizes["L"], sizes["X"],
                                sizes["R"], sizes["C"])
    assert relative_error(estimates, expected) < 1e-5
