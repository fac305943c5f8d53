"""One training step: forward, PIT SI-SNR loss, gradients, all-reduce, clipping, update.

`make_train_step(net, cfg)` is the entry point used by the trainer and the benchmarks:

    step = make_train_step(net, cfg)
    loss, finite = step(mixture, sources, lengths)

with mixture float32 [batch, T], sources float32 [batch, C, T] and lengths int32 [batch]. `loss` is
the scalar PIT loss (negative SI-SNR, dB) of this device's batch; `finite` is False when the loss or
a gradient on any device was NaN/inf, in which case the parameters and the optimizer state were left
unchanged. In data-parallel runs (`init_parallel`) the gradients are averaged over the devices
before they are clipped, so every device applies the same update.
"""
import os

import mindspore as ms
from mindspore import nn, ops
from mindspore.communication import get_group_size, get_rank, init

from src.model_utils.errors import UserError
from src.training.loss import PITLoss

_square_sum = ops.MultitypeFuncGraph("square_sum")


@_square_sum.register("Tensor")
def _grad_square_sum(grad):
    if grad.dtype != ms.float32:
        grad = grad.astype(ms.float32)  # squares of loss-scaled float16 gradients overflow
    return (grad * grad).sum()


_scale = ops.MultitypeFuncGraph("scale")


@_scale.register("Tensor", "Tensor")
def _scale_grad(factor, grad):
    return grad * ops.cast(factor, grad.dtype)


def init_parallel(cfg):
    """Join the launcher's process group when `cfg.distribute`; returns (rank_id, rank_size).

    Call after `init_device`. Data parallel: each device runs the whole model on its own
    `cfg.batch_size` mixtures and the gradients are averaged, so the effective batch is
    `batch_size * rank_size` and the learning rate applies to that averaged gradient.
    """
    if not cfg.distribute:
        return 0, 1
    launched = "RANK_ID" in os.environ or "MS_WORKER_NUM" in os.environ
    if not launched:
        raise UserError("distribute: true needs a launcher (scripts/run_distribute_train.sh, msrun "
                        "or an HCCL rank table); for one device use --distribute=false")
    try:
        init()
    except RuntimeError as err:
        raise UserError(f"distribute: could not join the process group "
                        f"({str(err).strip().splitlines()[0][:300]})") from None
    rank_id, rank_size = get_rank(), get_group_size()
    ms.reset_auto_parallel_context()
    ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True,
                                 device_num=rank_size)
    return rank_id, rank_size


class NetWithLoss(nn.Cell):
    """ConvTasNet followed by PITLoss, computed in float32 whatever precision the network runs in.

    construct(mixture [batch, T], sources [batch, C, T], lengths [batch]) -> scalar loss.
    """

    def __init__(self, net, n_src):
        super().__init__(auto_prefix=False)  # keep the network's parameter names
        self.net = net
        self.loss = PITLoss(n_src)

    def construct(self, mixture, sources, lengths):
        estimates = self.net(mixture).astype(ms.float32)
        return self.loss(estimates, sources, lengths)


class TrainStep(nn.TrainOneStepCell):
    """Loss-scaled gradients, mean all-reduce, global-norm clipping, update skipped if not finite.

    `TrainOneStepCell` supplies the gradient operation and, in data-parallel mode, the gradient
    reducer. The finiteness test is made after the all-reduce, so every device takes the same
    decision: a NaN on one device reaches every device's averaged gradient.

    construct(mixture, sources, lengths) -> (loss: float32 scalar, finite: bool scalar).
    """

    def __init__(self, net_with_loss, optimizer, clip_norm=5.0, loss_scale=1.0):
        super().__init__(net_with_loss, optimizer)
        self.clip_norm = float(clip_norm)
        self.loss_scale = ms.Tensor(float(loss_scale), ms.float32)
        self.hyper_map = ops.HyperMap()
        self.distributed = self.reducer_flag
        if self.distributed:
            self.allreduce = ops.AllReduce()
            self.rank_size = float(get_group_size())

    def construct(self, mixture, sources, lengths):
        loss = self.network(mixture, sources, lengths)
        sens = ops.ones_like(loss) * self.loss_scale
        grads = self.grad(self.network, self.weights)(mixture, sources, lengths, sens)
        grads = self.grad_reducer(grads)
        # One global norm serves the finiteness test and the clipping: a NaN or inf anywhere
        # makes it non-finite (so does a norm beyond float32's range). An IsFinite per gradient
        # instead costs a noticeable part of a CPU step (benchmarks/README.md).
        norm = ops.sqrt(ops.addn(self.hyper_map(_square_sum, grads))) / self.loss_scale
        finite = ops.logical_and(ops.isfinite(norm), ops.isfinite(loss))
        if self.distributed:
            # The mean loss of all devices, for the logs; a NaN anywhere makes it NaN everywhere.
            loss = self.allreduce(loss) / self.rank_size
            finite = ops.logical_and(finite, ops.isfinite(loss))
        # Unscaling and clipping (as ops.clip_by_global_norm, the norm computed once) as one
        # product per gradient: a division per gradient as well is slower (benchmarks/README.md).
        factor = 1.0 / self.loss_scale
        if self.clip_norm > 0:
            factor = factor * self.clip_norm / ops.maximum(norm, self.clip_norm)
        grads = self.hyper_map(ops.partial(_scale, factor), grads)
        if finite:
            loss = ops.depend(loss, self.optimizer(grads))
        return loss, finite


def make_optimizer(net, cfg):
    """Adam or SGD with momentum over the trainable parameters; `cfg.l2` is the weight decay.

    The learning rate is a Parameter (`optimizer.learning_rate`) that `set_learning_rate` changes
    between steps.
    """
    params = net.trainable_params()
    if cfg.lr <= 0:
        raise UserError(f"lr: expected a learning rate > 0, got {cfg.lr}")
    if cfg.l2 < 0:
        raise UserError(f"l2: expected a weight decay >= 0, got {cfg.l2}")
    if cfg.optimizer == "adam":
        return nn.Adam(params, learning_rate=cfg.lr, weight_decay=cfg.l2)
    if cfg.optimizer == "sgd":
        return nn.SGD(params, learning_rate=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.l2)
    raise UserError(f"optimizer: expected adam or sgd, got {cfg.optimizer!r}")


def set_learning_rate(optimizer, lr):
    """Set the learning rate used by the following steps."""
    optimizer.learning_rate.set_data(ms.Tensor(float(lr), ms.float32))


def mixed_precision_level(cfg):
    """`cfg.amp_level` on GPU and Ascend; always O0 (float32) on CPU."""
    return "O0" if cfg.device_target == "CPU" else cfg.amp_level


def make_train_step(net, cfg, optimizer=None):
    """The training cell for `net` (a ConvTasNet) under `cfg`.

    Uses cfg.optimizer, lr, momentum, l2, clip_grad_norm, amp_level, loss_scale and n_src. On GPU
    and Ascend with amp_level other than O0 the step runs the network through
    `mindspore.amp.auto_mixed_precision` (float16, the same parameters; O2/O3 also switch `net`
    itself to float16) and scales the loss by cfg.loss_scale; the loss is computed in float32.

    Returns a TrainStep called as step(mixture [batch, T], sources [batch, C, T], lengths [batch])
    -> (loss, finite); its `optimizer` attribute holds the optimizer.
    """
    if cfg.clip_grad_norm < 0:
        raise UserError(f"clip_grad_norm: expected a norm >= 0 (0: no clipping), "
                        f"got {cfg.clip_grad_norm}")
    level = mixed_precision_level(cfg)
    loss_scale = 1.0
    if level != "O0":
        if cfg.loss_scale <= 0:
            raise UserError(f"loss_scale: expected a scale > 0, got {cfg.loss_scale}")
        net = ms.amp.auto_mixed_precision(net, level)
        loss_scale = cfg.loss_scale
    optimizer = optimizer or make_optimizer(net, cfg)
    step = TrainStep(NetWithLoss(net, cfg.n_src), optimizer, cfg.clip_grad_norm, loss_scale)
    step.set_train()
    return step
