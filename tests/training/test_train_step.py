"""The training step: updates against reference gradients computed op by op (PYNATIVE mode)."""
import numpy as np
import pytest
import mindspore as ms
from mindspore import nn

from src.model.build import build_network
from src.model_utils.errors import UserError
from src.model_utils.config import load_config
from src.training.train_step import (NetWithLoss, TrainStep, _grad_square_sum, make_optimizer,
                            make_train_step, mixed_precision_level)
from helpers import flags, run_python


def tiny_config(*extra):
    return load_config(flags() + list(extra))


def tiny_net():
    return build_network(tiny_config())


def batch(seed=0, batch_size=2, T=120, nan=False):
    rng = np.random.default_rng(seed)
    sources = rng.standard_normal((batch_size, 2, T)).astype(np.float32)
    mixture = sources.sum(axis=1)
    if nan:
        mixture[0, 7] = np.nan
    lengths = np.full(batch_size, T, np.int32)
    lengths[-1] = T - 20  # a padded row: its tail must not count
    return mixture, sources, lengths


def reference_gradients(net, arrays, n_src=2):
    """(the mean PIT loss, its gradients w.r.t. the trainable parameters), op by op (PYNATIVE)."""
    previous = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        loss_net = NetWithLoss(net, n_src)
        weights = net.trainable_params()
        loss, grads = ms.value_and_grad(loss_net, grad_position=None, weights=weights)(
            *[ms.Tensor(a) for a in arrays])
        return float(loss.asnumpy()), {w.name: g.asnumpy() for w, g in zip(weights, grads)}
    finally:
        ms.set_context(mode=previous)


def values(cell):
    return {p.name: p.asnumpy().copy() for p in cell.get_parameters()}


def run(step, arrays):
    loss, finite = step(*[ms.Tensor(a) for a in arrays])
    return float(loss.asnumpy()), bool(finite.asnumpy())


def decays(name):
    """MindSpore optimizers apply weight decay to all parameters but norm gains and biases."""
    return "gamma" not in name and "beta" not in name


@pytest.mark.slow
def test_updates_clipped_decayed_with_momentum_and_nonfinite_batches_skipped(graph_mode):
    assert not np.isfinite(check_sgd_updates())


@pytest.mark.slow
def test_updates_right_with_graph_kernel_fusion():
    # In a subprocess: init_device turns graph-kernel fusion on (CPU) for the whole process, as
    # in train.py. A fused kernel once left the encoder's gradient unwritten (garbage) there.
    # The NaN batch is still skipped, but the loss it reports need not be NaN: MindSpore's fused
    # kernels may drop a NaN in the loss's reductions (the gradient norm still catches it).
    script = ("import sys; sys.path[:0] = ['tests/training', 'tests', '.']\n"
              "import mindspore as ms\n"
              "from src.model_utils.device import init_device\n"
              "from test_train_step import check_sgd_updates, tiny_config\n"
              "init_device(tiny_config())\n"
              "assert ms.get_context('enable_graph_kernel')\n"
              "check_sgd_updates()\n")
    run_python(script)


def check_sgd_updates():
    """Four GRAPH-mode steps against MindSpore's SGD formula applied to PYNATIVE gradients.

    The third batch holds a NaN: that step must leave everything unchanged. Returns the loss
    that step reported.
    """
    # SGD with momentum and weight decay, clipping active, and the loss-scale path that mixed
    # precision uses on GPU/Ascend (here in float32: scaled by 1024, then unscaled). Several steps,
    # because a stale gradient or state would show only from the second step on.
    ms.set_seed(1)
    lr, momentum, l2, clip = 0.1, 0.9, 0.01, 0.05
    cfg = tiny_config("--optimizer=sgd", f"--momentum={momentum}", f"--l2={l2}", f"--lr={lr}")
    net = tiny_net()
    step = TrainStep(NetWithLoss(net, 2), make_optimizer(net, cfg), clip_norm=clip,
                     loss_scale=1024.0)
    step.set_train()
    velocity = {p.name: np.zeros(p.shape, np.float32) for p in net.trainable_params()}
    for k, nan in enumerate([False, False, True, False]):
        arrays = batch(seed=k, nan=nan)
        before = values(step)
        loss, finite = run(step, arrays)
        if nan:
            assert not finite
            nan_loss = loss
            after = values(step)  # weights, momentum buffers: all as they were
            assert after.keys() == before.keys()
            for name in before:
                np.testing.assert_array_equal(after[name], before[name], err_msg=name)
            continue
        assert finite and np.isfinite(loss)
        expected_loss, grads = reference_gradients(net_at(before), arrays)
        assert loss == pytest.approx(expected_loss, rel=1e-5)
        norm = np.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in grads.values()))
        assert norm > clip  # so the clipping is active
        for name, g in grads.items():
            # MindSpore's SGD: v = momentum * v + (g + l2 * w); w -= lr * v
            g = g * (clip / norm) + (l2 * before[name] if decays(name) else 0.0)
            velocity[name] = momentum * velocity[name] + g
            np.testing.assert_allclose(net.parameters_dict()[name].asnumpy(),
                                       before[name] - lr * velocity[name],
                                       rtol=1e-4, atol=1e-6, err_msg=name)
    return nan_loss


def net_at(parameter_values):
    """A tiny ConvTasNet holding the given parameter values."""
    net = tiny_net()
    for param in net.get_parameters():
        param.set_data(ms.Tensor(parameter_values[param.name]))
    return net


def test_mixed_precision_only_off_cpu_and_bad_settings_refused():
    assert mixed_precision_level(tiny_config("--amp_level=O2")) == "O0"
    assert mixed_precision_level(tiny_config("--amp_level=O2", "--device_target=GPU")) == "O2"
    net = tiny_net()
    with pytest.raises(UserError, match="clip_grad_norm"):
        make_train_step(net, tiny_config("--clip_grad_norm=-1"))
    with pytest.raises(UserError, match="lr: expected"):
        make_train_step(net, tiny_config("--lr=0"))
    with pytest.raises(UserError, match="l2: expected"):
        make_train_step(net, tiny_config("--l2=-0.1"))


def test_optimizers_named_by_the_config():
    net = tiny_net()
    assert isinstance(make_optimizer(net, tiny_config("--optimizer=adam")), nn.Adam)
    sgd = make_optimizer(net, tiny_config("--optimizer=sgd", "--momentum=0.8", "--lr=0.02"))
    assert isinstance(sgd, nn.SGD)
    assert float(sgd.learning_rate.asnumpy()) == pytest.approx(0.02)


def test_gradient_norm_of_loss_scaled_float16_gradients_is_finite():
    # Mixed precision: gradients scaled by the loss scale; 300**2 is beyond float16's range.
    grad = ms.Tensor(np.full((4,), 300.0, np.float16))
    assert float(_grad_square_sum(grad).asnumpy()) == pytest.approx(4 * 300.0 ** 2)
