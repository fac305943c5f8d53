"""Exporting a trained network for deployment (MINDIR, AIR) and checking the exported file.

ONNX is built and checked by src/deploy/onnx_export.py.

The exported graph takes a mixture [1, T] and gives estimates [1, C, T]. With `input_length` 0 the
time axis is dynamic (`Tensor(shape=[1, None])`): one MINDIR serves utterances of any length. With
`input_length` > 0 the graph takes exactly that many samples (for runtimes that need static
shapes); longer signals then go through it in chunks (src/deploy/inference.py, preprocess_310.py).
A MINDIR is loaded back with `mindspore.load` + `nn.GraphCell` and must give the cell's output.
"""
import os
import shutil
import tempfile

import numpy as np

from src.model_utils.errors import UserError

EXTENSIONS = {"MINDIR": ".mindir", "AIR": ".air", "ONNX": ".onnx"}
TOLERANCE = 1e-4   # largest difference a reloaded MINDIR may show against the network


def export_input(input_length):
    """The example input of the export: [1, None] float32 for 0 (dynamic), else zeros [1, length]."""
    import mindspore as ms
    if input_length < 0:
        raise UserError(f"input_length: expected 0 (dynamic) or a number of samples, "
                        f"got {input_length}")
    if input_length == 0:
        return ms.Tensor(shape=[1, None], dtype=ms.float32)
    return ms.Tensor(np.zeros((1, input_length), np.float32))


def _first_line(err):
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0][:200] if lines else type(err).__name__


def export_network(net, file_name, file_format="MINDIR", input_length=0, device_target="CPU",
                   check=None):
    """Export `net` to `file_name` + the format's extension, atomically. Returns the path written.

    `check(path)`, when given, is called on the exported file under its temporary name and may
    raise: the file is renamed into place only after it returned. AIR needs the Ascend toolkit
    (device_target Ascend). Failures of the converter are UserErrors that say why. ONNX:
    src/deploy/onnx_export.py.
    """
    import mindspore as ms
    if file_format not in EXTENSIONS:
        raise UserError(f"file_format: expected one of {sorted(EXTENSIONS)}, got {file_format!r}")
    if file_format == "AIR" and device_target != "Ascend":
        raise UserError(f"file_format: AIR is written by the Ascend toolkit; run with "
                        f"--device_target=Ascend on an Ascend host (got {device_target}), or "
                        "export MINDIR")
    if file_format == "ONNX":
        # MindSpore's converter has fixed shapes only and no rule for gLN's, cLN's and the
        # decoder's operators: the ONNX graph is built by src/deploy/onnx_export.py instead.
        raise ValueError("ONNX is written by src.deploy.onnx_export.export_onnx")
    example = export_input(input_length)
    extension = EXTENSIONS[file_format]
    stem = file_name[:-len(extension)] if file_name.lower().endswith(extension) else file_name
    path = os.path.abspath(stem + extension)
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    tmp_dir = tempfile.mkdtemp(prefix=".tmp-export-", dir=directory)
    # The C++ kernels of the CPU engine are a library of this machine: the file gets the same
    # computation in MindSpore's operators.
    kernels = getattr(net, "kernels", False)
    if kernels:
        net.set_kernels(False)
    try:
        tmp_stem = os.path.join(tmp_dir, "model")
        try:
            ms.export(net, example, file_name=tmp_stem, file_format=file_format)
        except OSError as err:      # a full disk: name the file the user asked for
            raise OSError(err.errno, err.strerror, path) from None
        if check:
            check(tmp_stem + extension)
        os.replace(tmp_stem + extension, path)
    except (RuntimeError, ValueError, TypeError) as err:
        why = _first_line(err)
        raise UserError(f"file_format: {file_format} export failed: {why}") from None
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        if kernels:
            net.set_kernels(True)
    return path


def mindir_input_shape(path):
    """The input shape stored in a MINDIR file, e.g. [1, -1] (dynamic time axis) or [1, 32000]."""
    from mindspore.train import mind_ir_pb2
    if not os.path.isfile(path):
        raise UserError(f"{path}: MINDIR file not found")
    model = mind_ir_pb2.ModelProto()
    try:
        with open(path, "rb") as f:
            model.ParseFromString(f.read())
        dims = [int(d) for d in model.graph.input[0].tensor[0].dims]
    except Exception as err:  # protobuf raises its own DecodeError; anything else is unreadable too
        raise UserError(f"{path}: not a readable MINDIR ({_first_line(err)})") from None
    if len(dims) != 2 or dims[0] != 1:
        raise UserError(f"{path}: expected a model of input [1, T], found input shape {dims}")
    return dims


def load_mindir(path):
    """An nn.GraphCell running the MINDIR at `path`."""
    import mindspore as ms
    from mindspore import nn
    if not os.path.isfile(path):
        raise UserError(f"{path}: MINDIR file not found")
    try:
        return nn.GraphCell(ms.load(path))
    except (RuntimeError, ValueError, OSError) as err:
        raise UserError(f"{path}: not a readable MINDIR ({_first_line(err)})") from None


def check_mindir(net, path, lengths, seed=0):
    """Run the MINDIR at `path` and the cell `net` on random mixtures of each length.

    Returns the largest absolute difference of their outputs over all lengths.
    """
    import mindspore as ms
    graph = load_mindir(path)
    rng = np.random.default_rng(seed)
    worst = 0.0
    for length in lengths:
        x = ms.Tensor((0.1 * rng.standard_normal((1, length))).astype(np.float32))
        expected = net(x).asnumpy()
        got = graph(x).asnumpy()
        if got.shape != expected.shape:
            raise RuntimeError(f"{path}: output shape {got.shape}, the cell gives {expected.shape}")
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst


def run_stream_export(cfg, log=print):
    """export.py --stream=true: the streaming step of the causal model cfg.ckpt_file as
    <file_name>_stream.mindir and <file_name>_stream.json (src/deploy/stream_export.py). Returns
    the MINDIR's path."""
    from src.model.checkpoint import load_network
    from src.deploy.stream_export import export_stream
    from src.deploy.streaming import check_causal

    if cfg.file_format != "MINDIR":
        raise UserError(f"file_format: the streaming step is exported as MINDIR only, got "
                        f"{cfg.file_format}")
    check_causal(cfg, cfg.ckpt_file or "export.py --stream=true")
    net = load_network(cfg, cfg.ckpt_file, engine="plain")
    params = {name: param.asnumpy() for name, param in net.parameters_and_names()}
    return export_stream(cfg, params, cfg.file_name, log)[0]


def run_export(cfg, log=print):
    """export.py: export cfg.ckpt_file as cfg.file_format to cfg.file_name. A MINDIR is loaded
    back and checked against the network before it is renamed into place (a file that fails its
    check is never published); ONNX is src/deploy/onnx_export.run_onnx_export. Returns the path
    written."""
    from src.model.checkpoint import load_network

    if 0 < cfg.input_length < cfg.L:
        raise UserError(f"input_length: {cfg.input_length} samples is shorter than the encoder "
                        f"kernel L={cfg.L}; expected 0 (any length) or at least {cfg.L}")
    if cfg.stream:
        return run_stream_export(cfg, log)
    net = load_network(cfg)
    if cfg.file_format == "ONNX":
        from src.deploy.onnx_export import run_onnx_export
        return run_onnx_export(cfg, net, log)
    lengths = ([cfg.input_length] if cfg.input_length else
               [cfg.sample_rate, cfg.sample_rate * 3 // 2 + 3])
    checked = {}

    def check(exported):
        checked["worst"] = worst = check_mindir(net, exported, lengths)
        if worst > TOLERANCE:
            raise UserError(f"{cfg.file_name}: the reloaded MINDIR differs from the network by "
                            f"{worst:.3g} (more than {TOLERANCE}); nothing written")

    path = export_network(net, cfg.file_name, cfg.file_format, cfg.input_length,
                          cfg.device_target, check=check if cfg.file_format == "MINDIR" else None)
    shape = "[1, T] for any T" if cfg.input_length == 0 else f"[1, {cfg.input_length}]"
    log(f"exported {path} ({cfg.file_format}, input {shape})")
    if cfg.file_format != "MINDIR":
        log(f"not checked: MindSpore cannot load {cfg.file_format} back")
        return path
    log(f"checked: the reloaded MINDIR gives the network's output at lengths "
        f"{', '.join(map(str, lengths))} (largest difference {checked['worst']:.3g})")
    return path
