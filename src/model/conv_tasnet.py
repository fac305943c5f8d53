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

This is the network as the paper draws it, channels first, in MindSpore's own operators: what
Ascend and GPU run, what exports, and the reference of the faster CPU engine
(src/model/cpu_engine.py), which computes the same function from the same parameters. Build
either with src.model.build_network.
"""
import mindspore as ms
from mindspore import nn, ops
from mindspore.common.initializer import XavierNormal

from src.model_utils.errors import UserError

EPS = 1e-8


class GlobalLayerNorm(nn.Cell):
    """gLN: normalise over channels and frames of each utterance; trainable per-channel gain, bias.

    [batch, channels, K] -> [batch, channels, K]
    """

    def __init__(self, channels):
        super().__init__()
        self.norm = nn.GroupNorm(1, channels, eps=EPS)

    def construct(self, x):
        return self.norm(x)


class CumulativeLayerNorm(nn.Cell):
    """cLN: frame k is normalised with the mean and variance of all channels of frames 0..k (causal).

    [batch, channels, K] -> [batch, channels, K]
    """

    def __init__(self, channels):
        super().__init__()
        self.gamma = ms.Parameter(ops.ones((1, channels, 1), ms.float32), name="gamma")
        self.beta = ms.Parameter(ops.zeros((1, channels, 1), ms.float32), name="beta")
        self.channels = channels

    def construct(self, x):
        return self.normalise(x, 1, 2) * self.gamma + self.beta

    def normalise(self, x, channel_axis, frame_axis):
        """x normalised with the running statistics of frames 0..k, for channels on `channel_axis`
        and frames on `frame_axis` (the CPU engine has the frames first and uses this too). The
        running sums, means and variances ([batch, 1, K] or [batch, K, 1]) are float64: float32
        running sums lose precision as they grow, and on long signals the output drifts from an
        exact computation (benchmarks/README.md). The streaming separator carries the same
        sums."""
        frame_sum = x.sum(axis=channel_axis, keepdims=True).astype(ms.float64)
        frame_pow_sum = (x * x).sum(axis=channel_axis, keepdims=True).astype(ms.float64)
        cum_sum = ops.cumsum(frame_sum, axis=frame_axis)
        cum_pow_sum = ops.cumsum(frame_pow_sum, axis=frame_axis)
        count = ops.cumsum(ops.ones_like(cum_sum), axis=frame_axis) * self.channels
        cum_mean = cum_sum / count
        cum_var = ops.relu(cum_pow_sum / count - cum_mean * cum_mean)
        cum_std = ops.sqrt(cum_var + EPS)
        return (x - cum_mean.astype(ms.float32)) / cum_std.astype(ms.float32)


def make_norm(norm_type, channels):
    """The normalisation layer named by `norm_type`: 'gLN', 'cLN' or 'BN' (over batch and frames,
    per channel); each maps [batch, channels, K] -> [batch, channels, K]."""
    if norm_type == "gLN":
        return GlobalLayerNorm(channels)
    if norm_type == "cLN":
        return CumulativeLayerNorm(channels)
    if norm_type == "BN":
        return nn.BatchNorm1d(channels)
    raise UserError(f"norm_type: expected gLN, cLN or BN, got {norm_type!r}")


def conv1x1(in_channels, out_channels):
    """A pointwise convolution: [batch, in_channels, K] -> [batch, out_channels, K]."""
    return nn.Conv1d(in_channels, out_channels, 1, has_bias=True, pad_mode="valid")


class ConvBlock(nn.Cell):
    """One 1-D convolutional block of the separator (the paper's Fig. 1C).

    1x1 conv B->H, PReLU, norm, depthwise conv (kernel P, dilation d), PReLU, norm, then a residual
    1x1 conv H->B and a skip 1x1 conv H->Sc (no skip conv when Sc is 0).

    [batch, B, K] -> (residual [batch, B, K], skip [batch, Sc, K] or None)
    """

    def __init__(self, B, H, Sc, P, dilation, norm_type, causal):
        super().__init__()
        self.H, self.P, self.dilation = H, P, dilation
        self.conv1x1 = conv1x1(B, H)
        self.prelu1 = nn.PReLU()
        self.norm1 = make_norm(norm_type, H)
        pad = (P - 1) * dilation
        # Causal: all padding in the past; otherwise half on each side.
        self.pad = (pad, 0) if causal else (pad // 2, pad - pad // 2)
        # MindSpore 2.7: ops.Pad, not ops.pad: in GRAPH mode on CPU the gradient of ops.pad
        # (PadV3) is wrong from the second training step on; ops.Pad's is right.
        self.pad_op = ops.Pad(((0, 0), (0, 0), self.pad))
        self.dconv = nn.Conv1d(H, H, P, dilation=dilation, group=H, has_bias=True,
                               pad_mode="valid")
        self.prelu2 = nn.PReLU()
        self.norm2 = make_norm(norm_type, H)
        self.res_conv = conv1x1(H, B)
        self.skip_conv = conv1x1(H, Sc) if Sc else None

    def construct(self, x):
        y = self.norm1(self.prelu1(self.conv1x1(x)))
        y = self.pad_op(y)
        y = self.norm2(self.prelu2(self.dconv(y)))
        residual = self.res_conv(y)
        if self.skip_conv is None:
            return residual, None
        return residual, self.skip_conv(y)


class TemporalConvNet(nn.Cell):
    """The separator: masks for C sources from the encoder output.

    norm, 1x1 bottleneck N->B, R repeats of X ConvBlocks, PReLU, 1x1 conv (Sc or B)->C*N, mask
    nonlinearity.

    [batch, N, K] -> masks [batch, C, N, K]
    """

    def __init__(self, N, B, H, Sc, P, X, R, C, norm_type, causal, mask_nonlinear):
        super().__init__()
        self.C, self.N = C, N
        self.norm_type, self.mask_nonlinear = norm_type, mask_nonlinear
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

    def construct(self, w):
        x = self.bottleneck(self.layer_norm(w))                # [batch, B, K]
        skip_sum = 0
        for block in self.blocks:
            residual, skip = block(x)
            x = x + residual
            if self.use_skip:
                skip_sum = skip_sum + skip
        y = self.mask_prelu(skip_sum if self.use_skip else x)  # [batch, Sc or B, K]
        scores = self.mask_conv(y).reshape(w.shape[0], self.C, self.N, -1)
        return self.mask_act(scores)


class ConvTasNet(nn.Cell):
    """Conv-TasNet: encoder, TCN separator, overlap-add decoder.

    Args:
        N, L, B, H, Sc, P, X, R, C: sizes named as in the paper (see the module docstring).
        norm_type: 'gLN', 'cLN' or 'BN'.
        causal: causal depthwise convolutions, and a causal encoder alignment, so that no
            output sample depends on a later input sample (see causal_lookahead). Needs
            norm_type 'cLN'.
        causal_lookahead: causal models only: encoder strides of look-ahead, 0 or 1. 0: L-1
            zeros in front, output sample t depends on inputs up to S*floor(t/S) (S = L/2),
            the last stride boundary at or before t. 1: L/2-1 zeros in front, output sample t
            depends on inputs up to S*floor(t/S) + S, at most t + L/2 (and exactly that for t
            on a stride boundary): the frame that starts writing t ends S samples later.
        mask_nonlinear: 'relu', 'sigmoid' or 'softmax' (over the C speakers).
        encoder_activation: 'linear' or 'relu' after the encoder.
        edge_pad: zeros added before the first and after the last sample before encoding, so
            that the edges are covered by as many frames as the middle (torchaudio uses L/2;
            Asteroid and the default use 0).

    construct(mixture): mixture float32 [batch, T] with T >= L -> estimates [batch, C, T].

    The input is zero-padded at the end so that the frames cover every sample. When causal, it is
    also padded with L-1 zeros in front (L/2-1 with causal_lookahead 1), so the window of the
    frame that starts writing output sample t ends at input sample t (t + L/2).
    """

    def __init__(self, N=512, L=16, B=128, H=512, Sc=128, P=3, X=8, R=3, C=2, norm_type="gLN",
                 causal=False, mask_nonlinear="relu", encoder_activation="linear", edge_pad=0,
                 causal_lookahead=0):
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
        if causal_lookahead not in (0, 1):
            raise UserError(f"causal_lookahead: expected 0 or 1 encoder strides, "
                            f"got {causal_lookahead}")
        self.causal_lookahead = causal_lookahead if causal else 0
        self.front_pad = causal_front_pad(L, causal, causal_lookahead) + edge_pad
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
        # MindSpore 2.7: ops.Pad (constant paddings) rather than ops.pad (PadV3): the ONNX
        # converter has no PadV3.
        self.input_pad = ops.Pad(((0, 0), (self.front_pad, edge_pad + L)))

    def num_frames(self, length):
        """Encoder frames K for an input of `length` samples."""
        padded = length + self.front_pad + self.edge_pad
        # max(1, ceil((padded - L) / stride) + 1) with L = 2 * stride, written as integer
        # arithmetic. MindSpore 2.7: with a dynamic time axis (set_inputs, or a MINDIR
        # exported with
        # input_length 0) max() falls back to the Python interpreter and an `if` becomes a
        # switch that a reloaded MINDIR cannot run twice.
        frames = (padded - 1) // self.stride
        return frames + 1 // (frames + 1)

    def padded_input(self, mixture):
        """mixture [batch, T] zero-padded to the span of its K frames: [batch, (K-1)*L/2+L]."""
        frames = self.num_frames(mixture.shape[1])
        span = (frames - 1) * self.stride + self.L
        # A constant end padding cut to the frames' span: a MINDIR with a dynamic time axis
        # cannot hold a padding that depends on the length.
        return self.input_pad(mixture)[:, :span]

    def construct(self, mixture):
        batch, length = mixture.shape
        x = self.padded_input(mixture).expand_dims(1)          # [batch, 1, (K-1)*L/2+L]
        w = self.encoder(x)                                    # [batch, N, K]
        if self.encoder_relu:
            w = ops.relu(w)
        masks = self.separator(w)                              # [batch, C, N, K]
        masked = (masks * w.expand_dims(1)).reshape(batch * self.C, self.N, -1)
        s = self.decoder(masked)                               # [batch*C, 1, (K-1)*L/2+L]
        s = s[:, 0, self.edge_pad:self.edge_pad + length]
        return s.reshape(batch, self.C, -1)


def causal_front_pad(L, causal, causal_lookahead=0):
    """Zeros in front of the input (before edge_pad): L-1 for a causal model without look-ahead,
    L/2-1 with one stride of it, 0 for a non-causal model."""
    if not causal:
        return 0
    return L - 1 - causal_lookahead * (L // 2)


def count_parameters(net):
    """Number of trainable scalars in `net`."""
    return sum(int(p.size) for p in net.trainable_params())

