"""Loading network weights from a checkpoint, with errors that name what does not match."""
import json
import os
import re

import mindspore as ms

from src.model_utils.atomic import atomic_output
from src.model.build import build_network, model_kwargs
from src.model_utils.errors import UserError


def read_checkpoint(path):
    """Parameters of a MindSpore checkpoint file as {name: Parameter}; UserError if unreadable."""
    if not os.path.isfile(path):
        raise UserError(f"{path}: checkpoint not found")
    try:
        return ms.load_checkpoint(path)
    except (ValueError, RuntimeError, OSError) as err:
        raise UserError(f"{path}: not a readable MindSpore checkpoint "
                        f"({str(err).splitlines()[0][:200]})") from None


# Entries the project writes beside the network parameters: the optimizer state of MindSpore's
# nn.Adam (moment1./moment2., beta powers) and nn.SGD (accum./stat., momentum), the step count and
# learning rate of both, the run's counters (src/training/train_state.py) and the model settings.
MODEL_CONFIG_KEY = "model_config"
TRAINING_ENTRIES = {"global_step", "learning_rate", "beta1_power", "beta2_power", "momentum",
                    "train_state", MODEL_CONFIG_KEY}
OPTIMIZER_PREFIXES = ("moment1.", "moment2.", "accum.", "stat.")
SHOWN_ENTRIES = 3


def unused_entries(params, net):
    """Names of the entries of `params` that are neither parameters of `net` nor training state."""
    own = {name for name, _ in net.parameters_and_names()}
    return sorted(name for name in params if name not in own and name not in TRAINING_ENTRIES
                  and not name.startswith(OPTIMIZER_PREFIXES))


def recorded_settings(params):
    """The model settings a checkpoint recorded when it was saved ({} for older checkpoints)."""
    if MODEL_CONFIG_KEY not in params:
        return {}
    try:
        return json.loads(str(params[MODEL_CONFIG_KEY]))
    except ValueError:
        return {}


def _shape(params, name):
    return tuple(params[name].shape) if name in params else None


def settings_from_shapes(params):
    """The sizes a ConvTasNet checkpoint's parameter shapes tell ({key: value}).

    N and L from the encoder [N, 1, (1,) L], B from the bottleneck [B, N, ...], H and P from the
    first block (1x1 conv [H, B, ...], depthwise conv [H, 1, (1,) P]), Sc from the skip
    convolutions (0 when there are none), C from the mask convolution [C*N, ...], and the number of
    blocks X*R (the blocks are numbered through all repeats).
    """
    found = {}
    encoder = _shape(params, "encoder.weight")
    if encoder:
        found["N"], found["L"] = encoder[0], encoder[-1]
    bottleneck = _shape(params, "separator.bottleneck.weight")
    if bottleneck:
        found["B"] = bottleneck[0]
    conv1x1 = _shape(params, "separator.blocks.0.conv1x1.weight")
    if conv1x1:
        found["H"] = conv1x1[0]
    dconv = _shape(params, "separator.blocks.0.dconv.weight")
    if dconv:
        found["P"] = dconv[-1]
    blocks = {int(m.group(1)) for name in params
              if (m := re.match(r"separator\.blocks\.(\d+)\.", name))}
    if blocks:
        found["blocks"] = len(blocks)
        skip = _shape(params, "separator.blocks.0.skip_conv.weight")
        found["Sc"] = skip[0] if skip else 0
    mask = _shape(params, "separator.mask_conv.weight")
    if mask and encoder:
        found["C"] = mask[0] // encoder[0]
    return found


def differing_settings(params, settings):
    """Phrases naming the model settings in which checkpoint `params` and `settings` (the
    ConvTasNet keywords the configuration gives) differ, e.g. "X: checkpoint has 2 blocks per
    repeat, config 1"."""
    recorded = recorded_settings(params)
    inferred = settings_from_shapes(params)
    phrases = []
    for key, value in settings.items():
        saved = recorded.get(key, inferred.get(key))
        if saved is None or saved == value:
            continue
        if key == "Sc" and (saved == 0) != (value == 0):
            phrases.append(f"Sc: checkpoint has skip convolutions (Sc={saved}), config Sc=0"
                           if value == 0 else
                           f"Sc: checkpoint has no skip convolutions (Sc=0), config Sc={value}")
        elif key == "X":
            phrases.append(f"X: checkpoint has {saved} blocks per repeat, config {value}")
        elif key == "R":
            phrases.append(f"R: checkpoint has {saved} repeats, config {value}")
        else:
            phrases.append(f"{key}: checkpoint has {saved}, config {value}")
    if "blocks" in inferred and not ({"X", "R"} & recorded.keys()) \
            and inferred["blocks"] != settings["X"] * settings["R"]:
        phrases.append(f"X, R: checkpoint has {inferred['blocks']} blocks in all, config "
                       f"X*R = {settings['X']}*{settings['R']} = {settings['X'] * settings['R']}")
    return phrases


def _names(names):
    shown = ", ".join(names[:SHOWN_ENTRIES])
    return shown + (f" and {len(names) - SHOWN_ENTRIES} more" if len(names) > SHOWN_ENTRIES else "")


def check_compatible(net, params, path, settings=None):
    """Raise UserError unless checkpoint `params` holds exactly the parameters of `net`.

    Refused, in one line: a parameter of `net` the checkpoint lacks or holds in another shape, an
    entry of the checkpoint that `net` does not use (training state aside), and, when `settings`
    (the ConvTasNet keywords of the configuration) are given, a setting the checkpoint recorded
    with another value. The message names the entries and the settings that differ.
    """
    problems = differing_settings(params, settings) if settings else []
    missing, reshaped = [], []
    for name, param in net.parameters_and_names():
        if name not in params:
            missing.append(name)
        elif tuple(params[name].shape) != tuple(param.shape):
            reshaped.append(f"'{name}' has shape {tuple(params[name].shape)} in the checkpoint but "
                            f"{tuple(param.shape)} in the model built from the configuration")
    unused = unused_entries(params, net)
    if not (problems or missing or reshaped or unused):
        return
    details = list(problems)
    if reshaped:
        details.append("parameter " + reshaped[0] +
                       (f" (and {len(reshaped) - 1} more)" if len(reshaped) > 1 else ""))
    if missing:
        details.append(f"parameters missing from the checkpoint: {_names(missing)}")
    if unused:
        details.append(f"checkpoint entries the network does not use: {_names(unused)}")
    raise UserError(f"{path}: made for another model configuration: {'; '.join(details)} "
                    "(pass the config the checkpoint was trained with)")


def load_weights(net, path, params=None, settings=None):
    """Load the network parameters from checkpoint `path` into `net`.

    The checkpoint must hold exactly the parameters of `net`, in their shapes, besides the
    training state train.py writes (optimizer moments, counters); `settings` (the ConvTasNet
    keywords of the configuration) are compared with the settings the checkpoint recorded. Anything
    else raises UserError naming the entries and settings (`check_compatible`).
    """
    params = read_checkpoint(path) if params is None else params
    check_compatible(net, params, path, settings)
    ms.load_param_into_net(net, {name: params[name] for name, _ in net.parameters_and_names()},
                           strict_load=True)
    return net


def save_checkpoint(cell, path, extra=None, settings=None):
    """Save every parameter of `cell` and the entries of `extra` ({name: int, float or str}).

    `settings` (ConvTasNet keywords) are recorded as the `model_config` entry, so that loaders name
    the settings a configuration gets wrong, also those the shapes do not tell (X against R).

    Written to a temporary file and renamed, so `path` always holds a complete checkpoint.
    """
    with atomic_output(path) as tmp:
        if settings:
            extra = {**(extra or {}), MODEL_CONFIG_KEY: json.dumps(settings)}
        ms.save_checkpoint(cell, tmp, append_dict=extra)


def load_network(cfg, path=None, engine=None):
    """The network of `cfg` (src.model.build.build_network, `engine`) with the weights of `path`
    (default `cfg.ckpt_file`), in eval mode."""
    path = path or cfg.ckpt_file
    if not path:
        raise UserError("ckpt_file: expected the path of a checkpoint (--ckpt_file=...)")
    net = build_network(cfg, engine)
    load_weights(net, path, settings=model_kwargs(cfg))
    net.set_train(False)
    return net
