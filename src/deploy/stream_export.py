"""The streaming step of a causal Conv-TasNet as a MindSpore cell and a MINDIR with explicit state.

`StreamStep` computes one hop of a fixed number of samples: (hop samples, state tensors) ->
(final samples, new state tensors). Running it hop by hop, feeding each call's state outputs back
as the next call's state inputs, gives what src/deploy/streaming.py's StreamingSeparator gives (the
same arithmetic, float32 with float64 cLN statistics), so a runtime without Python (the Ascend 310
app in ascend310_infer/) can stream. The state, in this order after the samples:

    encoder_history  [1, L-1] float32   the last L-1 input samples (frames overlap by half, and a
                                        frame ends S-1 samples after a hop boundary; S = L/2)
    frames           [1] float64        frames computed so far (cLN counts them)
    norm_sums        [n_norms, 2] float64  each cLN's running sum and sum of squares over all
                                        frames so far: the separator's input norm, then norm1 and
                                        norm2 of each block in order
    dconv_history    [sum of (P-1)*dilation over the blocks, H] float32  each block's last
                                        (P-1)*dilation depthwise inputs, the blocks one after the
                                        other
    decoder_tail     [C, S] float32     the second half of the last frame's segments
                                        (overlap-add carry)

All start as zeros. The outputs are (estimates [1, C, hop], then the new state in the same order).

Alignment: the cell's frames are those of the model with L-1 zeros in front. A model with
causal_lookahead 1 has L/2-1 zeros in front, one frame fewer: the cell computes that frame too
but keeps it out of the state (no cLN statistics, zeros in the depthwise histories, no decoder
output), so its outputs start with L/2 zeros. `delay_samples` (0, or L/2 with the look-ahead)
says how many: the estimates of a signal of T samples are the outputs of ceil((T + delay) / hop)
hops over the signal followed by zeros, from sample `delay` on, T of them (`stream_graph`).

`export_stream` writes <file_name>_stream.mindir and the sidecar <file_name>_stream.json (the
hop, the delay, every input and output with its name, shape and dtype, in order), and publishes
them only after the reloaded MINDIR, run over a whole stream, matched the numpy separator.
"""
import json
import os
import shutil
import tempfile

import numpy as np

from src.model_utils.errors import UserError

SIDECAR_FORMAT = "conv_tasnet streaming step 1"
TOLERANCE = 1e-4            # relative difference allowed against the numpy separator
EPS = 1e-8


def _array(params, name):
    value = params[name]
    value = value.asnumpy() if hasattr(value, "asnumpy") else np.asarray(value)
    return value.astype(np.float32)


def _matrix(params, name):
    value = _array(params, name)
    return np.ascontiguousarray(value.reshape(value.shape[0], -1).T)


def state_layout(params, L, X, R, C):
    """[(name, shape, dtype name)] of the state tensors, in the order of the cell's inputs."""
    H = _array(params, "separator.blocks.0.conv1x1.bias").shape[0]
    P = _array(params, "separator.blocks.0.dconv.weight").shape[-1]
    history = sum((P - 1) * 2 ** (i % X) for i in range(R * X))
    return [("encoder_history", [1, L - 1], "float32"),
            ("frames", [1], "float64"),
            ("norm_sums", [1 + 2 * R * X, 2], "float64"),
            ("dconv_history", [history, H], "float32"),
            ("decoder_tail", [C, L // 2], "float32")]


def make_stream_step(params, L, X, R, C, hop, mask_nonlinear="relu",
                     encoder_activation="linear", causal_lookahead=0):
    """A StreamStep cell (see the module docstring) for the parameters `params` of a causal cLN
    ConvTasNet ({name: array or Tensor}) and a hop of `hop` samples (a whole number of L/2)."""
    import mindspore as ms
    from mindspore import nn, ops

    S = L // 2
    if hop < S or hop % S:
        raise UserError(f"stream_hop_ms: the hop must be a whole number of encoder strides "
                        f"(L/2 = {S} samples), got {hop} samples")
    P = _array(params, "separator.blocks.0.dconv.weight").shape[-1]
    if P < 2:
        raise UserError(f"P: the streaming export needs depthwise kernels of at least 2 taps, "
                        f"got P={P}")
    M = hop // S
    f32, f64 = ms.float32, ms.float64

    def const(value, dtype=f32):
        return ms.Tensor(np.ascontiguousarray(value), dtype)

    class StreamStep(nn.Cell):
        """(samples [1, hop], encoder_history, frames, norm_sums, dconv_history, decoder_tail)
        -> (estimates [1, C, hop], the new state in the same order)."""

        def __init__(self):
            super().__init__()
            self.lookahead = causal_lookahead
            self.encoder_relu = encoder_activation == "relu"
            self.mask_nonlinear = mask_nonlinear
            self.frame_index = const(np.arange(M)[:, None] * S + np.arange(L), ms.int32)
            self.offsets = const(np.arange(M, dtype=np.float64)[:, None], f64)
            self.encoder = const(_matrix(params, "encoder.weight"))                   # [L, N]
            decoder = _array(params, "decoder.weight")
            self.decoder = const(decoder.reshape(decoder.shape[0], -1))                # [N, L]
            self.N = decoder.shape[0]
            p = "separator."
            self.norms = [(const(_array(params, prefix + "gamma").reshape(1, -1)),
                           const(_array(params, prefix + "beta").reshape(1, -1)))
                          for prefix in [p + "layer_norm."] + [
                              f"{p}blocks.{i}.{n}." for i in range(R * X)
                              for n in ("norm1", "norm2")]]
            self.w_bottleneck = const(_matrix(params, p + "bottleneck.weight"))
            self.b_bottleneck = const(_array(params, p + "bottleneck.bias"))
            self.use_skip = p + "blocks.0.skip_conv.weight" in params
            self.blocks = []
            offset = 0
            for i in range(R * X):
                b = f"{p}blocks.{i}."
                dilation = 2 ** (i % X)
                taps = _array(params, b + "dconv.weight")
                taps = taps.reshape(taps.shape[0], -1).T                               # [P, H]
                out = [_matrix(params, b + "res_conv.weight")]
                bias = [_array(params, b + "res_conv.bias")]
                if self.use_skip:
                    out.append(_matrix(params, b + "skip_conv.weight"))
                    bias.append(_array(params, b + "skip_conv.bias"))
                self.blocks.append(dict(
                    w1=const(_matrix(params, b + "conv1x1.weight")),
                    b1=const(_array(params, b + "conv1x1.bias")),
                    slope1=const(_array(params, b + "prelu1.w")),
                    taps=[const(taps[j]) for j in range(P)],
                    dbias=const(_array(params, b + "dconv.bias")),
                    slope2=const(_array(params, b + "prelu2.w")),
                    w_out=const(np.concatenate(out, 1)), b_out=const(np.concatenate(bias)),
                    B=out[0].shape[1], dilation=dilation, start=offset,
                    stop=offset + (P - 1) * dilation))
                offset += (P - 1) * dilation
            self.mask_slope = const(_array(params, p + "mask_prelu.w"))
            self.w_mask = const(_matrix(params, p + "mask_conv.weight"))
            self.b_mask = const(_array(params, p + "mask_conv.bias"))

        def prelu(self, x, slope):
            return ops.where(x >= 0, x, x * slope)

        def cln(self, x, k, norm_sums, frames, valid):
            """cLN of the hop's frames x [M, channels] continuing the sums of norm k ->
            (normalised x, the new sums [1, 2])."""
            gamma, beta = self.norms[k]
            channels = x.shape[1]
            frame_sum = x.sum(axis=1, keepdims=True).astype(f64)                       # [M, 1]
            frame_pow = (x * x).sum(axis=1, keepdims=True).astype(f64)
            position = frames + self.offsets + 1 - self.lookahead                      # [M, 1]
            if self.lookahead:
                zero = ops.zeros_like(frame_sum)
                frame_sum = ops.where(valid, frame_sum, zero)
                frame_pow = ops.where(valid, frame_pow, zero)
                position = ops.maximum(position, 1.0)
            cum_sum = ops.cumsum(frame_sum, 0) + norm_sums[k:k + 1, 0:1]
            cum_pow = ops.cumsum(frame_pow, 0) + norm_sums[k:k + 1, 1:2]
            count = position * channels
            mean = cum_sum / count
            std = ops.sqrt(ops.relu(cum_pow / count - mean * mean) + EPS)
            y = (x - mean.astype(f32)) / std.astype(f32) * gamma + beta
            if self.lookahead:
                y = ops.where(valid, y, ops.zeros_like(y))
            return y, ops.concat((cum_sum[M - 1:], cum_pow[M - 1:]), axis=1)

        def construct(self, samples, encoder_history, frames, norm_sums, dconv_history,
                      decoder_tail):
            buf = ops.concat((encoder_history, samples), axis=1)[0]                   # [L-1+hop]
            w = ops.matmul(ops.gather(buf, self.frame_index, 0), self.encoder)         # [M, N]
            if self.encoder_relu:
                w = ops.relu(w)
            frames2 = frames.reshape(1, 1)
            valid = (frames2 + self.offsets) >= self.lookahead                         # [M, 1]
            new_sums = []
            y, sums = self.cln(w, 0, norm_sums, frames2, valid)
            new_sums.append(sums)
            x = ops.matmul(y, self.w_bottleneck) + self.b_bottleneck                  # [M, B]
            skip_sum = 0
            histories = []
            for i, blk in enumerate(self.blocks):
                u = self.prelu(ops.matmul(x, blk["w1"]) + blk["b1"], blk["slope1"])
                u, sums = self.cln(u, 1 + 2 * i, norm_sums, frames2, valid)
                new_sums.append(sums)
                past = ops.concat((dconv_history[blk["start"]:blk["stop"]], u), axis=0)
                d = blk["dilation"]
                v = u * blk["taps"][-1] + blk["dbias"]
                for j in range(len(blk["taps"]) - 1):
                    v = v + past[j * d:j * d + M] * blk["taps"][j]
                histories.append(past[M:])
                v, sums = self.cln(self.prelu(v, blk["slope2"]), 2 + 2 * i, norm_sums, frames2,
                                   valid)
                new_sums.append(sums)
                out = ops.matmul(v, blk["w_out"]) + blk["b_out"]
                x = x + out[:, :blk["B"]]
                if self.use_skip:
                    skip_sum = skip_sum + out[:, blk["B"]:]
            features = self.prelu(skip_sum if self.use_skip else x, self.mask_slope)
            scores = (ops.matmul(features, self.w_mask) + self.b_mask).reshape(M, C, self.N)
            if self.mask_nonlinear == "relu":
                masks = ops.relu(scores)
            elif self.mask_nonlinear == "sigmoid":
                masks = ops.sigmoid(scores)
            else:
                masks = ops.softmax(scores, axis=1)
            if self.lookahead:
                w = ops.where(valid, w, ops.zeros_like(w))
            masked = (masks * w.reshape(M, 1, self.N)).reshape(M * C, self.N)
            segments = ops.matmul(masked, self.decoder).reshape(M, C, L)
            first, second = segments[:, :, :S], segments[:, :, S:]
            previous = ops.concat((decoder_tail.reshape(1, C, S), second[:M - 1]), axis=0)
            estimates = (first + previous).transpose(1, 0, 2).reshape(1, C, M * S)
            return (estimates, buf[M * S:].reshape(1, L - 1), frames + M,
                    ops.concat(new_sums, axis=0), ops.concat(histories, axis=0),
                    second[M - 1])

    cell = StreamStep()
    cell.set_train(False)
    return cell


def initial_state(layout):
    """Zeros for every state tensor of `layout` ([(name, shape, dtype)])."""
    return [np.zeros(shape, dtype) for _, shape, dtype in layout]


def sidecar(layout, hop, L, C, sample_rate, causal_lookahead):
    """The sidecar's content: what a runtime needs to stream with the MINDIR."""
    return {
        "format": SIDECAR_FORMAT,
        "sample_rate": sample_rate,
        "hop": hop,
        "n_src": C,
        "stride": L // 2,
        "causal_lookahead": causal_lookahead,
        "delay_samples": causal_lookahead * (L // 2),
        "inputs": [{"name": "samples", "shape": [1, hop], "dtype": "float32"}]
                  + [{"name": n, "shape": s, "dtype": d} for n, s, d in layout],
        "outputs": [{"name": "estimates", "shape": [1, C, hop], "dtype": "float32"}]
                   + [{"name": "new_" + n, "shape": s, "dtype": d} for n, s, d in layout],
        "usage": "state inputs start as zeros; each call's outputs 1.. are the next call's inputs "
                 "1..; a signal of T samples takes ceil((T + delay_samples) / hop) hops (zeros "
                 "after its end) and its estimates are the outputs concatenated, from sample "
                 "delay_samples on, T of them",
    }


def read_sidecar(mindir_path):
    """The sidecar of the streaming MINDIR at `mindir_path` (<stem>.json beside it); UserError
    when missing or not one."""
    path = os.path.splitext(mindir_path)[0] + ".json"
    if not os.path.isfile(path):
        raise UserError(f"{path}: not found; a streaming MINDIR needs the sidecar export.py "
                        "--stream=true writes beside it")
    try:
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
    except (ValueError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not a readable sidecar ({err})") from None
    if not isinstance(info, dict) or info.get("format") != SIDECAR_FORMAT:
        raise UserError(f"{path}: not a sidecar of export.py --stream=true")
    return info


def stream_graph(step, info, mixture):
    """Separate mixture [T] with a streaming step (a cell or nn.GraphCell) described by the
    sidecar `info` -> estimates [C, T] float32."""
    import mindspore as ms
    hop, delay = info["hop"], info["delay_samples"]
    T = len(mixture)
    hops = -(-(T + delay) // hop)
    padded = np.zeros(hops * hop, np.float32)
    padded[:T] = mixture
    state = [ms.Tensor(np.zeros(s["shape"], s["dtype"])) for s in info["inputs"][1:]]
    outputs = []
    for k in range(hops):
        result = step(ms.Tensor(padded[None, k * hop:(k + 1) * hop]), *state)
        outputs.append(result[0].asnumpy()[0])
        state = list(result[1:])
    return np.concatenate(outputs, axis=1)[:, delay:delay + T]


def check_stream_mindir(path, info, params, cfg, seed=0):
    """The largest difference of the reloaded MINDIR at `path`, streamed over
    cfg.stream_check_seconds of a random signal, against the numpy StreamingSeparator, relative
    to the largest output."""
    from src.deploy.export import load_mindir
    from src.deploy.streaming import StreamingSeparator
    graph = load_mindir(path)
    length = int(cfg.stream_check_seconds * cfg.sample_rate) + 3   # not a whole number of hops
    rng = np.random.default_rng(seed)
    envelope = 0.05 + np.abs(np.sin(np.arange(length) * (2 * np.pi * 3 / cfg.sample_rate)))
    mixture = (0.3 * envelope * rng.standard_normal(length)).astype(np.float32)
    got = stream_graph(graph, info, mixture)
    separator = StreamingSeparator.from_config(cfg, params)
    hop = info["hop"]
    parts = [separator.push(mixture[k:k + hop]) for k in range(0, length, hop)]
    expected = np.concatenate(parts + [separator.finish()], axis=1)
    if got.shape != expected.shape:
        raise RuntimeError(f"{path}: streamed output shape {got.shape}, the separator gives "
                           f"{expected.shape}")
    return float(np.abs(got - expected).max() / max(np.abs(expected).max(), 1e-12))


def stream_hop(cfg):
    from src.deploy.stream_runner import hop_samples
    return hop_samples(cfg)


def export_stream(cfg, params, file_name, log=print):
    """Write the streaming step of the causal model (cfg, params) as <file_name>_stream.mindir and
    its sidecar <file_name>_stream.json, after checking the reloaded MINDIR against the numpy
    separator over cfg.stream_check_seconds of signal. Returns (mindir path, sidecar path)."""
    import mindspore as ms
    from src.deploy.export import _first_line
    from src.deploy.streaming import check_causal

    check_causal(cfg, "export.py --stream=true")
    if cfg.edge_pad:
        raise UserError(f"edge_pad: the streaming export needs edge_pad 0, got {cfg.edge_pad} "
                        "(stream.py streams such a model)")
    hop = stream_hop(cfg)
    cell = make_stream_step(params, cfg.L, cfg.X, cfg.R, cfg.n_src, hop, cfg.mask_nonlinear,
                            cfg.encoder_activation, cfg.causal_lookahead)
    layout = state_layout(params, cfg.L, cfg.X, cfg.R, cfg.n_src)
    info = sidecar(layout, hop, cfg.L, cfg.n_src, cfg.sample_rate, cfg.causal_lookahead)
    stem = file_name[:-len(".mindir")] if file_name.lower().endswith(".mindir") else file_name
    stem = os.path.abspath(stem) + "_stream"
    directory = os.path.dirname(stem)
    os.makedirs(directory, exist_ok=True)
    tmp_dir = tempfile.mkdtemp(prefix=".tmp-export-", dir=directory)
    try:
        tmp_stem = os.path.join(tmp_dir, "model")
        example = [ms.Tensor(np.zeros((1, hop), np.float32))]
        example += [ms.Tensor(a) for a in initial_state(layout)]
        try:
            ms.export(cell, *example, file_name=tmp_stem, file_format="MINDIR")
        except OSError as err:
            raise OSError(err.errno, err.strerror, stem + ".mindir") from None
        except (RuntimeError, ValueError, TypeError) as err:
            raise UserError(f"stream: MINDIR export failed: {_first_line(err)}") from None
        with open(tmp_stem + ".json", "w", encoding="utf-8") as f:
            json.dump(info, f, indent=1)
        worst = check_stream_mindir(tmp_stem + ".mindir", info, params, cfg)
        if not worst <= TOLERANCE:
            raise UserError(f"{stem}.mindir: the reloaded streaming MINDIR differs from the "
                            f"streaming separator by {worst:.3g} relative (more than "
                            f"{TOLERANCE}); nothing written")
        os.replace(tmp_stem + ".json", stem + ".json")
        os.replace(tmp_stem + ".mindir", stem + ".mindir")
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    log(f"exported {stem}.mindir (MINDIR streaming step: {hop} samples in per call, "
        f"{len(layout)} state tensors) and {stem}.json")
    log(f"checked: the reloaded MINDIR streamed over {cfg.stream_check_seconds:g} s gives the "
        f"streaming separator's output (largest difference {worst:.3g} relative)")
    return stem + ".mindir", stem + ".json"
