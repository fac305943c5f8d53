"""Fused layers, with hand-written gradients, of the CPU engine (src/model/cpu_engine.py).

In the CPU engine a block's tensors are frames last, [batch, K, H]. Two
chains of a block are one cell each, with a `bprop` that recomputes what it needs from the chain's
input instead of keeping every intermediate tensor for the backward pass:

    GlobalNorm:         x -> gLN(x)
    PReLUNorm:          u -> gLN(PReLU(u))
    DepthwisePReLUNorm: v -> gLN(PReLU(depthwise_conv(v) + bias))

Each `bprop` makes its recomputation depend on the incoming gradient (ops.Depend): without that,
the compiler merges the recomputation with the identical forward computation and keeps every
intermediate after all, at a much higher peak memory (benchmarks/README.md).

The weights come in as inputs (a cell with a custom `bprop` gets gradients only for its inputs),
so the parameters stay where the model keeps them, under their usual names. The reductions are
written as sums over the last axis of 2-D views, the fast reductions of MindSpore's CPU kernels;
autodiff of the same expressions reduces over leading axes, which is several times slower there.

With `use_kernel(True)` (the "kernels" engine) the forward pass of each of these cells
is one C++ kernel (src/model/cpu_kernels.py); the backward pass stays as written here.

MindSpore 2.7: only primitives are called inside these cells: the functional wrappers (ops.relu,
ops.zeros_like) break the graph compiler when they are used in both `construct` and `bprop`.
"""
import numpy as np
from mindspore import Tensor, nn, ops
from mindspore.ops import functional as F

from src.model import cpu_kernels

EPS = 1e-8

_relu = ops.ReLU()
_rsqrt = ops.Rsqrt()
_minimum = ops.Minimum()
_select = ops.Select()
_zeros_like = ops.ZerosLike()
_tile = ops.Tile()
_concat_frames = ops.Concat(axis=1)
_stack_taps = ops.Stack(axis=1)
_bias_add = ops.BiasAdd()
_depend = ops.Depend()
_batch_dot = ops.BatchMatMul(transpose_b=True)


def broadcast_like(x, like):
    """`x` (e.g. [H]) for an elementwise operation with `like` (e.g. [batch, K, H]).

    With a dynamic shape (a graph compiled for any length: set_inputs, a dynamic MINDIR), `x`
    broadcast to the shape of `like` as a tensor of its own. MindSpore 2.7: the CPU Mul/Add kernels,
    given operands of different shapes, keep a buffer of the full shape per operator for the
    whole run (GBs in this network) and run at half speed. With static shapes `x` itself:
    graph-kernel fusion (on for CPU in src/model_utils/device.py) fuses the implicit broadcast,
    but not an explicit one.
    """
    if F.is_sequence_value_unknown(like.shape):
        x = x.reshape((1,) * (like.ndim - x.ndim) + x.shape)
        return _tile(x, tuple(n // m for n, m in zip(like.shape, x.shape)))
    return x


def add_bias(x, bias):
    """x [..., H] + bias [H], as BiasAdd on the 2-D view (no full-size buffer: broadcast_like)."""
    return _bias_add(x.reshape(-1, x.shape[-1]), bias).reshape(x.shape)


def prelu(u, a):
    """PReLU with one slope `a` [1], as two ReLUs (MindSpore's CPU PReLU kernels are slow): the
    form that training differentiates and the backward passes recompute (see _normalised)."""
    return _relu(u) - a * _relu(-u)


def _prelu_forward(u, a):
    """PReLU as u - (1 - a) * min(u, 0), for the fused cells' forward passes (never
    differentiated): three operators instead of five, which matters where they are not fused
    (dynamic shapes)."""
    return u - (1 - a) * _minimum(u, 0.0)


def _column_sums(x):
    """[batch, K, H] -> [H]: the sum over batch and frames."""
    return x.reshape(-1, x.shape[-1]).sum(axis=0)


def _centre(p):
    """p [batch, K, H] -> p minus its mean, as [batch, K*H]."""
    flat = p.reshape(p.shape[0], -1)
    return flat - flat.mean(axis=1, keep_dims=True)


def gln(p, gamma, beta):
    """gLN of p [batch, K, H] -> [batch, K, H].

    As centred * (1/std * gamma) + beta, beta by BiasAdd: in a dynamic-shape graph (no fusion)
    that is one full-size product and one full-size broadcast fewer than normalising first, and
    faster (benchmarks/README.md).

    The sum of squares is a matrix product [batch, 1, K*H] x [batch, K*H, 1]: one pass over the
    centred values instead of a full-size square and a reduction, faster without fusion
    (benchmarks/README.md).
    """
    batch = p.shape[0]
    centred = _centre(p)
    row = centred.reshape(batch, 1, -1)
    rstd = _rsqrt(_batch_dot(row, row).reshape(batch, 1) / centred.shape[1] + EPS)
    scale = (rstd * gamma.reshape(1, -1)).reshape(batch, 1, -1)
    return add_bias(centred.reshape(p.shape) * broadcast_like(scale, p), beta)


def _normalised(p):
    """(the normalised p [batch, K, H], 1/std [batch, 1]): what gLN's backward pass needs.

    The backward passes keep the forms they were tuned with in the fused training graph (the
    variance as a mean of squares, `prelu`); there the forward passes' forms (`gln`,
    `_prelu_forward`) were no faster and raised a training step's peak RSS
    (benchmarks/README.md). MindSpore 2.7: one function choosing by shape would do, but the
    compiler fails on gradients through a function that branches differently in `construct` and
    `bprop`.
    """
    centred = _centre(p)
    rstd = _rsqrt((centred * centred).mean(axis=1, keep_dims=True) + EPS)
    return (centred * rstd).reshape(p.shape), rstd


def _gln_backward(dout, normalised, rstd, gamma):
    """Gradients of gLN: (d input, d gamma, d beta)."""
    dbeta = _column_sums(dout)
    dgamma = _column_sums(dout * normalised)
    g = (dout * broadcast_like(gamma, dout)).reshape(normalised.shape[0], -1)
    n = normalised.reshape(g.shape)
    dp = (g - g.mean(axis=1, keep_dims=True) - n * (g * n).mean(axis=1, keep_dims=True)) * rstd
    return dp.reshape(normalised.shape), dgamma, dbeta


def _prelu_backward(dp, u, a):
    """Gradients of PReLU: (d input, d slope [1])."""
    du = _select(u > 0, dp, dp * a)
    da = (dp * _minimum(u, 0.0)).reshape(1, -1).sum(axis=1)
    return du, da


class FramePad(nn.Cell):
    """x [batch, K, H] with `before` and `after` zero frames: [batch, before + K + after, H].

    MindSpore 2.7: a cell per padding (rather than one function with branches) because the graph
    compiler fails on a function that takes different branches in `construct` and `bprop`.
    """

    def __init__(self, before, after):
        super().__init__()
        self.before, self.after = before, after

    def construct(self, x):
        zero = _zeros_like(x[:, :1])
        if self.before and self.after:
            return _concat_frames((_tile(zero, (1, self.before, 1)), x,
                                   _tile(zero, (1, self.after, 1))))
        if self.before:
            return _concat_frames((_tile(zero, (1, self.before, 1)), x))
        if self.after:
            return _concat_frames((x, _tile(zero, (1, self.after, 1))))
        return x


def tap(padded, p, dilation, total_pad):
    """Frames p*dilation .. p*dilation + K - 1 of `padded` [batch, K + total_pad, H].

    The bounds are constants (the end counted from the back), so they hold for any K.
    """
    start = p * dilation
    stop = start - total_pad
    if stop:
        return padded[:, start:stop]
    return padded[:, start:]


def depthwise(padded, taps, bias, dilation, total_pad):
    """Depthwise dilated convolution as shifted products, frames last.

    sum_p taps[p] * padded[:, p*dilation : p*dilation + K] + bias, with padded [batch, K +
    total_pad, H], taps [P, H], bias [H] -> [batch, K, H].
    """
    z = None
    for p in range(taps.shape[0]):
        product = tap(padded, p, dilation, total_pad)
        product = product * broadcast_like(taps[p], product)
        z = product if z is None else z + product
    return add_bias(z, bias)


class FusedCell(nn.Cell):
    """A fused chain whose forward pass can run as the C++ kernel of the same name."""

    def __init__(self):
        super().__init__()
        self.kernel = None

    def use_kernel(self, on):
        """Run the forward pass as the C++ kernel (on) or as MindSpore operators (off)."""
        self.kernel = cpu_kernels.custom_op(type(self).__name__) if on else None


class GlobalNorm(FusedCell):
    """gLN, frames-last.

    construct(x [batch, K, H], gamma [H], beta [H]) -> [batch, K, H]
    """

    def construct(self, x, gamma, beta):
        if self.kernel is not None:
            return self.kernel(x, gamma, beta)
        return gln(x, gamma, beta)

    def bprop(self, x, gamma, beta, out, dout):
        x = _depend(x, dout)
        normalised, rstd = _normalised(x)
        return _gln_backward(dout, normalised, rstd, gamma)


class PReLUNorm(FusedCell):
    """gLN(PReLU(u)), frames-last.

    construct(u [batch, K, H], a [1], gamma [H], beta [H]) -> [batch, K, H]
    """

    def construct(self, u, a, gamma, beta):
        if self.kernel is not None:
            return self.kernel(u, a, gamma, beta)
        return gln(_prelu_forward(u, a), gamma, beta)

    def bprop(self, u, a, gamma, beta, out, dout):
        u = _depend(u, dout)
        normalised, rstd = _normalised(prelu(u, a))
        dp, dgamma, dbeta = _gln_backward(dout, normalised, rstd, gamma)
        du, da = _prelu_backward(dp, u, a)
        return du, da, dgamma, dbeta


class DepthwisePReLUNorm(FusedCell):
    """gLN(PReLU(depthwise dilated conv(v) + bias)), frames-last; the conv as P shifted products.

    Args:
        P: kernel size; dilation: its dilation; pads: (zero frames before, after) the input.

    construct(v [batch, K, H], weight [H, 1, 1, P], bias [H], a [1], gamma [H], beta [H])
        -> [batch, K, H]
    """

    def __init__(self, P, dilation, pads):
        super().__init__()
        self.P, self.dilation = P, dilation
        self.total_pad = pads[0] + pads[1]
        self.pad = FramePad(pads[0], pads[1])
        # The transposed convolution pads the other way round.
        self.pad_transposed = FramePad(pads[1], pads[0])
        self.kernel_meta = Tensor(np.array([dilation, pads[0]], np.float32))

    def construct(self, v, weight, bias, a, gamma, beta):
        taps = weight.reshape(-1, self.P).T
        if self.kernel is not None:
            return self.kernel(v, taps, bias, self.kernel_meta, a, gamma, beta)
        z = depthwise(self.pad(v), taps, bias, self.dilation, self.total_pad)
        return gln(_prelu_forward(z, a), gamma, beta)

    def bprop(self, v, weight, bias, a, gamma, beta, out, dout):
        v = _depend(v, dout)
        taps = weight.reshape(-1, self.P).T
        padded = self.pad(v)
        z = depthwise(padded, taps, bias, self.dilation, self.total_pad)
        normalised, rstd = _normalised(prelu(z, a))
        dp, dgamma, dbeta = _gln_backward(dout, normalised, rstd, gamma)
        dz, da = _prelu_backward(dp, z, a)
        dtaps = ()
        for p in range(self.P):
            dtaps = dtaps + (_column_sums(dz * tap(padded, p, self.dilation, self.total_pad)),)
        dweight = _stack_taps(dtaps).reshape(weight.shape)
        # The transposed convolution: the kernel reversed, the paddings swapped.
        dz_padded = self.pad_transposed(dz)
        dv = None
        for p in range(self.P):
            product = tap(dz_padded, p, self.dilation, self.total_pad)
            product = product * broadcast_like(taps[self.P - 1 - p], product)
            dv = product if dv is None else dv + product
        return dv, dweight, _column_sums(dz), da, dgamma, dbeta
