"""The CPU engine of Conv-TasNet: the network of src/model/conv_tasnet.py computed frames last.

`CpuConvTasNet` is a ConvTasNet (the same cells, so the same parameter names and shapes: every
checkpoint loads into either) whose `construct` computes the same function another way:
    - tensors are [batch, K, channels]: the encoder, decoder and 1x1 convolutions are matrix
      products over batch and frames, the depthwise convolution P shifted products;
    - with gLN, PReLU + gLN and depthwise conv + PReLU + gLN are fused cells with hand-written
      gradients (src/model/fused_layers.py);
    - with `kernels=True` the forward pass of each fused cell is one C++ kernel
      (src/model/cpu_kernels.py), compiled when such a network is built;
    - in inference with a dynamic time axis, the masks are made and applied one speaker at a
      time (not for the softmax mask, which needs every speaker's scores).
On CPU MindSpore's depthwise-conv, GroupNorm and PReLU kernels (forward and backward) cost more
than the matrix products of the whole network; the measurements are in benchmarks/README.md.
Outputs and gradients equal the plain network's up to float rounding
(tests/model/test_cpu_engine.py).
An exported graph holds MindSpore's operators only (src/deploy/export.py switches the kernels off).
"""
from mindspore import nn, ops
from mindspore.ops import functional as F

from src.model import cpu_kernels
from src.model.conv_tasnet import ConvTasNet
from src.model.fused_layers import (DepthwisePReLUNorm, FramePad, FusedCell, GlobalNorm,
                                    PReLUNorm, broadcast_like, depthwise, prelu)
from src.model_utils.errors import UserError

_matmul = ops.MatMul()
_matmul_nt = ops.MatMul(transpose_b=True)
_bias_add = ops.BiasAdd()


def pointwise(conv, x):
    """The 1x1 convolution `conv` as one matrix product: [batch, K, in] -> [batch, K, out]."""
    weight = conv.weight.reshape(conv.out_channels, conv.in_channels)
    y = _bias_add(_matmul_nt(x.reshape(-1, conv.in_channels), weight), conv.bias)
    return y.reshape(x.shape[0], -1, conv.out_channels)


def pointwise_rows(conv, x, start, stop):
    """Output channels start..stop-1 only of the 1x1 convolution `conv`: [batch, K, in] ->
    [batch, K, stop-start]. (Not `pointwise` with a slice: routing `pointwise` through it made
    the fused static graph's peak memory higher, benchmarks/README.md.)"""
    weight = conv.weight.reshape(conv.out_channels, conv.in_channels)[start:stop]
    y = _bias_add(_matmul_nt(x.reshape(-1, conv.in_channels), weight), conv.bias[start:stop])
    return y.reshape(x.shape[0], -1, stop - start)


def norm_frames_last(norm, norm_type, x):
    """The cLN or BN layer `norm` on x [batch, K, channels] (gLN runs as a fused cell). cLN's
    statistics are the plain layer's own `normalise` (float64 running sums) on the frames axis."""
    if norm_type == "cLN":
        y = norm.normalise(x, 2, 1)
        gamma, beta = norm.gamma.reshape(-1), norm.beta.reshape(-1)
        return y * broadcast_like(gamma, y) + broadcast_like(beta, y)
    return norm(x.reshape(-1, x.shape[-1])).reshape(x.shape)


class BlockCells(nn.Cell):
    """The parameterless cells that compute one ConvBlock frames last; the block keeps the
    parameters, which come in as inputs (see fused_layers)."""

    def __init__(self, block):
        super().__init__()
        self.prelu_norm = PReLUNorm()
        self.dconv_prelu_norm = DepthwisePReLUNorm(block.P, block.dilation, block.pad)
        self.frame_pad = FramePad(*block.pad)
        self.total_pad = block.pad[0] + block.pad[1]


def block_frames_last(block, cells, norm_type, x):
    """ConvBlock `block` on x [batch, K, B] -> (residual [batch, K, B], skip [batch, K, Sc] or
    None), computed by its BlockCells `cells`."""
    u = pointwise(block.conv1x1, x)
    if norm_type == "gLN":
        y = cells.prelu_norm(u, block.prelu1.w, block.norm1.norm.gamma, block.norm1.norm.beta)
        y = cells.dconv_prelu_norm(y, block.dconv.weight, block.dconv.bias, block.prelu2.w,
                                   block.norm2.norm.gamma, block.norm2.norm.beta)
    else:
        y = norm_frames_last(block.norm1, norm_type, prelu(u, block.prelu1.w))
        taps = block.dconv.weight.reshape(block.H, -1).T
        y = depthwise(cells.frame_pad(y), taps, block.dconv.bias, block.dilation,
                      cells.total_pad)
        y = norm_frames_last(block.norm2, norm_type, prelu(y, block.prelu2.w))
    residual = pointwise(block.res_conv, y)
    if block.skip_conv is None:
        return residual, None
    return residual, pointwise(block.skip_conv, y)


class CpuConvTasNet(ConvTasNet):
    """ConvTasNet computed frames last (module docstring): the same arguments, parameters and
    function, plus `kernels`: run the fused cells' forward passes as the C++ kernels.

    construct(mixture): mixture float32 [batch, T] with T >= L -> estimates [batch, C, T].
    """

    def __init__(self, *args, kernels=False, **kwargs):
        super().__init__(*args, **kwargs)
        separator = self.separator
        self.norm_type = separator.norm_type
        self.input_norm = GlobalNorm()      # the separator's gLN, fused
        self.block_cells = nn.CellList([BlockCells(block) for block in separator.blocks])
        # Frames last the speakers are axis 2 of [batch, K, C, N].
        self.mask_across_speakers = separator.mask_nonlinear == "softmax"
        self.speaker_softmax = nn.Softmax(axis=2)
        self.kernels = False
        self.set_kernels(kernels)

    def set_kernels(self, on):
        """Run the fused cells' forward passes as the C++ kernels (on; compiles them on the first
        call of the process) or as MindSpore's operators (off). Returns self."""
        if on and cpu_kernels.library() is None:
            raise UserError("engine: the CPU kernels cannot be built on this machine "
                            "(a C++ compiler is needed); use matmul")
        self.kernels = bool(on)
        for _, cell in self.cells_and_names():
            if isinstance(cell, FusedCell):
                cell.use_kernel(self.kernels)
        return self

    def mask_features(self, w):
        """The input of the mask's 1x1 convolution: w [batch, K, N] -> [batch, K, Sc or B]."""
        separator = self.separator
        if self.norm_type == "gLN":
            norm = separator.layer_norm.norm
            x = self.input_norm(w, norm.gamma, norm.beta)
        else:
            x = norm_frames_last(separator.layer_norm, self.norm_type, w)
        x = pointwise(separator.bottleneck, x)
        skip_sum = 0
        for block, cells in zip(separator.blocks, self.block_cells):
            residual, skip = block_frames_last(block, cells, self.norm_type, x)
            x = x + residual
            if separator.use_skip:
                skip_sum = skip_sum + skip
        y = skip_sum if separator.use_skip else x
        return prelu(y, separator.mask_prelu.w)

    def masks(self, w):
        """Every speaker's mask: w [batch, K, N] -> [batch, K, C, N]."""
        scores = pointwise(self.separator.mask_conv, self.mask_features(w))
        scores = scores.reshape(w.shape[0], -1, self.C, self.N)
        if self.mask_across_speakers:
            return self.speaker_softmax(scores)
        return self.separator.mask_act(scores)

    def speaker_mask(self, features, c):
        """Speaker c's mask [batch*K, N] from mask_features [batch, K, Sc or B]; not for the
        softmax mask."""
        scores = pointwise_rows(self.separator.mask_conv, features, c * self.N, (c + 1) * self.N)
        return self.separator.mask_act(scores.reshape(-1, self.N))

    def construct(self, mixture):
        batch, length = mixture.shape
        S = self.stride
        x = self.padded_input(mixture)                         # [batch, (K+1)*L/2]
        halves = x.reshape(batch, -1, S)                       # [batch, K+1, L/2]
        frames = ops.concat((halves[:, :-1], halves[:, 1:]), axis=2)      # [batch, K, L]
        basis = self.encoder.weight.reshape(self.N, self.L)
        w = _matmul_nt(frames.reshape(-1, self.L), basis).reshape(batch, -1, self.N)
        if self.encoder_relu:
            w = ops.relu(w)                                    # [batch, K, N]
        synthesis = self.decoder.weight.reshape(self.N, self.L)
        if (self.training or self.mask_across_speakers
                or not F.is_sequence_value_unknown(w.shape)):
            masks = self.masks(w)                              # [batch, K, C, N]
            masked = (masks * broadcast_like(w.expand_dims(2), masks)).reshape(-1, self.N)
            segments = _matmul(masked, synthesis).reshape(batch, -1, self.C, self.L)
            segments = segments.transpose(0, 2, 1, 3)          # [batch, C, K, L]
        else:
            # Inference with a dynamic time axis (no graph-kernel fusion): one speaker's mask
            # [batch*K, N] at a time, and no [batch, K, C, N] copy of w, for a lower peak memory
            # on long inputs (benchmarks/README.md). With static shapes the fused kernels do
            # better with all speakers at once.
            features = self.mask_features(w)                   # [batch, K, Sc or B]
            w = w.reshape(-1, self.N)
            segments = ()
            for c in range(self.C):
                masked = self.speaker_mask(features, c) * w
                segments += (_matmul(masked, synthesis).reshape(batch, 1, -1, self.L),)
            segments = ops.concat(segments, axis=1)            # [batch, C, K, L]
        # Overlap-add with hop L/2: output hop k is the first half of frame k plus the second
        # half of frame k-1.
        zero = ops.zeros_like(segments[:, :, :1, :S])
        s = (ops.concat((segments[:, :, :, :S], zero), axis=2)
             + ops.concat((zero, segments[:, :, :, S:]), axis=2))   # [batch, C, K+1, L/2]
        s = s.reshape(batch, self.C, -1)
        return s[:, :, self.edge_pad:self.edge_pad + length]
