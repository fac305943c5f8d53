"""Pretrained PyTorch Conv-TasNet weights (Asteroid, torchaudio) as a checkpoint of this project.

Reading: a PyTorch file (`torch.save`, zip format of PyTorch >= 1.6) is a zip archive holding a
pickle (`<name>/data.pkl`) and one raw little-endian buffer per tensor storage
(`<name>/data/<key>`).
The pickle is read by an unpickler that resolves only an allow-list of globals to stand-ins defined
here (tensors become numpy arrays, `TorchVersion` becomes a str); any other global is refused
before anything is called, so no code from the file ever runs. torch is not needed.

Formats:
    Asteroid serialized model (`BaseModel.serialize()`, what its pretrained models are): the model
        configuration is read from `model_args`.
    Asteroid state_dict (`masker.*` keys) and torchaudio's ConvTasNet state_dict
        (`mask_generator.*` keys): sizes are read from the tensor shapes; what a state_dict does not
        record (X, hence R; the mask activation; for Asteroid also the encoder activation, gLN
        or cLN; the sample rate) comes from the configuration (--X, --mask_nonlinear, ...).
torchaudio's model is gLN (eps 1e-8), relu masks for conv_tasnet_base() and its pretrained bundle
(sigmoid for ConvTasNet's own default), skip channels = B, the input padded with L/2
zeros at both ends (edge_pad = L/2), and no residual conv in the last block (its output is never
used when there are skip connections; the converted model gets zeros there).
"""
import collections
import os
import pickle
import re
import zipfile

import numpy as np

from src.model_utils.errors import UserError

MODEL_KEYS = ("N", "L", "B", "H", "Sc", "P", "X", "R", "n_src", "norm_type", "causal",
              "mask_nonlinear", "encoder_activation", "edge_pad", "sample_rate")

_STORAGE_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64,
                   "HalfStorage": np.float16, "LongStorage": np.int64, "IntStorage": np.int32,
                   "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
                   "BoolStorage": np.bool_, "UntypedStorage": np.uint8}


class _TensorRefused(Exception):
    """A tensor of the file that is not read (its reason); reported with the file's path."""


class _StorageType:
    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)


class _Version(str):
    """Stand-in for torch.torch_version.TorchVersion (a str subclass)."""


# The most elements one tensor of a weight file may hold: the largest tensor of a Conv-TasNet of
# any sensible size is far below it, and reading never allocates more than 4 bytes x this.
MAX_TENSOR_ELEMENTS = 10 ** 8


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
    """torch._utils._rebuild_tensor_v2 on a numpy storage: a copy of the strided view.

    A view of more elements than its storage holds from `offset` (an expanded or overlapping
    view, e.g. torch.zeros(1).expand(10**10): a weight file never holds one, and its copy could
    take any amount of memory) is refused before anything is allocated. Storages hold at most
    MAX_TENSOR_ELEMENTS (`_RestrictedUnpickler.persistent_load`), and so does every tensor.
    """
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if len(size) != len(stride) or offset < 0 or any(s < 0 for s in size + stride):
        raise ValueError(f"malformed tensor (size {size}, stride {stride}, offset {offset})")
    if 0 in size:
        return np.zeros(size, storage.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= len(storage):
        raise ValueError(f"tensor of size {size} reaches past its storage of {len(storage)}")
    elements = int(np.prod(size, dtype=object))
    if elements > len(storage) - offset:
        raise _TensorRefused(f"a tensor of size {size} has {elements} elements but its storage "
                             f"holds {len(storage) - offset} (an expanded or overlapping view, "
                             "which a weight file does not hold)")
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=size,
                                           strides=[s * storage.itemsize for s in stride])
    return np.array(view)


def _numpy_scalar(dtype, data=b""):
    """numpy.core.multiarray.scalar (how a numpy number, such as a metric in `infos`, pickles)."""
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
        raise ValueError("unsupported numpy scalar")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


def _numpy_dtype(name, align=False, copy=False):
    if not isinstance(name, str) or np.dtype(name).hasobject:
        raise ValueError(f"unsupported numpy dtype {name!r}")
    return np.dtype(name)


def _latin1_bytes(text, encoding):
    """_codecs.encode as protocol-2 pickles use it for bytes: str -> bytes, latin1 only."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise ValueError("unsupported _codecs.encode call")
    return text.encode("latin1")


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("_codecs", "encode"): _latin1_bytes,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy", "dtype"): _numpy_dtype,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): lambda data, requires_grad, hooks, *rest: data,
    ("torch.torch_version", "TorchVersion"): _Version,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, archive, prefix, path):
        super().__init__(file)
        self.archive, self.prefix, self.path = archive, prefix, path
        self.storages = {}
        big = f"{prefix}byteorder" in archive.namelist() and \
            archive.read(f"{prefix}byteorder").strip() == b"big"
        self.byteorder = ">" if big else "<"

    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        raise UserError(f"{self.path}: refused: the pickle asks for the global '{module}.{name}', "
                        "which a weight file does not need (nothing from the file was run)")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise UserError(f"{self.path}: unexpected persistent id {str(pid)[:80]} in the pickle")
        key = str(pid[2])
        if key not in self.storages:
            entry = f"{self.prefix}data/{key}"
            if entry not in self.archive.namelist():
                raise UserError(f"{self.path}: tensor storage '{entry}' missing from the archive")
            elements = self.archive.getinfo(entry).file_size // pid[1].dtype.itemsize
            if elements > MAX_TENSOR_ELEMENTS:
                raise UserError(f"{self.path}: refused: tensor storage '{entry}' holds {elements} "
                                f"elements, more than a Conv-TasNet holds (at most "
                                f"{MAX_TENSOR_ELEMENTS}); nothing was read")
            dtype = pid[1].dtype.newbyteorder(self.byteorder)
            data = np.frombuffer(self.archive.read(entry), dtype=dtype)
            self.storages[key] = data.astype(pid[1].dtype)
        return self.storages[key]


def read_torch_file(path):
    """The object saved by torch.save in `path`, with tensors as numpy arrays; nothing executed."""
    if not os.path.isfile(path):
        raise UserError(f"{path}: file not found")
    if not zipfile.is_zipfile(path):
        raise UserError(f"{path}: not a PyTorch zip file (torch.save of PyTorch >= 1.6); "
                        "re-save it with torch.save in a recent PyTorch")
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("data.pkl")]
        if len(pickles) != 1:
            raise UserError(f"{path}: expected one data.pkl in the archive, found {len(pickles)}")
        prefix = pickles[0][:-len("data.pkl")]
        with archive.open(pickles[0]) as f:
            try:
                return _RestrictedUnpickler(f, archive, prefix, path).load()
            except _TensorRefused as err:
                raise UserError(f"{path}: refused: {err}; nothing was allocated") from None
            except (pickle.UnpicklingError, ValueError, TypeError, EOFError, AttributeError) as err:
                raise UserError(f"{path}: unreadable pickle ({str(err)[:160]})") from None


# Module names of each library; {i} is a block's index.
_LAYOUTS = {
    "asteroid": dict(encoder="encoder.filterbank", decoder="decoder.filterbank",
                     layer_norm="masker.bottleneck.0", bottleneck="masker.bottleneck.1",
                     mask_prelu="masker.mask_net.0", mask_conv="masker.mask_net.1",
                     block="masker.TCN.{i}", layers="shared_block", res_conv="res_conv",
                     skip_conv="skip_conv", filters="_filters"),
    "torchaudio": dict(encoder="encoder", decoder="decoder", layer_norm="mask_generator.input_norm",
                       bottleneck="mask_generator.input_conv",
                       mask_prelu="mask_generator.output_prelu",
                       mask_conv="mask_generator.output_conv",
                       block="mask_generator.conv_layers.{i}", layers="conv_layers",
                       res_conv="res_out", skip_conv="skip_out", filters="weight"),
}
# The Sequential inside each block, in the same order in both libraries and in ConvBlock.
_BLOCK_LAYERS = ("conv1x1", "prelu1", "norm1", "dconv", "prelu2", "norm2")


def _pattern(name):
    """A module name with {i} as a regular expression capturing the block index."""
    return re.escape(name).replace(re.escape("{i}"), r"(\d+)")


def _rules(kind):
    """[(library module pattern, this project's module name)] for `kind`."""
    layout = _LAYOUTS[kind]
    rules = [(_pattern(layout[name]), name) for name in ("encoder", "decoder")]
    rules += [(_pattern(layout[name]), f"separator.{name}")
              for name in ("layer_norm", "bottleneck", "mask_prelu", "mask_conv")]
    rules += [(_pattern(f"{layout['block']}.{layout[name]}"), rf"separator.blocks.\1.{name}")
              for name in ("res_conv", "skip_conv")]
    rules += [(_pattern(f"{layout['block']}.{layout['layers']}.{i}"),
               rf"separator.blocks.\1.{name}") for i, name in enumerate(_BLOCK_LAYERS)]
    return rules


# Tensor names of torch modules -> candidate names in this project's cells.
_LEAVES = {"weight": ("weight", "gamma", "w"), "bias": ("bias", "beta"), "_filters": ("weight",),
           "gamma": ("gamma",), "beta": ("beta",), "running_mean": ("moving_mean",),
           "running_var": ("moving_variance",)}
_IGNORED_LEAVES = ("num_batches_tracked",)


def detect_format(obj, path):
    """('asteroid' or 'torchaudio', state_dict, model_args or None) for a loaded PyTorch file."""
    if not isinstance(obj, dict):
        raise UserError(f"{path}: expected a dict (a state_dict or Asteroid's serialized model), "
                        f"got {type(obj).__name__}")
    model_args = None
    if "state_dict" in obj:
        if "model_args" in obj:
            name = obj.get("model_name", "ConvTasNet")
            if name != "ConvTasNet":
                raise UserError(f"{path}: model_name is {name!r}; only ConvTasNet is converted")
            model_args = obj["model_args"]
        obj = obj["state_dict"]
    keys = [k for k in obj if isinstance(k, str)]
    if keys and all(k.startswith("model.") for k in keys):   # a training wrapper's prefix
        obj = {k[len("model."):]: v for k, v in obj.items()}
        keys = list(obj)
    if any(k.startswith("masker.") for k in keys):
        return "asteroid", obj, model_args
    if any(k.startswith("mask_generator.") for k in keys):
        return "torchaudio", obj, model_args
    shown = ", ".join(keys[:4]) + (", ..." if len(keys) > 4 else "")
    raise UserError(f"{path}: no Asteroid (masker.*) or torchaudio (mask_generator.*) ConvTasNet "
                    f"tensors found (keys: {shown})")


def _shape(state, key, path):
    if key not in state:
        raise UserError(f"{path}: tensor '{key}' missing; not a Conv-TasNet of the expected layout")
    return np.shape(state[key])


def _count_blocks(state, pattern):
    indices = {int(m.group(1)) for k in state for m in [re.match(pattern, k)] if m}
    return max(indices) + 1 if indices else 0


def _split_blocks(total, cfg, path):
    if cfg.X < 1:
        raise UserError(f"X: expected the model's blocks per repeat (>= 1), got {cfg.X}")
    if total % cfg.X:
        raise UserError(f"{path}: {total} convolutional blocks cannot be {cfg.X} per repeat "
                        f"(X={cfg.X}); pass the model's --X")
    return cfg.X, total // cfg.X


def asteroid_config(model_args, path):
    """Model settings of this project from Asteroid's model_args; UserError for what differs."""
    def arg(name, default=None):
        if name not in model_args and default is None:
            raise UserError(f"{path}: model_args has no '{name}'")
        return model_args.get(name, default)

    norms = {"gLN": "gLN", "cgLN": "cLN", "bN": "BN", "BN": "BN"}
    checks = [("fb_name", arg("fb_name", "free") in ("free", "FreeFB"), "a free filterbank"),
              ("norm_type", arg("norm_type", "gLN") in norms, "gLN, cgLN or bN"),
              ("mask_act", arg("mask_act", "sigmoid") in ("relu", "sigmoid", "softmax"),
               "relu, sigmoid or softmax"),
              ("stride", arg("stride") * 2 == arg("kernel_size"), "kernel_size / 2"),
              ("causal", not arg("causal", False),
               "false (a causal Asteroid encoder is not aligned like this project's)"),
              ("encoder_activation",
               arg("encoder_activation", "linear") in (None, "linear", "relu"),
               "none, linear or relu")]
    for key, ok, expected in checks:
        if not ok:
            raise UserError(f"{path}: model_args {key}={model_args.get(key)!r}: "
                            f"expected {expected}")
    N = arg("n_filters")
    for key in ("in_chan", "out_chan"):
        if model_args.get(key) not in (None, N):
            raise UserError(f"{path}: model_args {key}={model_args[key]} differs from "
                            f"n_filters={N}")
    return dict(N=N, L=arg("kernel_size"), B=arg("bn_chan"), H=arg("hid_chan"),
                Sc=arg("skip_chan") or 0, P=arg("conv_kernel_size"), X=arg("n_blocks"),
                R=arg("n_repeats"), n_src=arg("n_src"), norm_type=norms[arg("norm_type", "gLN")],
                causal=False, mask_nonlinear=arg("mask_act", "sigmoid"),
                encoder_activation=arg("encoder_activation") or "linear", edge_pad=0,
                sample_rate=int(arg("sample_rate", 8000)))


def state_dict_config(kind, state, cfg, path):
    """Model settings read from the tensor shapes of a bare state_dict, the rest from `cfg`.

    Returns (settings, assumed): `assumed` names the settings a state_dict does not record.
    """
    if kind == "asteroid" and "masker.TCN.0.shared_block.3.0.weight" in state:
        raise UserError(f"{path}: a causal Asteroid model; its encoder is not aligned like "
                        "this project's causal model")
    layout = _LAYOUTS[kind]
    block = layout["block"].format(i=0)
    names = dict(encoder=f"{layout['encoder']}.{layout['filters']}",
                 bottleneck=f"{layout['bottleneck']}.weight",
                 block=f"{block}.{layout['layers']}.{{}}.weight",
                 skip=f"{block}.{layout['skip_conv']}.weight", mask=f"{layout['mask_conv']}.weight",
                 blocks=_pattern(layout["block"]))
    N, _, L = _shape(state, names["encoder"], path)
    B = _shape(state, names["bottleneck"], path)[0]
    H = _shape(state, names["block"].format(0), path)[0]
    P = _shape(state, names["block"].format(3), path)[-1]
    Sc = _shape(state, names["skip"], path)[0] if names["skip"] in state else 0
    X, R = _split_blocks(_count_blocks(state, names["blocks"]), cfg, path)
    n_src = _shape(state, names["mask"], path)[0] // N
    if kind == "torchaudio":
        # The mask activation is not in the state_dict: torchaudio's ConvTasNet defaults to
        # sigmoid, but conv_tasnet_base() (and so its pretrained bundle) builds relu masks.
        return dict(N=N, L=L, B=B, H=H, Sc=Sc, P=P, X=X, R=R, n_src=n_src, norm_type="gLN",
                    causal=False, mask_nonlinear=cfg.mask_nonlinear, encoder_activation="linear",
                    edge_pad=L // 2, sample_rate=cfg.sample_rate), \
            ("X", "mask_nonlinear", "sample_rate")
    batch_norm = any(k.endswith("running_mean") for k in state)
    norm_type = "BN" if batch_norm else ("cLN" if cfg.norm_type == "cLN" else "gLN")
    assumed = ("X", "mask_nonlinear", "encoder_activation", "sample_rate") + \
        (() if batch_norm else ("norm_type",))
    return dict(N=N, L=L, B=B, H=H, Sc=Sc, P=P, X=X, R=R, n_src=n_src, norm_type=norm_type,
                causal=False, mask_nonlinear=cfg.mask_nonlinear,
                encoder_activation=cfg.encoder_activation, edge_pad=0,
                sample_rate=cfg.sample_rate), assumed


def map_parameters(kind, state, targets, path):
    """{project parameter name: array} from a PyTorch state_dict.

    targets: {name: shape} of the parameters of the network built from the converted settings.
    Every tensor must find its parameter with the same number of elements (torch's [out, in, k]
    convolution weights become [out, in, 1, k]); a mismatch raises UserError naming both.
    """
    rules = _rules(kind)
    params = {}
    for key, value in state.items():
        module, _, leaf = key.rpartition(".")
        if leaf in _IGNORED_LEAVES:
            continue
        prefix = next((re.sub(f"^{pattern}$", target, module) for pattern, target in rules
                       if re.fullmatch(pattern, module)), None)
        candidates = [f"{prefix}.{sub}{name}" for name in _LEAVES.get(leaf, ())
                      for sub in ("", "norm.")] if prefix else []
        found = [name for name in candidates if name in targets]
        if not found:
            raise UserError(f"{path}: tensor '{key}' has no place in this project's ConvTasNet "
                            "(another architecture, or a configuration with other sizes)")
        name, value = found[0], np.asarray(value)
        squeezed = tuple(d for d in value.shape if d != 1)
        if value.size != int(np.prod(targets[name])) or \
                squeezed != tuple(d for d in targets[name] if d != 1):
            raise UserError(f"{path}: tensor '{key}' has shape {tuple(value.shape)} but the model "
                            f"configured from the file needs {tuple(targets[name])} for '{name}'")
        params[name] = value.astype(np.float32).reshape(targets[name])
    return params


def convert(src, dst, cfg):
    """Convert the PyTorch file `src` into checkpoint `dst` and recipe `<dst stem>.yaml`.

    Returns (kind, settings, assumed, recipe_path): the format found, the model settings written,
    the names of those taken from `cfg` because the file does not record them.
    """
    import mindspore as ms
    from src.model_utils.atomic import write_yaml
    from src.model.checkpoint import save_checkpoint
    from src.model.build import build_network
    from src.model_utils.config import Config

    if not dst.endswith(".ckpt"):
        raise UserError(f"dst: expected a file name ending in .ckpt, got {dst!r}")
    recipe = os.path.splitext(dst)[0] + ".yaml"
    existing = [p for p in (dst, recipe) if os.path.exists(p)]
    if existing and not cfg.overwrite:
        raise UserError(f"dst: {' and '.join(existing)}: already there, not replaced (pass "
                        "--overwrite=true to replace, or choose another --dst)")
    kind, state, model_args = detect_format(read_torch_file(src), src)
    settings, assumed = (asteroid_config(model_args, src), ()) if model_args is not None \
        else state_dict_config(kind, state, cfg, src)
    # The plain engine: the parameters are the same in every engine, and it compiles nothing.
    net = build_network(Config({**cfg.to_dict(), **settings}), engine="plain")
    targets = {name: tuple(p.shape) for name, p in net.parameters_and_names()}
    params = map_parameters(kind, state, targets, src)
    for name in targets:
        if name not in params:
            unused_residual = kind == "torchaudio" and name.startswith(
                f"separator.blocks.{settings['X'] * settings['R'] - 1}.res_conv.")
            if not unused_residual:
                raise UserError(f"{src}: no tensor for parameter '{name}' of the configured model")
            params[name] = np.zeros(targets[name], np.float32)
    ms.load_param_into_net(net, {k: ms.Parameter(ms.Tensor(v), name=k) for k, v in params.items()},
                           strict_load=True)
    save_checkpoint(net, dst)
    write_yaml(recipe, {key: settings[key] for key in MODEL_KEYS})
    return kind, settings, assumed, recipe


def run_conversion(cfg, log=print):
    """convert_pytorch.py: convert cfg.src into cfg.dst and its recipe, and say what was assumed.
    Returns the recipe's path."""
    if not cfg.src or not cfg.dst:
        raise UserError("src, dst: expected --src <file.pth|.bin> --dst <file.ckpt>")
    kind, settings, assumed, recipe = convert(cfg.src, cfg.dst, cfg)
    log(f"{cfg.src}: {kind} Conv-TasNet, " + ", ".join(f"{k}={settings[k]}" for k in MODEL_KEYS))
    if assumed:
        log("not recorded in the file, taken from the configuration (pass the model's values "
            "if they differ): " + ", ".join(f"--{k}={settings[k]}" for k in assumed))
    log(f"wrote {cfg.dst} and {recipe}")
    log(f"next: python eval.py --config_path {recipe} --ckpt_file {cfg.dst}")
    return recipe
