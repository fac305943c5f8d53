"""Post-training int8 quantization of an exported ONNX model with onnxruntime.quantization.

Three schemes; the first two on the graph's MatMuls (every 1x1 convolution, the encoder and the
decoder of src/deploy/onnx_export.py):
    dynamic  int8 weights; activations quantized on the fly, per MatMul call (no data needed).
    static   int8 weights (per output channel) and uint8 activations with fixed ranges,
             calibrated on training mixtures (QDQ format).
    full     as static, on every operator onnxruntime has an int8 kernel for: besides the
             MatMuls the depthwise Conv, the PReLUs, the additions, the transposes and slices, so
             that activations stay uint8 between them (the norms and the mask activation stay
             float32). The fastest (benchmarks/README.md).
Layers named in `keep_float` (node-name prefixes, e.g. "separator.mask_conv", "encoder",
"decoder") stay float32. The quantized file carries the float model's metadata, so every
consumer (separate.py, eval.py, separate_onnx.py) runs it as it runs the float one.
"""
import json
import os

import numpy as np

from src.model_utils.errors import UserError

SCHEMES = ("dynamic", "static", "full")
# Operators the full scheme quantizes (onnxruntime's QDQ kernels); the norms and the mask
# activation are not among them and stay float32.
FULL_OPS = ["MatMul", "Conv", "Add", "LeakyRelu", "Transpose", "Slice", "Pad", "Reshape", "Concat"]


def training_mixtures(data_dir, split, count, seconds, sample_rate, seed=0):
    """Up to `count` crops of `seconds` [t] float32 from random mixtures of a preprocessed split
    (its mix.json, as preprocess.py writes it), read with soundfile."""
    import soundfile as sf

    listing = os.path.join(data_dir, split, "mix.json")
    if not os.path.isfile(listing):
        raise UserError(f"{listing}: not found; calibration reads the training split "
                        "(--data_dir, --train_name) that preprocess.py writes")
    with open(listing, encoding="utf-8") as f:
        entries = json.load(f)
    if not entries:
        raise UserError(f"{listing}: no mixtures listed")
    rng = np.random.default_rng(seed)
    crop = int(seconds * sample_rate)
    mixtures = []
    for index in rng.permutation(len(entries))[:count]:
        path, length = entries[index][0], int(entries[index][1])
        start = int(rng.integers(0, max(1, length - crop + 1)))
        audio, rate = sf.read(path, start=start, frames=crop, dtype="float32", always_2d=True)
        if rate != sample_rate:
            raise UserError(f"{path}: {rate} Hz, the model's sample rate is {sample_rate}")
        mixtures.append(audio.mean(axis=1))
    return mixtures


def _reader(mixtures, input_name):
    from onnxruntime.quantization import CalibrationDataReader

    class MixtureReader(CalibrationDataReader):
        """One mixture [1, t] per calibration batch."""

        def __init__(self):
            self.items = iter(mixtures)

        def get_next(self):
            mixture = next(self.items, None)
            return None if mixture is None else {input_name: mixture[None].astype(np.float32)}

    return MixtureReader()


def float_nodes(model_path, keep_float):
    """Names of the nodes whose name starts with one of the prefixes in `keep_float`."""
    import onnx

    model = onnx.load(model_path)
    return [n.name for n in model.graph.node if any(n.name.startswith(p) for p in keep_float)]


def quantize_onnx(float_path, out_path, scheme, mixtures=None, keep_float=(),
                  calibrate_method="MinMax"):
    """Write the int8 model of `float_path` to `out_path` (atomically). Returns out_path.

    mixtures: the calibration mixtures [t] of the static scheme (training_mixtures).
    calibrate_method: MinMax, Entropy or Percentile (static scheme).
    """
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quantize_dynamic, quantize_static)

    from src.model_utils.atomic import atomic_output

    if scheme not in SCHEMES:
        raise UserError(f"quantize: expected one of {', '.join(SCHEMES)}, got {scheme!r}")
    if not os.path.isfile(float_path):
        raise UserError(f"{float_path}: ONNX model not found")
    exclude = float_nodes(float_path, keep_float)
    with atomic_output(out_path) as tmp:
        if scheme == "dynamic":
            quantize_dynamic(float_path, tmp, op_types_to_quantize=["MatMul"],
                             weight_type=QuantType.QInt8, nodes_to_exclude=exclude)
        else:
            if not mixtures:
                raise UserError("quantize: static quantization needs calibration mixtures")
            quantize_static(float_path, tmp, _reader(mixtures, "mixture"),
                            quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=FULL_OPS if scheme == "full" else ["MatMul"],
                            per_channel=True, weight_type=QuantType.QInt8,
                            activation_type=QuantType.QUInt8, nodes_to_exclude=exclude,
                            calibrate_method=getattr(CalibrationMethod, calibrate_method))
        _copy_metadata(float_path, tmp)
    return out_path


def _copy_metadata(source, target):
    """The consumers' settings (metadata_props) of `source` into the model file `target`."""
    import onnx

    model = onnx.load(target)
    meta = {p.key: p.value for p in onnx.load(source, load_external_data=False).metadata_props}
    onnx.helper.set_model_props(model, meta)
    onnx.save(model, target)
