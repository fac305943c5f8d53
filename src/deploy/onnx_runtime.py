"""Running an exported Conv-TasNet ONNX model with onnxruntime.

Needs only numpy and onnxruntime (no MindSpore, no onnx package): separating recordings with an
ONNX model works on a machine with onnxruntime, numpy and soundfile (separate_onnx.py).
"""
import os

import numpy as np

from src.model_utils.errors import UserError

# Metadata written by export (src/deploy/onnx_export.py) that consumers read back.
SETTINGS = {"sample_rate": int, "n_src": int, "L": int, "separate_chunk_seconds": float,
            "chunk_overlap": float}


def _session(path, threads=0):
    import onnxruntime as ort

    if not os.path.isfile(path):
        raise UserError(f"{path}: ONNX model not found")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    # Every call has another length: onnxruntime's arena and memory patterns, made for fixed
    # shapes, then only raise the peak memory (benchmarks/README.md).
    options.enable_cpu_mem_arena = False
    options.enable_mem_pattern = False
    try:
        return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types for unreadable files
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise UserError(f"{path}: not a readable ONNX model ({first})") from None


def model_settings(session, path):
    """{sample_rate, n_src, L, separate_chunk_seconds, chunk_overlap} from the model's metadata."""
    meta = session.get_modelmeta().custom_metadata_map
    missing = [key for key in SETTINGS if key not in meta]
    if missing:
        raise UserError(f"{path}: not a Conv-TasNet ONNX model of this project (metadata "
                        f"{', '.join(missing)} missing; export it with export.py)")
    return {key: cast(meta[key]) for key, cast in SETTINGS.items()}


def load_onnx(path, threads=0):
    """A model_fn (numpy [1, t] float32 -> [1, C, t]) running the ONNX model at `path`.

    The model_fn has `settings` (model_settings) and, for a model exported with a fixed input
    length, `max_samples`: shorter chunks are zero-padded to it and the output cut back.
    threads: onnxruntime's intra-op threads (0: its default, one per core).
    """
    session = _session(path, threads)
    settings = model_settings(session, path)
    input_name = session.get_inputs()[0].name
    fixed = session.get_inputs()[0].shape[-1]
    fixed = fixed if isinstance(fixed, int) and fixed > 0 else 0

    def model_fn(mixture):
        t = mixture.shape[-1]
        if fixed:
            if t > fixed:
                raise UserError(f"{path}: the model takes {fixed} samples, got {t}")
            mixture = np.pad(mixture, ((0, 0), (0, fixed - t)))
        return session.run(None, {input_name: np.ascontiguousarray(mixture, np.float32)})[0][..., :t]

    model_fn.settings = settings
    if fixed:
        model_fn.max_samples = fixed
    return model_fn


def check_settings(settings, cfg, path):
    """UserError when the model's sample rate, C or L differ from the configuration's."""
    for key, cfg_key in (("sample_rate", "sample_rate"), ("n_src", "n_src"), ("L", "L")):
        if settings[key] != getattr(cfg, cfg_key):
            raise UserError(f"{cfg_key}: {path} was exported with {key} = {settings[key]}, the "
                            f"configuration has {getattr(cfg, cfg_key)} (pass the --config_path "
                            "the model was trained with)")
