"""Conv-TasNet (Luo & Mesgarani, TASLP 2019, https://arxiv.org/abs/1809.07454) as a MindSpore cell.

Names follow the paper:
    N  number of encoder filters (basis signals)
    L  encoder filter length in samples; the encoder stride is L/2
    B  bottleneck channels, the input/residual channels of each block
    H  channels inside each convolutional block
    Sc skip-connection channels (0 or None: no skip path, the last residual output feeds the mask)
    P  kernel size of the depthwise convolutions
    X  blocks per repeat, with dilations 1, 2, ..., 2^(X-1)
    R  number of repeats
    C  number of speakers (sources)

Shapes use `batch`, `T` (samples), `K` (encoder frames) and channel names from the list above.

One model, three formulations of the same computation (`ConvTasNet.set_formulation`), chosen by
device in `default_formulation`:
    "conv"    channels first, [batch, channels, K]: MindSpore's convolution and GroupNorm
              operators. Used on Ascend and GPU.
    "matmul"  frames last, [batch, K, channels]: the 1x1 convolutions as matrix products, the
              depthwise convolution as P shifted products, gLN and PReLU fused with hand-written
              gradients (src/model/fused_layers.py). Used on CPU, where MindSpore's depthwise-conv,
              GroupNorm and PReLU kernels (forward and backward) cost more than the matrix
              products of the whole network (benchmarks/README.md).
    "kernels" "matmul" with the forward pass of each fused chain (gLN, PReLU, the depthwise
              convolution) as one C++ kernel (src/model/cpu_kernels.py). Used on CPU when the kernels
              can be compiled there: 2-6x faster than those chains in MindSpore's operators, and
              in graphs of any length, where MindSpore has no graph-kernel fusion.
All have the same parameters (names and shapes) and the same outputs and gradients up to float
rounding. An exported graph (MINDIR, ONNX) always holds MindSpore's own operators
(src/deploy/export.py), whatever the formulation.
"""
import mindspore as ms
from mindspore import nn, ops
from mindspore.common.initializer import XavierNormal
from mindspore.ops import functional as F

from src.model import cpu_kernels
from src.model_utils.errors import UserError
from src.model.fused_layers import (DepthwisePReLUNorm, FramePad, FusedCell, GlobalNorm, PReLUNorm,
                              broadcast_like, depthwise, prelu)

EPS = 1e-8
FORMULATIONS = ("conv", "matmul", "kernels")


def default_formulation(device_target=None):
    """The fastest formulation on `device_target` (default: the context's): on CPU "kernels"
    where the C++ kernels are on (config key cpu_kernels) and build, else "matmul"."""
    target = device_target or ms.get_context("device_target")
    if target != "CPU":
        return "conv"
    return "kernels" if cpu_kernels.available() else "matmul"


class GlobalLayerNorm(nn.Cell):
    """gLN: normalise over channels and frames of each utterance; trainable per-channel gain, bias.

    [batch, channels, K] -> [batch, channels, K]; construct_frames_last: [batch, K, channels]
    """

    def __init__(self, channels):
        super().__init__()
        self.norm = nn.GroupNorm(1, channels, eps=EPS)
        self.fused = GlobalNorm()

    def construct(self, x):
        return self.norm(x)

    def construct_frames_last(self, x):
        return self.fused(x, self.norm.gamma, self.norm.beta)


class CumulativeLayerNorm(nn.Cell):
    """cLN: frame k is normalised with the mean and variance of all channels of frames 0..k (causal).

    [batch, channels, K] -> [batch, channels, K]; construct_frames_last: [batch, K, channels]
    """

    def __init__(self, channels):
        super().__init__()
        self.gamma = ms.Parameter(ops.ones((1, channels, 1), ms.float32), name="gamma")
        self.beta = ms.Parameter(ops.zeros((1, channels, 1), ms.float32), name="beta")
        self.channels = channels

    def construct(self, x):
        return self.normalise(x, 1, 2) * self.gamma + self.beta

    def construct_frames_last(self, x):
        y = self.normalise(x, 2, 1)
        gamma, beta = self.gamma.reshape(-1), self.beta.reshape(-1)
        return y * broadcast_like(gamma, y) + broadcast_like(beta, y)

    def normalise(self, x, channel_axis, frame_axis):
        """x normalised with the running statistics of frames 0..k. The running sums, means and
        variances ([batch, 1, K] or [batch, K, 1]) are float64: float32 running sums lose
        precision as they grow, and on long signals the output drifts from an exact computation
        (benchmarks/README.md). The streaming separator carries the same sums."""
        frame_sum = x.sum(axis=channel_axis, keepdims=True).astype(ms.float64)
        frame_pow_sum = (x * x).sum(axis=channel_axis, keepdims=True).astype(ms.float64)
        cum_sum = ops.cumsum(frame_sum, axis=frame_axis)
        cum_pow_sum = ops.cumsum(frame_pow_sum, axis=frame_axis)
        count = ops.cumsum(ops.ones_like(cum_sum), axis=frame_axis) * self.channels
        cum_mean = cum_sum / count
        cum_var = ops.relu(cum_pow_sum / count - cum_mean * cum_mean)
        cum_std = ops.sqrt(cum_var + EPS)
        return (x - cum_mean.astype(ms.float32)) / cum_std.astype(ms.float32)


class BatchNorm(nn.BatchNorm1d):
    """BN over batch and frames, per channel (nn.BatchNorm1d and its parameters).

    [batch, channels, K] -> [batch, channels, K]; construct_frames_last: [batch, K, channels]
    """

    def construct_frames_last(self, x):
        return self.construct(x.reshape(-1, x.shape[-1])).reshape(x.shape)


def make_norm(norm_type, channels):
    """The normalisation layer named by `norm_type`: 'gLN', 'cLN' or 'BN'."""
    if norm_type == "gLN":
        return GlobalLayerNorm(channels)
    if norm_type == "cLN":
        return CumulativeLayerNorm(channels)
    if norm_type == "BN":
        return BatchNorm(channels)
    raise UserError(f"norm_type: expected gLN, cLN or BN, got {norm_type!r}")


class PointwiseConv(nn.Conv1d):
    """A 1x1 convolution: [batch, in_channels, K] -> [batch, out_channels, K].

    construct_frames_last: one matrix product over batch and frames,
    [batch, K, in_channels] -> [batch, K, out_channels].
    """

    def __init__(self, in_channels, out_channels, has_bias=True):
        super().__init__(in_channels, out_channels, 1, has_bias=has_bias, pad_mode="valid")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.matmul = ops.MatMul(transpose_b=True)
        self.bias_add = ops.BiasAdd()

    def construct_frames_last(self, x):
        weight = self.weight.reshape(self.out_channels, self.in_channels)
        y = self.matmul(x.reshape(-1, self.in_channels), weight)
        if self.has_bias:
            y = self.bias_add(y, self.bias)
        return y.reshape(x.shape[0], -1, self.out_channels)

    def construct_frames_last_rows(self, x, start, stop):
        """Output channels start..stop-1 only, of a convolution with a bias: [batch, K,
        in_channels] -> [batch, K, stop-start]. (A separate method: routing construct_frames_last
        through it made the fused static graph's peak memory 32 MB higher.)"""
        weight = self.weight.reshape(self.out_channels, self.in_channels)[start:stop]
        y = self.bias_add(self.matmul(x.reshape(-1, self.in_channels), weight),
                          self.bias[start:stop])
        return y.reshape(x.shape[0], -1, stop - start)


def conv1x1(in_channels, out_channels, has_bias=True):
    """A pointwise convolution: [batch, in_channels, K] -> [batch, out_channels, K]."""
    return PointwiseConv(in_channels, out_channels, has_bias)


class ConvBlock(nn.Cell):
    """One 1-D convolutional block of the separator (the paper's Fig. 1C).

    1x1 conv B->H, PReLU, norm, depthwise conv (kernel P, dilation d), PReLU, norm, then a residual
    1x1 conv H->B and a skip 1x1 conv H->Sc (no skip conv when Sc is 0).

    [batch, B, K] -> (residual [batch, B, K], skip [batch, Sc, K] or None);
    construct_frames_last: the same with [batch, K, channels].
    """

    def __init__(self, B, H, Sc, P, dilation, norm_type, causal):
        super().__init__()
        self.H, self.dilation = H, dilation
        self.conv1x1 = conv1x1(B, H)
        self.prelu1 = nn.PReLU()
        self.norm1 = make_norm(norm_type, H)
        pad = (P - 1) * dilation
        # Causal: all padding in the past; otherwise half on each side.
        self.pad = (pad, 0) if causal else (pad // 2, pad - pad // 2)
        # ops.Pad, not ops.pad: in GRAPH mode on CPU (MindSpore 2.7.1) the gradient of ops.pad
        # (PadV3) is wrong from the second training step on; ops.Pad's is right.
        self.pad_op = ops.Pad(((0, 0), (0, 0), self.pad))
        self.dconv = nn.Conv1d(H, H, P, dilation=dilation, group=H, has_bias=True,
                               pad_mode="valid")
        self.prelu2 = nn.PReLU()
        self.norm2 = make_norm(norm_type, H)
        self.res_conv = conv1x1(H, B)
        self.skip_conv = conv1x1(H, Sc) if Sc else None
        # Frames last with gLN: PReLU + gLN, and depthwise conv + PReLU + gLN, as fused cells.
        self.fuse_gln = norm_type == "gLN"
        self.prelu_norm = PReLUNorm()
        self.dconv_prelu_norm = DepthwisePReLUNorm(P, dilation, self.pad)
        self.frame_pad = FramePad(*self.pad)

    def construct(self, x):
        y = self.norm1(self.prelu1(self.conv1x1(x)))
        y = self.pad_op(y)
        y = self.norm2(self.prelu2(self.dconv(y)))
        residual = self.res_conv(y)
        if self.skip_conv is None:
            return residual, None
        return residual, self.skip_conv(y)

    def construct_frames_last(self, x):
        u = self.conv1x1.construct_frames_last(x)
        if self.fuse_gln:
            y = self.prelu_norm(u, self.prelu1.w, self.norm1.norm.gamma, self.norm1.norm.beta)
            y = self.dconv_prelu_norm(y, self.dconv.weight, self.dconv.bias, self.prelu2.w,
                                      self.norm2.norm.gamma, self.norm2.norm.beta)
        else:
            y = self.norm1.construct_frames_last(prelu(u, self.prelu1.w))
            taps = self.dconv.weight.reshape(self.H, -1).T
            y = depthwise(self.frame_pad(y), taps, self.dconv.bias, self.dilation,
                          self.pad[0] + self.pad[1])
            y = self.norm2.construct_frames_last(prelu(y, self.prelu2.w))
        residual = self.res_conv.construct_frames_last(y)
        if self.skip_conv is None:
            return residual, None
        return residual, self.skip_conv.construct_frames_last(y)


class TemporalConvNet(nn.Cell):
    """The separator: masks for C sources from the encoder output.

    norm, 1x1 bottleneck N->B, R repeats of X ConvBlocks, PReLU, 1x1 conv (Sc or B)->C*N, mask
    nonlinearity.

    [batch, N, K] -> masks [batch, C, N, K], in either formulation (`frames_last`, set by
    ConvTasNet.set_formulation); construct_frames_last: [batch, K, N] -> masks [batch, K, C, N].
    """

    def __init__(self, N, B, H, Sc, P, X, R, C, norm_type, causal, mask_nonlinear):
        super().__init__()
        self.C, self.N = C, N
        self.layer_norm = make_norm(norm_type, N)
        self.bottleneck = conv1x1(N, B)
        self.blocks = nn.CellList([ConvBlock(B, H, Sc, P, 2 ** x, norm_type, causal)
                                   for _ in range(R) for x in range(X)])
        self.use_skip = bool(Sc)
        self.mask_prelu = nn.PReLU()
        self.mask_conv = conv1x1(Sc if Sc else B, C * N)
        if mask_nonlinear == "relu":
            self.mask_act = nn.ReLU()
        elif mask_nonlinear == "sigmoid":
            self.mask_act = nn.Sigmoid()
        elif mask_nonlinear == "softmax":
            self.mask_act = nn.Softmax(axis=1)
        else:
            raise UserError(f"mask_nonlinear: expected relu, sigmoid or softmax, "
                            f"got {mask_nonlinear!r}")
        # Frames last the speakers are axis 2 of [batch, K, C, N].
        self.mask_act_frames_last = (nn.Softmax(axis=2) if mask_nonlinear == "softmax"
                                     else self.mask_act)
        self.mask_across_speakers = mask_nonlinear == "softmax"
        self.frames_last = False

    def construct(self, w):
        if self.frames_last:
            return self.construct_frames_last(w.transpose(0, 2, 1)).transpose(0, 2, 3, 1)
        scores = self.mask_scores(w, False).reshape(w.shape[0], self.C, self.N, -1)
        return self.mask_act(scores)

    def construct_frames_last(self, w):
        scores = self.mask_scores(w, True).reshape(w.shape[0], -1, self.C, self.N)
        return self.mask_act_frames_last(scores)

    def speaker_mask_frames_last(self, features, c):
        """Speaker c's mask [batch*K, N] from mask_features(w, True) [batch, K, Sc or B]; not
        for the softmax mask, which needs every speaker's scores."""
        return self.mask_act(self.mask_conv.construct_frames_last_rows(
            features, c * self.N, (c + 1) * self.N).reshape(-1, self.N))

    def mask_scores(self, w, frames_last):
        """Scores before the mask nonlinearity: [batch, C*N, K] (frames last: [batch, K, C*N])."""
        y = self.mask_features(w, frames_last)
        if frames_last:
            return self.mask_conv.construct_frames_last(y)
        return self.mask_conv(y)

    def mask_features(self, w, frames_last):
        """The input of the mask's 1x1 convolution: [batch, Sc or B, K] (frames last: [batch, K,
        Sc or B])."""
        if frames_last:
            x = self.bottleneck.construct_frames_last(self.layer_norm.construct_frames_last(w))
        else:
            x = self.bottleneck(self.layer_norm(w))
        skip_sum = 0
        for block in self.blocks:
            if frames_last:
                residual, skip = block.construct_frames_last(x)
            else:
                residual, skip = block(x)
            x = x + residual
            if self.use_skip:
                skip_sum = skip_sum + skip
        y = skip_sum if self.use_skip else x
        if frames_last:
            return prelu(y, self.mask_prelu.w)
        return self.mask_prelu(y)


class ConvTasNet(nn.Cell):
    """Conv-TasNet: encoder, TCN separator, overlap-add decoder.

    Args:
        N, L, B, H, Sc, P, X, R, C: sizes named as in the paper (see the module docstring).
        norm_type: 'gLN', 'cLN' or 'BN'.
        causal: causal depthwise convolutions, and a causal encoder alignment, so that no
            output sample depends on a later input sample. Needs norm_type 'cLN'.
        mask_nonlinear: 'relu', 'sigmoid' or 'softmax' (over the C speakers).
        encoder_activation: 'linear' or 'relu' after the encoder.
        edge_pad: zeros added before the first and after the last sample before encoding, so
            that the edges are covered by as many frames as the middle (torchaudio uses L/2;
            Asteroid and the default use 0).

    construct(mixture): mixture float32 [batch, T] with T >= L -> estimates [batch, C, T].

    The input is zero-padded at the end so that the frames cover every sample. When causal, it is
    also padded with L-1 zeros in front, so the window of the frame that starts writing output
    sample t ends at input sample t.

    The formulation (module docstring) is `default_formulation()` at construction; change it with
    `set_formulation` before the first call.
    """

    def __init__(self, N=512, L=16, B=128, H=512, Sc=128, P=3, X=8, R=3, C=2, norm_type="gLN",
                 causal=False, mask_nonlinear="relu", encoder_activation="linear", edge_pad=0):
        super().__init__()
        if L < 2 or L % 2:
            raise UserError(f"L: expected an even filter length >= 2, got {L}")
        if causal and norm_type != "cLN":
            raise UserError(f"norm_type: a causal model needs cLN, got {norm_type} "
                            "(gLN and BN use statistics of future frames)")
        if encoder_activation not in ("linear", "relu"):
            raise UserError(f"encoder_activation: expected linear or relu, "
                            f"got {encoder_activation!r}")
        for name, value in (("N", N), ("B", B), ("H", H), ("P", P), ("X", X), ("R", R), ("C", C)):
            if value < 1:
                raise UserError(f"{name}: expected a positive integer, got {value}")
        self.N, self.L, self.C, self.stride = N, L, C, L // 2
        if edge_pad < 0:
            raise UserError(f"edge_pad: expected a number of samples >= 0, got {edge_pad}")
        self.edge_pad = edge_pad
        self.front_pad = (L - 1 if causal else 0) + edge_pad
        # Filterbanks initialised as Asteroid's (xavier normal, std sqrt(2 / (L (N + 1)))): with
        # MindSpore's default (normal, std 0.1) they start several times larger and Adam's
        # steps, about lr whatever the scale, move them relatively that much more slowly.
        self.encoder = nn.Conv1d(1, N, L, stride=self.stride, has_bias=False, pad_mode="valid",
                                 weight_init=XavierNormal())
        self.encoder_relu = encoder_activation == "relu"
        self.separator = TemporalConvNet(N, B, H, Sc, P, X, R, C, norm_type, causal,
                                         mask_nonlinear)
        self.decoder = nn.Conv1dTranspose(N, 1, L, stride=self.stride, has_bias=False,
                                          pad_mode="valid", weight_init=XavierNormal())
        # ops.Pad (constant paddings) rather than ops.pad (PadV3): the ONNX converter has no PadV3.
        self.input_pad = ops.Pad(((0, 0), (self.front_pad, edge_pad + L)))
        self.matmul = ops.MatMul()
        self.matmul_nt = ops.MatMul(transpose_b=True)
        self.formulation = None
        self.set_formulation(default_formulation())

    def set_formulation(self, formulation):
        """Compute as "conv", "matmul" or "kernels" (module docstring); the parameters are the
        same."""
        if formulation not in FORMULATIONS:
            raise UserError(f"formulation: expected one of {FORMULATIONS}, got {formulation!r}")
        if formulation == "kernels" and cpu_kernels.library() is None:
            raise UserError("formulation: the CPU kernels cannot be built on this machine "
                            "(a C++ compiler is needed); use matmul")
        self.formulation = formulation
        self.separator.frames_last = formulation != "conv"
        for _, cell in self.cells_and_names():
            if isinstance(cell, FusedCell):
                cell.use_kernel(formulation == "kernels")
        return self

    def num_frames(self, length):
        """Encoder frames K for an input of `length` samples."""
        padded = length + self.front_pad + self.edge_pad
        # max(1, ceil((padded - L) / stride) + 1) with L = 2 * stride, written as integer
        # arithmetic: with a dynamic time axis (set_inputs, or a MINDIR exported with
        # input_length 0) max() falls back to the Python interpreter and an `if` becomes a
        # switch that a reloaded MINDIR cannot run twice.
        frames = (padded - 1) // self.stride
        return frames + 1 // (frames + 1)

    def construct(self, mixture):
        batch, length = mixture.shape
        frames = self.num_frames(length)
        span = (frames - 1) * self.stride + self.L
        # A constant end padding cut to the frames' span: a MINDIR with a dynamic time axis
        # cannot hold a padding that depends on the length.
        x = self.input_pad(mixture)[:, :span]                  # [batch, (K-1)*L/2+L]
        if self.formulation != "conv":
            return self.construct_frames_last(x, length)
        x = x.expand_dims(1)
        w = self.encoder(x)                                    # [batch, N, K]
        if self.encoder_relu:
            w = ops.relu(w)
        masks = self.separator(w)                              # [batch, C, N, K]
        masked = (masks * w.expand_dims(1)).reshape(batch * self.C, self.N, -1)
        s = self.decoder(masked)                               # [batch*C, 1, (K-1)*L/2+L]
        s = s[:, 0, self.edge_pad:self.edge_pad + length]
        return s.reshape(batch, self.C, -1)

    def construct_frames_last(self, x, length):
        """The matmul formulation of `construct` from the padded input x [batch, (K+1)*L/2]."""
        batch, S = x.shape[0], self.stride
        halves = x.reshape(batch, -1, S)                        # [batch, K+1, L/2]
        frames = ops.concat((halves[:, :-1], halves[:, 1:]), axis=2)      # [batch, K, L]
        basis = self.encoder.weight.reshape(self.N, self.L)
        w = self.matmul_nt(frames.reshape(-1, self.L), basis).reshape(batch, -1, self.N)
        if self.encoder_relu:
            w = ops.relu(w)                                    # [batch, K, N]
        synthesis = self.decoder.weight.reshape(self.N, self.L)
        if (self.training or self.separator.mask_across_speakers
                or not F.is_sequence_value_unknown(w.shape)):
            masks = self.separator.construct_frames_last(w)    # [batch, K, C, N]
            masked = (masks * broadcast_like(w.expand_dims(2), masks)).reshape(-1, self.N)
            segments = self.matmul(masked, synthesis).reshape(batch, -1, self.C, self.L)
            segments = segments.transpose(0, 2, 1, 3)          # [batch, C, K, L]
        else:
            # Inference with a dynamic time axis (no graph-kernel fusion): one speaker's mask
            # [batch*K, N] at a time, and no [batch, K, C, N] copy of w: a 60-s input peaks at
            # 1.14 instead of 1.52 GB (benchmarks/README.md). With static shapes the fused
            # kernels do better with all speakers at once.
            features = self.separator.mask_features(w, True)   # [batch, K, Sc or B]
            w = w.reshape(-1, self.N)
            segments = ()
            for c in range(self.C):
                masked = self.separator.speaker_mask_frames_last(features, c) * w
                segments += (self.matmul(masked, synthesis).reshape(batch, 1, -1, self.L),)
            segments = ops.concat(segments, axis=1)            # [batch, C, K, L]
        # Overlap-add with hop L/2: output hop k is the first half of frame k plus the second
        # half of frame k-1.
        zero = ops.zeros_like(segments[:, :, :1, :S])
        s = (ops.concat((segments[:, :, :, :S], zero), axis=2)
             + ops.concat((zero, segments[:, :, :, S:]), axis=2))   # [batch, C, K+1, L/2]
        s = s.reshape(batch, self.C, -1)
        return s[:, :, self.edge_pad:self.edge_pad + length]


def count_parameters(net):
    """Number of trainable scalars in `net`."""
    return sum(int(p.size) for p in net.trainable_params())


def model_kwargs(cfg):
    """ConvTasNet keywords from a Config (C is the config's n_src)."""
    return dict(N=cfg.N, L=cfg.L, B=cfg.B, H=cfg.H, Sc=cfg.Sc, P=cfg.P, X=cfg.X, R=cfg.R,
                C=cfg.n_src, norm_type=cfg.norm_type, causal=cfg.causal,
                mask_nonlinear=cfg.mask_nonlinear, encoder_activation=cfg.encoder_activation,
                edge_pad=cfg.edge_pad)
