"""Real-time separation with a causal Conv-TasNet: hop by hop, carrying the network's state.

`StreamingSeparator.push(samples)` takes the next samples of a mixture and returns the separated
samples that became final; `finish()` returns the rest. The concatenated outputs equal the
offline causal model's output on the whole signal (same length, float32 rounding apart). Between
calls the separator carries exactly what the causal network needs, and recomputes nothing:
    the encoder's input history      the last L/2 samples (frames overlap by half), and any
                                     samples of an incomplete stride
    each block's depthwise history   the last (P-1)*dilation frames of its input [.., H]
    each cLN's running sums          sum and sum of squares over all frames so far (float64,
                                     as in the offline model) and the frame count
    the decoder's overlap-add tail   the second half of the last frame's segments [C, L/2]

Alignment (the model's causal padding of L-1 zeros in front): the frame that ends at input sample
m*L/2 is computed as soon as that sample arrives, and with it every output sample before
(m+1)*L/2 is final. A hop of whole strides therefore returns exactly as many samples as it
brought: the algorithmic latency is the hop itself (each output sample depends only on inputs up
to the last full stride before it). With causal_lookahead 1 (L/2-1 zeros in front) every frame
ends one stride later: the outputs lag the inputs by L/2 samples, the first hop returns L/2
samples fewer than it brought and finish() returns them.

The engine is numpy float32 over the checkpoint's weights, frames last ([frames, channels]), one
matrix product per 1x1 convolution for all frames of the hop: a MindSpore call per layer or per
hop costs more than the arithmetic of a small hop (benchmarks/README.md). Each block's
elementwise work (PReLU, cLN, depthwise convolution) runs in a small C++ library
(src/deploy/kernels/stream_block.cc, compiled on first use as the CPU engine's kernels are), in
two passes instead of numpy's two dozen; without a compiler the same in numpy.
"""
import ctypes
import functools
import logging
import os

import numpy as np

from src.model.conv_tasnet import causal_front_pad
from src.model_utils.errors import UserError

EPS = 1e-8
STREAM_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernels",
                             "stream_block.cc")
logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=None)
def block_kernels():
    """The compiled stream_block.cc (ctypes), or None, said once, when it cannot be built."""
    from src.model.cpu_kernels import build_or_reason
    path, why = build_or_reason(STREAM_SOURCE)
    if path is None:
        logger.warning("streaming kernels not built (%s); streaming with numpy alone, slower",
                       why)
        return None
    return load_block_kernels(path)


def load_block_kernels(path):
    """The stream_block.cc library built at `path`, its functions' argument types set."""
    lib = ctypes.CDLL(path)
    lib.stream_blocks.argtypes = [ctypes.POINTER(_StreamBlock), ctypes.c_int64] + [
        ctypes.c_void_p] * 4 + [ctypes.c_int64, ctypes.c_int64]
    lib.stream_blocks.restype = None
    lib.stream_product.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                                   ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p,
                                   ctypes.c_void_p]
    lib.stream_product.restype = None
    return lib


class _StreamBlock(ctypes.Structure):
    """stream_block.cc's StreamBlock: a block's weights and carried state, as pointers."""
    _fields_ = [(name, ctypes.c_int64 if kind == "i" else ctypes.c_void_p) for name, kind in (
        ("B", "i"), ("H", "i"), ("Sc", "i"), ("P", "i"), ("dilation", "i"), ("w1", "p"),
        ("bias1", "p"), ("slope1", "p"), ("slopes1", "i"), ("gamma1", "p"), ("beta1", "p"),
        ("sums1", "p"), ("taps", "p"), ("dbias", "p"), ("history", "p"), ("start", "i"),
        ("slope2", "p"), ("slopes2", "i"), ("gamma2", "p"), ("beta2", "p"), ("sums2", "p"),
        ("w_out", "p"), ("b_out", "p"))]


PANEL = 16      # stream_block.cc's kPanel


def _packed(matrix):
    """A right factor [K, N] as stream_block.cc reads it: panels of PANEL columns,
    [ceil(N / PANEL), K, PANEL], zero past the last column."""
    K, N = matrix.shape
    panels = -(-N // PANEL)
    padded = np.zeros((K, panels * PANEL), np.float32)
    padded[:, :N] = matrix
    return _aligned(padded.reshape(K, panels, PANEL).transpose(1, 0, 2))


def _aligned(array, alignment=64):
    """A C-contiguous float32 copy of `array` whose data starts at a multiple of `alignment`
    bytes (a cache line: vector loads then never straddle two lines)."""
    buffer = np.empty(array.size + alignment // 4, np.float32)
    offset = (-buffer.ctypes.data % alignment) // 4
    out = buffer[offset:offset + array.size].reshape(array.shape)
    out[...] = array
    return out


def _array(params, name, dtype=np.float32):
    value = params[name]
    value = value.asnumpy() if hasattr(value, "asnumpy") else np.asarray(value)
    return value.astype(dtype)


def _matrix(params, name):
    """A 1-D convolution's weight [out, in, 1, kernel] as the right factor [in*kernel, out]."""
    value = _array(params, name)
    return np.ascontiguousarray(value.reshape(value.shape[0], -1).T)


def _prelu(x, slope):
    return np.where(x >= 0, x, x * slope)


class _Product:
    """A 1x1 convolution frames last, x [M, K] -> x @ weight + bias [M, N]: in stream_product
    against the weight packed once when the kernels are built (BLAS would repack it at every
    hop), else numpy."""

    def __init__(self, params, name, kernels=None):
        self.weight = _matrix(params, name + ".weight")
        self.bias = _array(params, name + ".bias")
        self.kernels = kernels
        if kernels is not None:
            self.packed = _packed(self.weight)

    def __call__(self, x):
        if self.kernels is None:
            return x @ self.weight + self.bias
        x = np.ascontiguousarray(x, np.float32)
        out = np.empty((len(x), self.weight.shape[1]), np.float32)
        self.kernels.stream_product(x.ctypes.data, len(x), x.shape[1], self.packed.ctypes.data,
                                    out.shape[1], self.bias.ctypes.data, out.ctypes.data)
        return out


class _CumulativeNorm:
    """cLN with its running statistics carried across calls: x [M, channels] -> [M, channels]."""

    def __init__(self, params, prefix):
        self.gamma = _array(params, prefix + "gamma").reshape(-1)
        self.beta = _array(params, prefix + "beta").reshape(-1)
        self.channels = len(self.gamma)
        # running sum of all values so far and of their squares (float64)
        self.sums = np.zeros(2, np.float64)

    def __call__(self, x, frames_before):
        frame_sum = x.sum(axis=1, dtype=np.float32).astype(np.float64)
        frame_pow = np.einsum("mc,mc->m", x, x).astype(np.float64)
        cum_sum = np.cumsum(frame_sum) + self.sums[0]
        cum_pow = np.cumsum(frame_pow) + self.sums[1]
        self.sums[:] = cum_sum[-1], cum_pow[-1]
        count = (np.arange(frames_before + 1, frames_before + len(x) + 1, dtype=np.float64)
                 * self.channels)
        mean = cum_sum / count
        std = np.sqrt(np.maximum(cum_pow / count - mean * mean, 0) + EPS)
        y = (x - mean.astype(np.float32)[:, None]) / std.astype(np.float32)[:, None]
        return y * self.gamma + self.beta


class _Block:
    """One convolutional block, its depthwise history carried: [M, B] -> ([M, B], [M, Sc])."""

    def __init__(self, params, prefix, dilation, use_skip, kernels=None):
        self.kernels = kernels
        self.w1, self.b1 = _matrix(params, prefix + "conv1x1.weight"), \
            _array(params, prefix + "conv1x1.bias")
        self.slope1 = _array(params, prefix + "prelu1.w")
        self.norm1 = _CumulativeNorm(params, prefix + "norm1.")
        self.taps = _array(params, prefix + "dconv.weight")
        self.taps = self.taps.reshape(self.taps.shape[0], -1).T.copy()        # [P, H]
        self.dbias = _array(params, prefix + "dconv.bias")
        self.slope2 = _array(params, prefix + "prelu2.w")
        self.norm2 = _CumulativeNorm(params, prefix + "norm2.")
        # The residual and skip convolutions as one product: [H, B + Sc].
        out = [_matrix(params, prefix + "res_conv.weight")]
        bias = [_array(params, prefix + "res_conv.bias")]
        if use_skip:
            out.append(_matrix(params, prefix + "skip_conv.weight"))
            bias.append(_array(params, prefix + "skip_conv.bias"))
        self.B = out[0].shape[1]
        self.w_out, self.b_out = np.ascontiguousarray(np.concatenate(out, 1)), np.concatenate(bias)
        self.dilation = dilation
        P, H = self.taps.shape
        # The depthwise history as a ring of the last (P-1)*dilation frames, oldest at `start`:
        # a hop reads and writes only its own rows, not the whole history.
        self.history = np.zeros(((P - 1) * dilation, H), np.float32)
        self.start = 0
        if kernels is not None:
            # pointers to this block's arrays, which live as long as the block; `start` of the
            # ring is kept in the structure
            self.packed = _packed(self.w1), _packed(self.w_out)
            self.state = _StreamBlock(
                self.B, H, self.w_out.shape[1] - self.B, P, dilation, self.packed[0].ctypes.data,
                self.b1.ctypes.data, self.slope1.ctypes.data, self.slope1.size,
                self.norm1.gamma.ctypes.data, self.norm1.beta.ctypes.data,
                self.norm1.sums.ctypes.data, self.taps.ctypes.data, self.dbias.ctypes.data,
                self.history.ctypes.data, 0, self.slope2.ctypes.data, self.slope2.size,
                self.norm2.gamma.ctypes.data, self.norm2.beta.ctypes.data,
                self.norm2.sums.ctypes.data, self.packed[1].ctypes.data, self.b_out.ctypes.data)

    def depthwise(self, u):
        """The causal dilated depthwise convolution of the hop's frames u [M, H] -> [M, H]."""
        M, d, D = len(u), self.dilation, len(self.history)
        v = u * self.taps[-1] + self.dbias        # the last tap reads the current frame
        for j in range(len(self.taps) - 1):
            # Frame m reads input j*d + m of [history, u]: the first n from the history.
            n = min(D - j * d, M)
            rows = self.history[(self.start + j * d + np.arange(n)) % D]
            if n < M:
                rows = np.concatenate([rows, u[:M - n]])
            v += rows * self.taps[j]
        if M >= D:
            self.history[:] = u[M - D:]
            self.start = 0
        else:
            self.history[(self.start + np.arange(M)) % D] = u
            self.start = (self.start + M) % D
        return v

    def __call__(self, x, frames_before):
        u = self.norm1(_prelu(x @ self.w1 + self.b1, self.slope1), frames_before)
        v = self.depthwise(u)
        v = self.norm2(_prelu(v, self.slope2), frames_before)
        out = v @ self.w_out + self.b_out
        return out[:, :self.B], out[:, self.B:]


class StreamingSeparator:
    """A causal Conv-TasNet separating a mixture hop by hop (module docstring).

    Args:
        params: {parameter name: array or Tensor} of a causal cLN ConvTasNet.
        L, X, R, C, mask_nonlinear, encoder_activation, edge_pad, causal_lookahead: the model's
            settings.
        kernels: run the blocks' elementwise work in stream_block.cc when it builds (False:
            numpy alone).

    push(samples [n] float) -> estimates [C, m] float32 that became final (m = n for hops of whole
    strides); finish() -> the last estimates, so that all outputs together are [C, T].
    """

    def __init__(self, params, L, X, R, C, mask_nonlinear="relu", encoder_activation="linear",
                 edge_pad=0, causal_lookahead=0, kernels=True):
        self.L, self.S, self.C = L, L // 2, C
        self.mask_nonlinear, self.encoder_relu = mask_nonlinear, encoder_activation == "relu"
        self.edge_pad = edge_pad
        self.encoder = _matrix(params, "encoder.weight")                      # [L, N]
        self.decoder = _array(params, "decoder.weight")
        self.decoder = self.decoder.reshape(self.decoder.shape[0], -1)         # [N, L]
        self.N = self.decoder.shape[0]
        p = "separator."
        self.norm = _CumulativeNorm(params, p + "layer_norm.")
        self.use_skip = p + "blocks.0.skip_conv.weight" in params
        self.kernels = block_kernels() if kernels else None
        self.bottleneck = _Product(params, p + "bottleneck", self.kernels)
        self.blocks = [_Block(params, f"{p}blocks.{i}.", 2 ** (i % X), self.use_skip,
                              self.kernels) for i in range(R * X)]
        if self.kernels is not None:
            # The blocks' structures (copies; their arrays stay the blocks') in one array, which
            # stream_blocks runs in one call per hop and in which it keeps each ring's start.
            self.block_states = (_StreamBlock * len(self.blocks))(*[b.state for b in self.blocks])
        self.mask_slope = _array(params, p + "mask_prelu.w")
        self.mask_conv = _Product(params, p + "mask_conv", self.kernels)
        # The padded input from the next frame's start: the causal zeros (+ edge_pad) in front.
        self.front_pad = causal_front_pad(L, True, causal_lookahead) + edge_pad
        self.pending = np.zeros(self.front_pad, np.float32)
        self.frames = 0                                   # frames computed so far
        self.tail = np.zeros((C, self.S), np.float32)     # overlap-add carry
        self.to_skip = edge_pad                           # leading outputs the model cuts
        self.received = 0                                 # input samples so far
        self.emitted = 0                                  # output samples so far
        self.ready = np.zeros((C, 0), np.float32)         # final outputs not yet returned
        self.finished = False
        self.frame_indices = {}

    @classmethod
    def from_config(cls, cfg, params, source="the model", kernels=True):
        """A separator for a model of configuration `cfg` with the parameters `params`; a
        non-causal configuration is refused (UserError naming `source`)."""
        check_causal(cfg, source)
        return cls(params, cfg.L, cfg.X, cfg.R, cfg.n_src, cfg.mask_nonlinear,
                   cfg.encoder_activation, cfg.edge_pad, cfg.causal_lookahead, kernels)

    def push(self, samples):
        """The next mixture samples [n] -> estimates [C, m] that became final."""
        if self.finished:
            raise ValueError("push after finish: start a new StreamingSeparator")
        samples = np.asarray(samples, np.float32).reshape(-1)
        self.received += len(samples)
        self.pending = np.concatenate([self.pending, samples])
        return self._run()

    def finish(self):
        """The remaining estimates, the end of the signal padded with zeros as offline."""
        if self.finished:
            return np.zeros((self.C, 0), np.float32)
        self.finished = True
        front = self.front_pad
        total_frames = max(1, (self.received + front + self.edge_pad - 1) // self.S)
        needed = (total_frames - self.frames - 1) * self.S + self.L - len(self.pending)
        if needed > 0:
            self.pending = np.concatenate([self.pending, np.zeros(needed, np.float32)])
        out = self._run(limit=total_frames - self.frames)
        # With look-ahead the last frame's second half can hold the last samples.
        self._append(self.tail)
        self.tail = np.zeros_like(self.tail)
        return np.concatenate([out, self._run(limit=0)], axis=1)

    def _run(self, limit=None):
        """Separate every frame the pending input completes (at most `limit`) -> the estimates
        that are final and within the input received so far [C, m]."""
        S, L = self.S, self.L
        M = max(0, (len(self.pending) - L) // S + 1)
        if limit is not None:
            M = min(M, limit)
        if M > 0:
            frames = self.pending[self._frame_index(M)]                            # [M, L]
            self.pending = self.pending[M * S:]
            out = self._separate(frames)                                           # [C, M*S]
            self.frames += M
            self._append(out)
        # The frame that ends at the last sample received also completes up to L/2-1 outputs
        # after it: they are kept until that input arrives (or the stream ends there).
        count = min(self.ready.shape[1], self.received - self.emitted)
        out, self.ready = self.ready[:, :count], self.ready[:, count:]
        self.emitted += count
        return out

    def _frame_index(self, M):
        """Indices [M, L] of M frames in the pending input (frame m starts at m*L/2), kept per M
        (a fancy index costs less per hop than a strided view)."""
        index = self.frame_indices.get(M)
        if index is None:
            if len(self.frame_indices) >= 16:   # pushes of many sizes: memory stays bounded
                self.frame_indices.clear()
            index = np.arange(M)[:, None] * self.S + np.arange(self.L)
            self.frame_indices[M] = index
        return index

    def _append(self, out):
        """Queue decoder output [C, m] as ready, less the leading samples the model cuts."""
        if self.to_skip:
            cut = min(self.to_skip, out.shape[1])
            out, self.to_skip = out[:, cut:], self.to_skip - cut
        self.ready = np.concatenate([self.ready, out], axis=1)

    def _separate(self, frames):
        """frames [M, L] -> the M output strides they complete [C, M*L/2]."""
        k0, S = self.frames, self.S
        w = frames @ self.encoder                                              # [M, N]
        if self.encoder_relu:
            w = np.maximum(w, 0)
        x = self.bottleneck(self.norm(w, k0))                                  # [M, B]
        if self.kernels is not None:
            x = _aligned(x)
            blocks = self.blocks
            skip_sum = _aligned(np.zeros((len(x), blocks[0].w_out.shape[1] - blocks[0].B),
                                         np.float32))
            scratch = _aligned(np.empty((2, len(x), blocks[0].w1.shape[1]), np.float32))
            self.kernels.stream_blocks(self.block_states, len(blocks), x.ctypes.data,
                                       skip_sum.ctypes.data, scratch[0].ctypes.data,
                                       scratch[1].ctypes.data, len(x), k0)
        else:
            skip_sum = 0
            for block in self.blocks:
                residual, skip = block(x, k0)
                x = x + residual
                if self.use_skip:
                    skip_sum = skip_sum + skip
        features = _prelu(skip_sum if self.use_skip else x, self.mask_slope)
        scores = self.mask_conv(features).reshape(len(w), self.C, self.N)
        if self.mask_nonlinear == "relu":
            masks = np.maximum(scores, 0)
        elif self.mask_nonlinear == "sigmoid":
            masks = 1 / (1 + np.exp(-scores))
        else:
            e = np.exp(scores - scores.max(axis=1, keepdims=True))
            masks = e / e.sum(axis=1, keepdims=True)
        segments = (masks * w[:, None]) @ self.decoder                        # [M, C, L]
        segments = segments.transpose(1, 0, 2)                                 # [C, M, L]
        out = segments[:, :, :S].copy()
        out[:, 0] += self.tail
        out[:, 1:] += segments[:, :-1, S:]
        self.tail = segments[:, -1, S:].copy()
        return out.reshape(self.C, -1)


def check_causal(cfg, source):
    """UserError naming `source` unless `cfg` describes a causal cLN model."""
    if not cfg.causal or cfg.norm_type != "cLN":
        raise UserError(f"{source}: streaming needs a causal model (causal: true, norm_type: cLN); "
                        f"this one has causal: {str(cfg.causal).lower()}, norm_type: "
                        f"{cfg.norm_type}, so its outputs depend on future input")


def load_streaming_separator(cfg, path):
    """A StreamingSeparator for the checkpoint at `path`, trained with configuration `cfg`.

    The configuration is checked first (a non-causal model is refused without loading), then the
    checkpoint is loaded into the model as for offline use, with the same errors for a checkpoint
    of another configuration.
    """
    from src.model.checkpoint import load_network

    check_causal(cfg, path)
    # Only the parameters are read: the plain network, so no C++ kernels are built.
    net = load_network(cfg, path, engine="plain")
    params = {name: param.asnumpy() for name, param in net.parameters_and_names()}
    return StreamingSeparator.from_config(cfg, params, path)
