import itertools

import numpy as np
import pytest
import mindspore as ms

from src.model.conv_tasnet import ConvTasNet
from src.deploy.inference import (chunk_geometry, chunk_settings, crossfade_windows, match_order,
                                  model_function, separate_in_chunks, stream_separate)
from src.model_utils.config import load_config
from src.model_utils.errors import UserError

# BN in eval mode has no utterance statistics: the model's receptive field is finite, so chunked
# and whole-signal results must agree exactly away from the chunk borders.
TINY = dict(N=16, L=8, B=8, H=16, Sc=8, P=3, X=2, R=2, norm_type="BN")


def tiny_model(C=2, seed=0, **kwargs):
    """A tiny ConvTasNet with random weights whose C outputs are clearly different signals.

    The mask bias favours a different set of encoder filters for each source, as a trained model
    does for different speakers (random masks alone give sources that are nearly the same).
    """
    ms.set_seed(seed)
    net = ConvTasNet(C=C, **{**TINY, **kwargs})
    bias = net.separator.mask_conv.bias
    favour = np.array([[4.0 if n % C == c else -4.0 for n in range(net.N)] for c in range(C)])
    bias.set_data(ms.Tensor(bias.asnumpy() + favour.reshape(-1).astype(np.float32)))
    net.set_train(False)
    return net


def receptive_margin(net, P=3, X=2, R=2):
    """Samples on each side of an output sample that can influence it (generous)."""
    frames = R * (P - 1) * (2 ** X - 1)
    return (frames + 2) * net.stride + 2 * net.L


def reorder_every_other_call(model_fn, C):
    """model_fn whose sources come out in a different order on every call (as real models may)."""
    orders = itertools.cycle(list(itertools.permutations(range(C)))[::-1])

    def fn(mixture):
        return model_fn(mixture)[:, list(next(orders))]
    return fn


def speech_like(T, seed=0):
    """A mixture with some structure: two amplitude-modulated tones plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(T) / 8000.0
    s1 = np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 1.3 * t))
    s2 = np.sign(np.sin(2 * np.pi * 97 * t)) * (0.5 + 0.5 * np.cos(2 * np.pi * 0.7 * t))
    return (s1 + 0.5 * s2 + 0.05 * rng.standard_normal(T)).astype(np.float32)


def border_mask(T, chunk, overlap, hop, margin):
    """True on samples farther than `margin` from every overlap region."""
    keep = np.ones(T, bool)
    start = hop
    while start < T:
        lo, hi = max(0, start - margin), min(T, start + overlap + margin)
        keep[lo:hi] = False
        start += hop
    return keep


def test_windows_sum_to_one():
    for overlap in (1, 2, 7, 800):
        fade_out, fade_in = crossfade_windows(overlap)
        np.testing.assert_allclose(fade_out + fade_in, 1.0, atol=1e-6)
        assert np.all(np.diff(fade_in) > 0) or overlap == 1


def test_geometry_hop_is_multiple_of_alignment():
    assert chunk_geometry(0, 100) == (0, 0, 0)
    assert chunk_geometry(-5, 100) == (0, 0, 0)
    chunk, overlap, hop = chunk_geometry(1000, 101, align=8)
    assert hop % 8 == 0 and chunk == 1000 and overlap == chunk - hop and overlap >= 101
    # An overlap as long as the chunk still leaves a hop of at least one alignment step.
    chunk, overlap, hop = chunk_geometry(16, 40, align=8)
    assert (chunk, overlap, hop) == (16, 8, 8)


@pytest.mark.parametrize("C", [2, 3])
def test_match_order_recovers_permutation(C):
    rng = np.random.default_rng(C)
    previous = rng.standard_normal((C, 200)).astype(np.float32)
    for perm in itertools.permutations(range(C)):
        # current[j] is previous[perm[j]] with noise and another scale.
        current = 3.0 * previous[list(perm)] + 0.3 * rng.standard_normal((C, 200))
        found = match_order(previous, current)
        np.testing.assert_allclose(current[found] / 3.0, previous, atol=0.5)
        assert list(np.asarray(perm)[found]) == list(range(C))


def test_match_order_equals_linear_assignment():
    """Up to 5 speakers every order is tried (no scipy needed); the same as scipy's assignment,
    which serves more speakers."""
    from scipy.optimize import linear_sum_assignment
    rng = np.random.default_rng(0)
    for C in (2, 3, 4, 5, 6, 7):
        for _ in range(5):
            previous, current = rng.standard_normal((2, C, 64))
            prev = previous - previous.mean(-1, keepdims=True)
            cur = current - current.mean(-1, keepdims=True)
            similarity = (prev / np.linalg.norm(prev, axis=-1, keepdims=True)) @ \
                (cur / np.linalg.norm(cur, axis=-1, keepdims=True)).T
            expected = linear_sum_assignment(similarity, maximize=True)[1]
            assert list(match_order(previous, current)) == list(expected)


def test_match_order_keeps_order_on_silence():
    assert list(match_order(np.zeros((3, 50)), np.zeros((3, 50)))) == [0, 1, 2]


def test_one_pass_when_chunking_is_off_or_signal_short():
    net = tiny_model()
    fn = model_function(net)
    x = speech_like(600)
    whole = net(ms.Tensor(x[None])).asnumpy()[0]
    for chunk in (0, -1, 600, 5000):
        np.testing.assert_allclose(separate_in_chunks(fn, x, chunk, 100), whole, atol=1e-6)


@pytest.mark.parametrize("C,T,chunk,overlap", [(2, 4000, 800, 160), (3, 4000, 1000, 200),
                                                (3, 3333, 700, 96), (2, 2300, 1000, 300)])
def test_chunks_equal_whole_away_from_borders_same_speaker_order(C, T, chunk, overlap):
    net = tiny_model(C=C, seed=C)
    fn = model_function(net)
    x = speech_like(T, seed=T)
    whole = net(ms.Tensor(x[None])).asnumpy()[0]
    chunked = separate_in_chunks(reorder_every_other_call(fn, C), x, chunk, overlap,
                                 align=net.stride)
    assert chunked.shape == (C, T)
    assert np.isfinite(chunked).all()
    chunk, overlap, hop = chunk_geometry(chunk, overlap, net.stride)
    keep = border_mask(T, chunk, overlap, hop, receptive_margin(net))
    assert keep.sum() > T // 4
    # The first chunk came out in another order; one order for the whole file must then match
    # the whole-signal result sample for sample in every chunk.
    order = match_order(whole, chunked)
    assert list(order) != list(range(C))
    chunked = chunked[order]
    np.testing.assert_allclose(chunked[:, keep], whole[:, keep], atol=1e-4)
    # Near the borders the cross-fade keeps the estimate close to the whole-signal one.
    for c in range(C):
        assert np.corrcoef(chunked[c], whole[c])[0, 1] > 0.9


def test_short_final_chunk_is_joined_or_run():
    net = tiny_model()
    fn = model_function(net)
    calls = []

    def counting(mixture):
        calls.append(mixture.shape[-1])
        return fn(mixture)
    chunk, overlap = 800, 160                  # hop 640
    for T, expected in ((800 + 640 + 100, [800, 800]),      # remainder joined: last chunk longer
                        (800 + 640 + 500, [800, 800, 660])):  # remainder run as a short chunk
        calls.clear()
        out = separate_in_chunks(counting, speech_like(T), chunk, overlap, align=net.stride)
        assert out.shape == (2, T)
        assert calls[:-1] == expected[:-1] and len(calls) == len(expected)
        assert calls[-1] == T - (len(calls) - 1) * 640
        assert all(length > overlap for length in calls)


@pytest.mark.slow
def test_stream_blocks_of_any_size_give_the_same_result():
    net = tiny_model()
    fn = model_function(net)
    x = speech_like(5000, seed=3)
    reference = separate_in_chunks(fn, x, 900, 100, align=net.stride)
    for block in (1, 333, 900, 5000):
        blocks = (x[i:i + block] for i in range(0, len(x), block))
        parts = list(stream_separate(fn, blocks, 900, 100, align=net.stride))
        np.testing.assert_allclose(np.concatenate(parts, axis=1), reference, atol=1e-6)
        assert max(p.shape[1] for p in parts) <= 900 + 900 // 2


def test_model_fn_with_wrong_output_shape_is_reported():
    with pytest.raises(ValueError, match="expected estimates"):
        separate_in_chunks(lambda m: m, np.ones(100, np.float32), 0, 0)


def test_chunk_settings_from_the_config():
    cfg = load_config(["--sample_rate=8000", "--L=16", "--chunk_seconds=2",
                       "--separate_chunk_seconds=0", "--chunk_overlap=0.25"])
    assert chunk_settings(cfg, "chunk_seconds") == (16000, 2000, 8)
    assert chunk_settings(cfg, "separate_chunk_seconds") == (0, 2000, 8)   # whole signals
    assert chunk_settings(cfg, "chunk_seconds", fixed_length=4000) == (4000, 2000, 8)


@pytest.mark.parametrize("flags,message", [
    (["--chunk_seconds=-1"], "chunk_seconds: expected seconds >= 0"),
    (["--chunk_seconds=0.003"], "chunk_seconds: chunks of 24 samples are shorter than two "
                                "encoder kernels"),
    (["--chunk_seconds=1", "--chunk_overlap=1"], "chunk_overlap: expected seconds >= 0 and "
                                                 "shorter than a chunk"),
    (["--chunk_overlap=-0.5"], "chunk_overlap: expected seconds >= 0"),
])
def test_chunk_settings_refuse_bad_values(flags, message):
    # Set after loading: load_config refuses negative seconds itself (the ranges of
    # default_config.yaml), but chunk_settings also serves settings that do not come through it
    # (separate_onnx.py).
    cfg = load_config(["--sample_rate=8000", "--L=16"])
    for flag in flags:
        key, value = flag[2:].split("=")
        setattr(cfg, key, float(value))
    with pytest.raises(UserError, match=message):
        chunk_settings(cfg, "chunk_seconds")
