"""Training parity with Asteroid: loss, every gradient and the optimizer, against the reference.

The fixture (tests/fixtures/training_parity.npz) was written by
tests/fixtures/make_training_parity.py running Asteroid 0.7.0 on torch 2.13.0: small ConvTasNets
with randomized gains, biases and PReLU slopes, real-speech batches, and per step of a reference
training trajectory the weights, the loss and every parameter's gradient; plus Adam's states and
weights after each step on a recorded gradient sequence. Weights after many steps are not compared: two float32 implementations
diverge chaotically.
"""
import json
import os

import numpy as np
import pytest
import mindspore as ms
from mindspore import nn

from src.model.build import ENGINES, build_network
from src.model.conv_tasnet import ConvTasNet
from src.model.convert import map_parameters
from src.model_utils.config import Config, load_config
from src.training.train_step import NetWithLoss, TrainStep, make_optimizer
from helpers import FIXTURES

FIXTURE = os.path.join(FIXTURES, "training_parity.npz")
VARIANTS = ("gln_skip_c2", "cln_causal_skip_c3", "gln_noskip_c3", "cln_causal_noskip_c2")
STEPS = 3
# Relative gradient error allowed per parameter, ||g - g_ref|| / ||g_ref||: float32 sums over
# batch and frames in a different order (PReLU slopes and norm gains sum over every frame and
# channel) differ by up to about 1e-4 between the two frameworks; 5e-4 leaves a margin, while a
# backward pass that drops or mis-scales a term is off by far more.
GRAD_RTOL = 5e-4
LOSS_ATOL = 1e-5


@pytest.fixture(scope="module")
def fixture():
    with np.load(FIXTURE) as data:
        return {key: data[key] for key in data.files}


def build_engine(settings, engine):
    """The network this project trains with `engine` (src.model.build.ENGINES) for the fixture's
    `settings`."""
    flags = {key: settings[key] for key in ("N", "L", "B", "H", "Sc", "P", "X", "R", "norm_type")}
    flags.update(n_src=settings["C"], causal=str(bool(settings["causal"])).lower(),
                 mask_nonlinear="relu", device_target="CPU")
    return build_network(load_config([f"--{key}={value}" for key, value in flags.items()]),
                         engine)


def load_reference(net, fixture, prefix):
    """Copy the reference tensors `<prefix>/<asteroid name>` into `net`; {project name: array}
    of the same prefix (the project's names)."""
    state = {key[len(prefix) + 1:]: value for key, value in fixture.items()
             if key.startswith(prefix + "/")}
    targets = {p.name: tuple(p.shape) for p in net.get_parameters()}
    return map_parameters("asteroid", state, targets, FIXTURE)


def set_weights(net, weights):
    for param in net.get_parameters():
        param.set_data(ms.Tensor(weights[param.name]))


def relative_error(actual, expected):
    """||actual - expected|| / ||expected||; for an all-zero reference (the residual conv of the
    last block, unused with skip connections) the absolute norm of `actual`."""
    scale = np.linalg.norm(expected)
    return float(np.linalg.norm(actual - expected) / (scale if scale > 0 else 1.0))


# Every variant on every engine; two of them (the CPU default on gLN with skip, the plain cell
# on causal cLN without skip) are fast enough for every run, the rest are marked slow.
FAST = {("gln_skip_c2", "kernels"), ("cln_causal_noskip_c2", "plain")}
CASES = [pytest.param(variant, engine, marks=() if (variant, engine) in FAST else pytest.mark.slow)
         for variant in VARIANTS for engine in ENGINES]


@pytest.mark.slow
@pytest.mark.parametrize("variant,engine", CASES)
def test_loss_and_gradients_match_asteroid(fixture, variant, engine, pynative_mode):
    settings = json.loads(str(fixture[f"{variant}/config"]))
    net = build_engine(settings, engine)
    net_with_loss = NetWithLoss(net, settings["C"])
    params = net_with_loss.trainable_params()
    grad_fn = ms.value_and_grad(net_with_loss, None, params)
    mixtures, sources = fixture[f"{variant}/mixture"], fixture[f"{variant}/sources"]
    lengths = ms.Tensor(np.full(mixtures.shape[1], mixtures.shape[2], np.int32))
    worst = {}
    for k in range(STEPS):
        set_weights(net, load_reference(net, fixture, f"{variant}/step{k}/weight"))
        expected = load_reference(net, fixture, f"{variant}/step{k}/grad")
        loss, grads = grad_fn(ms.Tensor(mixtures[k]), ms.Tensor(sources[k]), lengths)
        assert abs(float(loss.asnumpy()) - fixture[f"{variant}/loss"][k]) <= LOSS_ATOL, k
        assert len(grads) == len(expected)
        for param, grad in zip(params, grads):
            error = relative_error(grad.asnumpy(), expected[param.name])
            worst[param.name] = max(worst.get(param.name, 0.0), error)
    failing = {name: error for name, error in worst.items() if not error <= GRAD_RTOL}
    assert not failing, failing


class LinearLoss(nn.Cell):
    """loss = sum over parameters of <parameter, G>: its gradient is exactly G, a recorded
    gradient set before each step, so the training step sees the reference's gradients."""

    def __init__(self, shapes):
        super().__init__()
        self.weights = ms.ParameterTuple(
            [ms.Parameter(ms.Tensor(np.zeros(s, np.float32)), name=n) for n, s in shapes])
        self.recorded = ms.ParameterTuple(
            [ms.Parameter(ms.Tensor(np.zeros(s, np.float32)), name=f"recorded.{n}",
                          requires_grad=False) for n, s in shapes])

    def construct(self, mixture, sources, lengths):
        total = 0.0
        for weight, grad in zip(self.weights, self.recorded):
            total = total + (weight * grad).sum()
        return total


def test_clipped_adam_matches_torch_on_recorded_gradients(fixture, pynative_mode):
    """The project's TrainStep (global-norm clipping, nn.Adam) against torch's clip_grad_norm_
    and torch.optim.Adam on the reference's gradient sequence.

    nn.Adam adds eps to the uncorrected sqrt(v) (torch: to the bias-corrected one), so its step
    equals torch's with eps / sqrt(1 - beta2^t) in place of eps: the moments must match torch's
    exactly, and the update torch's rescaled by that known factor. The updates depend on the
    gradients only, so the weights start at zero and the updates are compared."""
    variant = VARIANTS[0]
    settings = json.loads(str(fixture[f"{variant}/config"]))
    names = [(n, w.shape) for n, w in sorted(load_reference(
        build_engine(settings, "matmul"), fixture, f"{variant}/step0/weight").items())]
    net = LinearLoss(names)
    lr, clip_norm = float(fixture["optimizer/lr"]), float(fixture["optimizer/clip_norm"])
    cfg = Config(dict(lr=lr, l2=0.0, optimizer="adam", momentum=0.9))
    step = TrainStep(net, make_optimizer(net, cfg), clip_norm=clip_norm)
    step.set_train()
    dummy = (ms.Tensor(np.zeros((1, 8), np.float32)), ms.Tensor(np.zeros((1, 2, 8), np.float32)),
             ms.Tensor(np.array([8], np.int32)))
    proxy = build_engine(settings, "matmul")
    beta2, eps = 0.999, 1e-8
    clipped_steps = 0
    for k in range(STEPS):
        grads = load_reference(proxy, fixture, f"{variant}/step{k}/grad")
        norm = np.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in grads.values()))
        clipped_steps += norm > clip_norm
        for param in net.recorded:
            param.set_data(ms.Tensor(grads[param.name[len("recorded."):]]))
        before = {p.name: p.asnumpy().copy() for p in net.weights}
        _, finite = step(*dummy)
        assert bool(finite.asnumpy())
        moment1 = {p.name: p.asnumpy() for p in step.optimizer.moment1}
        moment2 = {p.name: p.asnumpy() for p in step.optimizer.moment2}
        exp_avg = load_reference(proxy, fixture, f"optimizer/step{k}/exp_avg")
        exp_avg_sq = load_reference(proxy, fixture, f"optimizer/step{k}/exp_avg_sq")
        after = load_reference(proxy, fixture, f"optimizer/step{k}/after")
        reference_before = load_reference(proxy, fixture, f"{variant}/step{k}/weight")
        correction2 = 1 - beta2 ** (k + 1)
        # The clipping factor comes from a float32 sum of squares over every gradient on both
        # sides, in different orders: it agrees to a few 1e-6, the squared moment to about 1e-5.
        for param in net.weights:
            n = param.name
            np.testing.assert_allclose(moment1[f"moment1.{n}"], exp_avg[n], rtol=1e-4,
                                       atol=1e-9, err_msg=n)
            np.testing.assert_allclose(moment2[f"moment2.{n}"], exp_avg_sq[n], rtol=1e-4,
                                       atol=1e-12, err_msg=n)
            v_hat_sqrt = np.sqrt(exp_avg_sq[n] / correction2)
            # torch's update is a difference of float32 weights: good to about one ulp of the
            # largest weight of the tensor, hence the absolute tolerance.
            ulp = float(np.spacing(np.abs(reference_before[n]).max()))
            torch_update = after[n] - reference_before[n]
            expected = torch_update * (v_hat_sqrt + eps) / (v_hat_sqrt + eps / np.sqrt(correction2))
            np.testing.assert_allclose(param.asnumpy() - before[n], expected, rtol=1e-3,
                                       atol=2 * ulp, err_msg=f"{n} step {k}")
    assert 0 < clipped_steps < STEPS, "the fixture should hold clipped and unclipped steps"


def test_filterbanks_start_like_asteroid():
    """Encoder and decoder weights are xavier-normal as Asteroid's FreeFB: std sqrt(2 / (L (N +
    1))) (fan in L, fan out N L of a [N, 1, L] filterbank). With N L = 4096 draws the sample std
    is within 1.1% (one standard error) of the true one; 6% is over five standard errors."""
    N, L = 128, 32
    expected = np.sqrt(2.0 / (L * (N + 1)))
    net = ConvTasNet(N=N, L=L, B=8, H=8, Sc=8, X=1, R=1)
    for name in ("encoder", "decoder"):
        weight = getattr(net, name).weight.asnumpy()
        assert weight.size == N * L
        assert abs(weight.std() / expected - 1) < 0.06, (name, weight.std(), expected)
        assert abs(weight.mean()) < 5 * expected / np.sqrt(weight.size), name
