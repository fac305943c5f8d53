"""Loading network weights from a checkpoint, with errors that name what does not match."""
import os

import mindspore as ms

from src.model_utils.atomic import atomic_output
from src.model.build import build_network
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


def load_weights(net, path, params=None):
    """Load the network parameters from checkpoint `path` into `net`.

    Other entries of the file (optimizer moments, epoch counters) are ignored. A missing parameter
    or one of another shape raises UserError naming it and both shapes.
    """
    params = read_checkpoint(path) if params is None else params
    for name, param in net.parameters_and_names():
        if name not in params:
            raise UserError(f"{path}: parameter '{name}' missing; the checkpoint was made for "
                            "another model configuration (pass its --config_path)")
        if tuple(params[name].shape) != tuple(param.shape):
            raise UserError(f"{path}: parameter '{name}' has shape {tuple(params[name].shape)} "
                            f"in the checkpoint but {tuple(param.shape)} in the model built from "
                            "the configuration (pass the config the checkpoint was trained with)")
    ms.load_param_into_net(net, {name: params[name] for name, _ in net.parameters_and_names()},
                           strict_load=True)
    return net


def save_checkpoint(cell, path, extra=None):
    """Save every parameter of `cell` and the entries of `extra` ({name: int, float or str}).

    Written to a temporary file and renamed, so `path` always holds a complete checkpoint.
    """
    with atomic_output(path) as tmp:
        ms.save_checkpoint(cell, tmp, append_dict=extra)


def load_network(cfg, path=None, engine=None):
    """The network of `cfg` (src.model.build.build_network, `engine`) with the weights of `path`
    (default `cfg.ckpt_file`), in eval mode."""
    path = path or cfg.ckpt_file
    if not path:
        raise UserError("ckpt_file: expected the path of a checkpoint (--ckpt_file=...)")
    net = build_network(cfg, engine)
    load_weights(net, path)
    net.set_train(False)
    return net
