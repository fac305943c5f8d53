import itertools

import numpy as np
import pytest
import mindspore as ms
from mindspore import nn

from src.model.conv_tasnet import ConvTasNet
from src.training.loss import PITLoss, pairwise_si_snr
from src.evaluation import metrics


def make_batch(C, lengths, T, seed=0):
    rng = np.random.default_rng(seed)
    ref = rng.standard_normal((len(lengths), C, T)).astype(np.float32)
    est = ref + 0.5 * rng.standard_normal(ref.shape).astype(np.float32)
    for b, n in enumerate(lengths):
        # Garbage beyond the valid length: it must not count.
        ref[b, :, n:] = 100.0
        est[b, :, n:] = -50.0
    return est, ref, np.array(lengths, np.int32)


def numpy_pit_loss(est, ref, lengths):
    best = []
    for b, n in enumerate(lengths):
        _, scores = metrics.best_permutation(est[b, :, :n], ref[b, :, :n])
        best.append(scores.mean())
    return -np.mean(best)


@pytest.mark.parametrize("C", [2, 3])
def test_loss_matches_numpy_with_padding(C):
    est, ref, lengths = make_batch(C, [900, 640, 301], 900)
    loss = PITLoss(C)(ms.Tensor(est), ms.Tensor(ref), ms.Tensor(lengths)).asnumpy()
    assert abs(float(loss) - numpy_pit_loss(est, ref, lengths)) < 1e-4


@pytest.mark.parametrize("C", [2, 3])
def test_pairwise_matches_numpy(C):
    est, ref, lengths = make_batch(C, [500, 123], 500, seed=1)
    pairwise = pairwise_si_snr(ms.Tensor(est), ms.Tensor(ref), ms.Tensor(lengths)).asnumpy()
    for b, n in enumerate(lengths):
        expected = metrics.si_snr(est[b, :, None, :n], ref[b, None, :, :n])
        np.testing.assert_allclose(pairwise[b], expected, atol=1e-4)


@pytest.mark.parametrize("C", [2, 3])
def test_pit_finds_the_permutation(C):
    rng = np.random.default_rng(2)
    ref = rng.standard_normal((len(list(itertools.permutations(range(C)))), C, 400))
    loss = PITLoss(C)
    # Utterance b's estimates are its references shuffled by permutation b, plus a little noise.
    est = np.stack([ref[b, list(np.argsort(perm))] for b, perm in enumerate(loss.perms)])
    est = est + 0.01 * rng.standard_normal(est.shape)
    lengths = np.full(len(est), 400, np.int32)
    args = (ms.Tensor(est.astype(np.float32)), ms.Tensor(ref.astype(np.float32)),
            ms.Tensor(lengths))
    scores, _ = loss.scores(*args)
    best = scores.asnumpy().argmax(axis=1)
    np.testing.assert_array_equal(np.array(loss.perms)[best],
                                  [np.argsort(np.argsort(p)) for p in loss.perms])
    assert scores.asnumpy().max(axis=1).min() > 30
    assert float(loss(*args).asnumpy()) == pytest.approx(-scores.asnumpy().max(axis=1).mean())


def test_numpy_si_snri_on_orthogonal_sources():
    # Two zero-mean orthogonal sources of equal energy: the mixture scores 0 dB against each, and
    # s1 + 0.1 s2 scores exactly 20 dB against s1, so the improvement is 20 dB.
    t = np.arange(800) / 800.0
    s1, s2 = np.sin(2 * np.pi * 5 * t), np.cos(2 * np.pi * 5 * t)
    sources = np.stack([s1, s2])
    estimates = np.stack([s2 + 0.1 * s1, s1 + 0.1 * s2])     # in swapped order
    score, improvement, perm = metrics.si_snri(estimates, sources, s1 + s2)
    assert list(perm) == [1, 0]
    assert score == pytest.approx(20.0, abs=1e-6)
    assert improvement == pytest.approx(20.0, abs=1e-6)


@pytest.mark.parametrize("silent", ["references", "estimates", "both"])
def test_silent_sources_give_finite_loss_and_gradients(silent):
    rng = np.random.default_rng(4)
    est = rng.standard_normal((2, 2, 300)).astype(np.float32)
    ref = rng.standard_normal((2, 2, 300)).astype(np.float32)
    if silent in ("references", "both"):
        ref[:, 1] = 0.0
    if silent in ("estimates", "both"):
        est[:, 0] = 0.0
    loss_fn = PITLoss(2)
    lengths = ms.Tensor(np.array([300, 200], np.int32))
    references = ms.Tensor(ref)

    def loss_of(estimates):
        return loss_fn(estimates, references, lengths)

    loss, grad = ms.value_and_grad(loss_of)(ms.Tensor(est))
    assert np.isfinite(loss.asnumpy()).all()
    assert np.isfinite(grad.asnumpy()).all()


@pytest.mark.slow
def test_one_step_reduces_loss_on_a_fixed_batch():
    ms.set_seed(0)
    net = ConvTasNet(N=16, L=4, B=8, H=16, Sc=8, P=3, X=2, R=1)
    loss_fn = PITLoss(2)
    rng = np.random.default_rng(5)
    t = np.arange(400) / 8000.0
    sources = np.stack([np.sin(2 * np.pi * 440 * t) * np.hanning(400),
                        0.5 * rng.standard_normal(400)]).astype(np.float32)[None]
    mixture = ms.Tensor(sources.sum(axis=1))
    references = ms.Tensor(sources)
    lengths = ms.Tensor(np.array([400], np.int32))
    optimizer = nn.Adam(net.trainable_params(), learning_rate=1e-2)
    def forward(m, r, n):
        return loss_fn(net(m), r, n)

    grad_fn = ms.value_and_grad(forward, None, optimizer.parameters)
    before, grads = grad_fn(mixture, references, lengths)
    optimizer(grads)
    after, _ = grad_fn(mixture, references, lengths)
    assert float(after.asnumpy()) < float(before.asnumpy())
