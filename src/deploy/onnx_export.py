"""Conv-TasNet as an ONNX graph, built with the onnx package from a network's weights.

MindSpore's ONNX converter exports fixed input shapes only and has no rule for the operators of
gLN (Rsqrt), cLN (CumSum) or the decoder's transposed convolution (Conv2DBackpropInput), so the
graph is written here, operator by operator, in the frames-last matrix-product form of the CPU
engine (src/model/cpu_engine.py): the same function with the same weights (of the plain network
or the CPU engine, which have the same parameters), every 1x1 convolution a MatMul (which
onnxruntime's int8 quantization handles best), and both the batch and the time axis dynamic:

    mixture [batch, T] (any T >= 1, as the network) -> estimates [batch, C, T]

Inside, tensors are [batch, K, channels] with K encoder frames. The model's settings a consumer
needs (sample rate, C, L) are stored in the file's metadata (`model_settings`).

MindSpore 2.7: `import onnx` before `import mindspore` breaks MindSpore's import (protobuf
descriptors), so the onnx package is imported inside the functions, after MindSpore.
"""
import os

import numpy as np

from src.model_utils.errors import UserError

OPSET = 17
INPUT, OUTPUT = "mixture", "estimates"
# Slice ends meaning "to the end of the axis".
TO_END = np.iinfo(np.int64).max


class _Graph:
    """Nodes and initializers of an ONNX graph under construction, with short names."""

    def __init__(self):
        from onnx import helper, numpy_helper
        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes, self.initializers, self.count = [], [], 0

    def name(self, hint):
        self.count += 1
        return f"{hint}_{self.count}"

    def const(self, value, hint="const", dtype=np.float32):
        """An initializer holding `value`; returns its name."""
        name = self.name(hint)
        self.initializers.append(self.numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def ints(self, *values):
        return self.const(list(values), "ints", np.int64)

    def op(self, op_type, inputs, hint=None, **attrs):
        """Add one node with one output; returns the output's name."""
        out = self.name(hint or op_type.lower())
        self.nodes.append(self.helper.make_node(op_type, list(inputs), [out], name=out, **attrs))
        return out

    def slice(self, x, start, end, axis):
        return self.op("Slice", [x, self.ints(start), self.ints(end), self.ints(axis)])


def _array(param):
    return np.asarray(param.asnumpy(), np.float32)


def _matrix(conv):
    """The [in, out] matrix of a 1x1 convolution (x @ matrix is the convolution frames last)."""
    return _array(conv.weight).reshape(conv.out_channels, conv.in_channels).T


def _linear(g, x, conv, hint):
    """x [batch, K, in] -> [batch, K, out]: a 1x1 convolution with its bias."""
    # Node names start with the layer's name (nodes_to_exclude of int8 quantization).
    y = g.op("MatMul", [x, g.const(_matrix(conv), f"{hint}.weight")], f"{hint}.matmul")
    if conv.has_bias:
        y = g.op("Add", [y, g.const(_array(conv.bias), f"{hint}.bias")], f"{hint}.add")
    return y


def _prelu(g, x, prelu, hint):
    # PReLU with one slope is LeakyRelu with that slope: onnxruntime's PRelu broadcasts the
    # slope through its generic broadcasting path, which is slower (benchmarks/README.md).
    return g.op("LeakyRelu", [x], hint, alpha=float(_array(prelu.w).reshape(-1)[0]))


def _norm(g, x, norm, hint):
    """gLN, cLN or BN (inference: moving statistics) of x [batch, K, channels]."""
    from mindspore import nn
    from src.model.conv_tasnet import EPS, CumulativeLayerNorm, GlobalLayerNorm

    if isinstance(norm, nn.BatchNorm1d):
        scale = _array(norm.gamma) / np.sqrt(_array(norm.moving_variance) + norm.eps)
        shift = _array(norm.beta) - _array(norm.moving_mean) * scale
        return g.op("Add", [g.op("Mul", [x, g.const(scale, f"{hint}.scale")]),
                            g.const(shift, f"{hint}.shift")])
    if isinstance(norm, GlobalLayerNorm):
        # LayerNormalization from axis 1 normalises over frames and channels together: gLN.
        return g.op("LayerNormalization", [x, g.const(_array(norm.norm.gamma), f"{hint}.gamma"),
                                           g.const(_array(norm.norm.beta), f"{hint}.beta")],
                    hint, axis=1, epsilon=EPS)
    if isinstance(norm, CumulativeLayerNorm):
        gamma, beta = _array(norm.gamma).reshape(-1), _array(norm.beta).reshape(-1)
        frames_axis = g.ints(1)
        channel_sum = g.op("ReduceSum", [x, g.ints(2)], keepdims=1)             # [batch, K, 1]
        power_sum = g.op("ReduceSum", [g.op("Mul", [x, x]), g.ints(2)], keepdims=1)
        ones = g.op("Add", [g.op("Mul", [channel_sum, g.const(0.0)]), g.const(1.0)])
        count = g.op("Mul", [g.op("CumSum", [ones, frames_axis]),
                             g.const(float(norm.channels))])
        mean = g.op("Div", [g.op("CumSum", [channel_sum, frames_axis]), count])
        var = g.op("Relu", [g.op("Sub", [g.op("Div", [g.op("CumSum", [power_sum, frames_axis]),
                                                      count]),
                                         g.op("Mul", [mean, mean])])])
        centred = g.op("Sub", [x, mean])
    else:
        raise TypeError(f"no ONNX form for the normalisation {type(norm).__name__}")
    y = g.op("Div", [centred, g.op("Sqrt", [g.op("Add", [var, g.const(EPS)])])])
    return g.op("Add", [g.op("Mul", [y, g.const(gamma, f"{hint}.gamma")]),
                        g.const(beta, f"{hint}.beta")])


def _depthwise(g, y, block, hint):
    """The block's dilated depthwise convolution of y [batch, K, H] -> [batch, K, H]: a grouped
    Conv, channels first in between (faster and leaner in onnxruntime than P shifted products;
    benchmarks/README.md)."""
    before, after = block.pad
    y = g.op("Transpose", [y], perm=[0, 2, 1])                                   # [batch, H, K]
    weight = g.const(_array(block.dconv.weight).reshape(block.H, 1, -1), f"{hint}.weight")
    y = g.op("Conv", [y, weight, g.const(_array(block.dconv.bias), f"{hint}.bias")],
             f"{hint}.conv", group=block.H, dilations=[block.dilation], pads=[before, after])
    return g.op("Transpose", [y], perm=[0, 2, 1])


def _block(g, x, block, hint):
    """One ConvBlock: x [batch, K, B] -> its outputs [batch, K, B + Sc]: the residual, then the
    skip connection (one MatMul for both; [batch, K, B] without the skip path)."""
    y = _linear(g, x, block.conv1x1, f"{hint}.conv1x1")
    y = _norm(g, _prelu(g, y, block.prelu1, f"{hint}.prelu1"), block.norm1, f"{hint}.norm1")
    y = _depthwise(g, y, block, f"{hint}.dconv")
    y = _norm(g, _prelu(g, y, block.prelu2, f"{hint}.prelu2"), block.norm2, f"{hint}.norm2")
    if block.skip_conv is None:
        return _linear(g, y, block.res_conv, f"{hint}.res_conv")
    weight = np.concatenate([_matrix(block.res_conv), _matrix(block.skip_conv)], axis=1)
    bias = np.concatenate([_array(block.res_conv.bias), _array(block.skip_conv.bias)])
    y = g.op("MatMul", [y, g.const(weight, f"{hint}.res_skip_conv.weight")],
             f"{hint}.res_skip_conv.matmul")
    return g.op("Add", [y, g.const(bias, f"{hint}.res_skip_conv.bias")],
                f"{hint}.res_skip_conv.add")


def _masks(g, w, separator):
    """The separator: w [batch, K, N] -> masks [batch, K, C, N]."""
    from mindspore import nn

    x = _norm(g, w, separator.layer_norm, "separator.layer_norm")
    x = _linear(g, x, separator.bottleneck, "separator.bottleneck")
    B = separator.bottleneck.out_channels
    # With the skip path, the residual stream and the skip sum travel as one tensor
    # [batch, K, B + Sc], so that each block's skip output is added where it is computed:
    # onnxruntime's execution order otherwise postpones the skip convolutions to the end and keeps
    # every block's [batch, K, H] activation alive until then (benchmarks/README.md).
    state = x
    if separator.use_skip:
        Sc = separator.mask_conv.in_channels
        state = g.op("Pad", [x, g.ints(0, 0, 0, 0, 0, Sc)])                       # skip sum 0
    for i, block in enumerate(separator.blocks):
        state = g.op("Add", [state, _block(g, x, block, f"separator.blocks.{i}")])
        x = g.slice(state, 0, B, 2) if separator.use_skip else state
    y = g.slice(state, B, TO_END, 2) if separator.use_skip else x                # skip sum or x
    y = _prelu(g, y, separator.mask_prelu, "separator.mask_prelu")
    scores = _linear(g, y, separator.mask_conv, "separator.mask_conv")
    scores = g.op("Reshape", [scores, g.ints(0, -1, separator.C, separator.N)])
    act = separator.mask_act
    if isinstance(act, nn.Softmax):
        return g.op("Softmax", [scores], axis=2)
    return g.op("Sigmoid" if isinstance(act, nn.Sigmoid) else "Relu", [scores], hint="mask")


def build_onnx(net, settings=None):
    """The ONNX ModelProto of ConvTasNet `net` (its current weights, inference mode).

    settings: {name: value} stored as metadata (e.g. sample_rate, n_src, L), see model_settings.
    """
    from onnx import TensorProto, helper

    g = _Graph()
    S, L, C, N = net.stride, net.L, net.C, net.N
    length = g.op("Gather", [g.op("Shape", [INPUT]), g.ints(1)], axis=0)       # [1] = T
    # K = max(1, (T + front_pad + edge_pad - 1) // S); the frames span (K + 1) * S samples.
    frames = g.op("Max", [g.op("Div", [g.op("Add", [length, g.ints(net.front_pad + net.edge_pad
                                                                  - 1)]),
                                       g.ints(S)]), g.ints(1)])
    span = g.op("Mul", [g.op("Add", [frames, g.ints(1)]), g.ints(S)])
    x = g.op("Pad", [INPUT, g.ints(0, net.front_pad, 0, net.edge_pad + L)])
    x = g.op("Slice", [x, g.ints(0), span, g.ints(1)])
    halves = g.op("Reshape", [x, g.ints(0, -1, S)])                           # [batch, K+1, S]
    framed = g.op("Concat", [g.slice(halves, 0, -1, 1), g.slice(halves, 1, TO_END, 1)], axis=2)
    basis = _array(net.encoder.weight).reshape(N, L).T                          # [L, N]
    w = g.op("MatMul", [framed, g.const(basis, "encoder.weight")], "encoder.matmul")  # [b, K, N]
    if net.encoder_relu:
        w = g.op("Relu", [w])
    masks = _masks(g, w, net.separator)                                         # [batch, K, C, N]
    masked = g.op("Mul", [masks, g.op("Unsqueeze", [w, g.ints(2)])])
    synthesis = _array(net.decoder.weight).reshape(N, L)
    segments = g.op("MatMul", [masked, g.const(synthesis, "decoder.weight")],
                    "decoder.matmul")                                           # [batch, K, C, L]
    segments = g.op("Transpose", [segments], perm=[0, 2, 1, 3])                # [batch, C, K, L]
    # Overlap-add with hop L/2: output hop k is the first half of frame k plus the second half
    # of frame k-1.
    first = g.op("Pad", [g.slice(segments, 0, S, 3), g.ints(0, 0, 0, 0, 0, 0, 1, 0)])
    second = g.op("Pad", [g.slice(segments, S, TO_END, 3), g.ints(0, 0, 1, 0, 0, 0, 0, 0)])
    s = g.op("Reshape", [g.op("Add", [first, second]), g.ints(0, C, -1)])     # [batch, C, ...]
    end = g.op("Add", [length, g.ints(net.edge_pad)])
    g.nodes.append(helper.make_node("Slice", [s, g.ints(net.edge_pad), end, g.ints(2)],
                                    [OUTPUT], name=OUTPUT))
    graph = helper.make_graph(
        g.nodes, "conv_tasnet",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", "T"])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", C, "T"])],
        g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="conv_tasnet")
    # The IR version of opset 17's time, so that older onnxruntime releases read the file too
    # (onnx 1.23 writes its newest by default).
    model.ir_version = min(model.ir_version, 10)
    helper.set_model_props(model, {key: str(value) for key, value in (settings or {}).items()})
    return model


def check_onnx(net, path, lengths, seed=0):
    """onnx.checker on the file at `path`, then onnxruntime against the cell `net` on random
    mixtures of each length. Returns the largest difference relative to the largest output
    magnitude, over all lengths."""
    import mindspore as ms
    import onnx
    import onnxruntime as ort

    onnx.checker.check_model(path, full_check=True)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    worst = 0.0
    for length in lengths:
        x = (0.1 * rng.standard_normal((1, length))).astype(np.float32)
        expected = net(ms.Tensor(x)).asnumpy()
        got = session.run(None, {INPUT: x})[0]
        if got.shape != expected.shape:
            raise RuntimeError(f"{path}: output shape {got.shape}, the cell gives {expected.shape}")
        scale = max(float(np.abs(expected).max()), 1e-12)
        worst = max(worst, float(np.abs(got - expected).max()) / scale)
    return worst


def export_onnx(net, path, settings, input_length=0, lengths=(8000, 12003), tolerance=1e-4):
    """Write the ONNX model of `net` to `path` after checking it (check_onnx at `lengths`).

    input_length 0 keeps the time axis dynamic; > 0 fixes it (and is then the only length
    checked). The file appears under `path` only when the check passed. Returns (path, worst
    relative difference, lengths checked).
    """
    from src.model_utils.atomic import atomic_output

    model = build_onnx(net, settings)
    if input_length > 0:
        model.graph.input[0].type.tensor_type.shape.dim[1].dim_value = input_length
        lengths = (input_length,)
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(model.SerializeToString())
        worst = check_onnx(net, tmp, lengths)
        if not worst <= tolerance:
            raise RuntimeError(f"{path}: onnxruntime's output differs from the network's by "
                               f"{worst:.3g} of its largest magnitude (more than {tolerance:g})")
    return path, worst, lengths


def run_onnx_export(cfg, net, log=print):
    """export.py --file_format=ONNX: `net` to cfg.file_name + .onnx, checked, with the settings
    a consumer needs as metadata."""
    from src.deploy.onnx_runtime import SETTINGS

    stem = cfg.file_name[:-5] if cfg.file_name.lower().endswith(".onnx") else cfg.file_name
    if cfg.input_length < 0:
        raise UserError(f"input_length: expected 0 (dynamic) or a number of samples >= L, "
                        f"got {cfg.input_length}")
    path, worst, lengths = export_onnx(net, os.path.abspath(stem + ".onnx"),
                                       {key: getattr(cfg, key) for key in SETTINGS},
                                       cfg.input_length,
                                       (cfg.sample_rate, cfg.sample_rate * 3 // 2 + 3))
    shape = (f"[batch, {cfg.input_length}]" if cfg.input_length else
             "[batch, T] for any batch and T")
    log(f"exported {path} (ONNX, input {shape})")
    log(f"checked: onnx.checker accepts it; onnxruntime gives the network's output at lengths "
        f"{', '.join(map(str, lengths))} (largest difference {worst:.3g} of the output's largest "
        "magnitude)")
    if cfg.quantize != "none":
        run_quantization(cfg, path, log)
    return path


def run_quantization(cfg, float_path, log=print):
    """export.py --quantize: the int8 model of `float_path`, with its output SNR against the
    float model's on training mixtures (a check of the quantization, not a quality score)."""
    import onnx

    from src.deploy.onnx_quantize import quantize_onnx, training_mixtures
    from src.deploy.onnx_runtime import load_onnx

    # Dynamic quantization needs no data: training mixtures, where there are, only check it.
    has_data = os.path.isfile(os.path.join(cfg.data_dir, cfg.train_name, "mix.json"))
    calibrated = cfg.quantize in ("static", "full")
    if calibrated and cfg.calibration_mixtures < 1:
        raise UserError(f"calibration_mixtures: expected a number of mixtures >= 1, got "
                        f"{cfg.calibration_mixtures}")
    # Up to 4 more than the calibration takes, so that the check runs on other mixtures.
    mixtures = (training_mixtures(cfg.data_dir, cfg.train_name, cfg.calibration_mixtures + 4,
                                  cfg.segment, cfg.sample_rate)
                if calibrated or has_data else [])
    mixtures, check = mixtures[:cfg.calibration_mixtures], mixtures[cfg.calibration_mixtures:]
    out = float_path[:-len(".onnx")] + f"_int8_{cfg.quantize}.onnx"
    quantize_onnx(float_path, out, cfg.quantize, mixtures, cfg.keep_float)
    onnx.checker.check_model(out)
    float_fn, int8_fn = load_onnx(float_path), load_onnx(out)
    snr = []
    for mixture in check:
        reference = float_fn(mixture[None])
        error = int8_fn(mixture[None]) - reference
        snr.append(10 * np.log10((reference ** 2).sum() / max((error ** 2).sum(), 1e-20)))
    log(f"quantized {out} ({cfg.quantize}; {os.path.getsize(out) / 1e6:.2f} MB, float "
        f"{os.path.getsize(float_path) / 1e6:.2f} MB)")
    if snr:
        log(f"checked: its output against the float model's on {len(check)} training mixtures: "
            f"SNR {np.mean(snr):.1f} dB")
    return out
