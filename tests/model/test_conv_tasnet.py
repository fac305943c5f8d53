import numpy as np
import pytest
import mindspore as ms

from src.model.conv_tasnet import ConvTasNet, count_parameters
from src.model_utils.errors import UserError
from helpers import SMALL


def test_paper_configuration_parameter_count():
    # The count of Asteroid's ConvTasNet with the same configuration (gLN, biases, one PReLU
    # weight per PReLU): encoder/decoder 2*512*16, input gLN + bottleneck, 24 blocks, mask conv.
    assert count_parameters(ConvTasNet()) == 5_050_545


@pytest.mark.parametrize("C", [2, 3])
@pytest.mark.parametrize("length", [4, 5, 17, 160, 333])
def test_output_shape_any_length(C, length):
    net = ConvTasNet(C=C, **SMALL)
    x = ms.Tensor(np.random.default_rng(length).standard_normal((2, length)).astype(np.float32))
    y = net(x).asnumpy()
    assert y.shape == (2, C, length)
    assert np.isfinite(y).all()


@pytest.mark.parametrize("Sc", [0, 8])
@pytest.mark.parametrize("mask", ["relu", "sigmoid", "softmax"])
def test_variants_run(Sc, mask):
    net = ConvTasNet(**{**SMALL, "Sc": Sc}, mask_nonlinear=mask, encoder_activation="relu")
    y = net(ms.Tensor(np.ones((1, 50), np.float32)))
    assert y.shape == (1, 2, 50)


def test_no_skip_path_has_no_skip_convs():
    with_skip = count_parameters(ConvTasNet(**SMALL))
    without = count_parameters(ConvTasNet(**{**SMALL, "Sc": 0}))
    # Each of the X*R blocks loses its H->Sc conv; the mask conv takes B instead of Sc inputs.
    blocks = SMALL["X"] * SMALL["R"]
    assert with_skip - without == blocks * (SMALL["H"] * 8 + 8)


def test_softmax_masks_sum_to_one():
    net = ConvTasNet(**SMALL, C=3, mask_nonlinear="softmax")
    w = ms.Tensor(np.random.default_rng(0).standard_normal((1, 16, 20)).astype(np.float32))
    masks = net.separator(w).asnumpy()
    np.testing.assert_allclose(masks.sum(axis=1), 1.0, rtol=1e-5)


def numpy_conv_tasnet(net, x):
    """Encoder framing, masking and overlap-add in numpy around the cell's own separator."""
    L, S, N, C = net.L, net.stride, net.N, net.C
    length = x.shape[-1]
    frames = net.num_frames(length)
    total = (frames - 1) * S + L
    padded = np.zeros((x.shape[0], total), np.float32)
    padded[:, net.front_pad:net.front_pad + length] = x
    basis = net.encoder.weight.asnumpy().reshape(N, L)
    segments = np.stack([padded[:, k * S:k * S + L] for k in range(frames)], axis=-1)  # [b, L, K]
    w = np.einsum("nl,blk->bnk", basis, segments)
    masks = net.separator(ms.Tensor(w)).asnumpy()
    masked = masks * w[:, None]                                       # [b, C, N, K]
    synthesis = net.decoder.weight.asnumpy().reshape(N, L)
    out = np.zeros((x.shape[0], C, total))
    for k in range(frames):
        out[:, :, k * S:k * S + L] += np.einsum("bcn,nl->bcl", masked[..., k], synthesis)
    return out[:, :, net.edge_pad:net.edge_pad + length]


@pytest.mark.parametrize("length,kwargs", [(64, {}), (71, {}), (70, {"edge_pad": 2}),
                                           (53, {"norm_type": "cLN", "causal": True})])
def test_overlap_add_matches_numpy(length, kwargs):
    net = ConvTasNet(**SMALL, **kwargs)
    x = np.random.default_rng(1).standard_normal((2, length)).astype(np.float32)
    expected = numpy_conv_tasnet(net, x)
    np.testing.assert_allclose(net(ms.Tensor(x)).asnumpy(), expected, rtol=1e-4, atol=1e-5)


def outputs_before_change(net, t0, length=120):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, length)).astype(np.float32)
    changed = x.copy()
    changed[:, t0 + 1:] += rng.standard_normal((1, length - t0 - 1)).astype(np.float32)
    return (net(ms.Tensor(x)).asnumpy()[..., :t0 + 1],
            net(ms.Tensor(changed)).asnumpy()[..., :t0 + 1])


@pytest.mark.parametrize("t0", [0, 37, 80])
def test_causal_output_ignores_future_input(t0):
    net = ConvTasNet(**SMALL, norm_type="cLN", causal=True)
    before, after = outputs_before_change(net, t0)
    np.testing.assert_allclose(before, after, rtol=1e-5, atol=1e-6)


def test_non_causal_output_depends_on_future_input():
    # The same check detects look-ahead: a gLN model sees the whole utterance.
    before, after = outputs_before_change(ConvTasNet(**SMALL), 37)
    assert np.abs(before - after).max() > 1e-4


@pytest.mark.parametrize("norm_type", ["gLN", "BN"])
def test_causal_refuses_non_causal_norms(norm_type):
    with pytest.raises(UserError, match="causal model needs cLN"):
        ConvTasNet(**SMALL, norm_type=norm_type, causal=True)


def test_bad_sizes_refused():
    with pytest.raises(UserError, match="L: expected an even"):
        ConvTasNet(**{**SMALL, "L": 5})
    with pytest.raises(UserError, match="mask_nonlinear"):
        ConvTasNet(**SMALL, mask_nonlinear="tanh")


def test_cumulative_layer_norm_matches_numpy():
    net = ConvTasNet(**SMALL, norm_type="cLN", causal=True)
    norm = net.separator.layer_norm
    x = np.random.default_rng(3).standard_normal((2, 16, 9)).astype(np.float32)
    y = norm(ms.Tensor(x)).asnumpy()
    for k in range(9):
        seen = x[:, :, :k + 1]
        mean = seen.mean(axis=(1, 2), keepdims=True)
        var = seen.var(axis=(1, 2), keepdims=True)
        np.testing.assert_allclose(y[:, :, k:k + 1], (x[:, :, k:k + 1] - mean) / np.sqrt(var + 1e-8),
                                   rtol=1e-4, atol=1e-4)
