"""What a training run must remember to resume: counters, schedule, curves; saved in checkpoints.

A training checkpoint holds the network parameters (under the names `load_weights` expects, so
eval.py, export.py and separate.py read it like any other), the optimizer state (moments, step
count, learning rate) and a `train_state` entry: this module's `TrainState` as JSON.

Checkpoint files in `output_dir` (`PREFIX` = conv_tasnet):
    conv_tasnet-last.ckpt        the latest state, also saved within epochs every ckpt_interval
                                 steps; what `--resume=auto` continues from
    conv_tasnet-best.ckpt        the epoch with the best validation SI-SNRi
    conv_tasnet-epochNNN.ckpt    end of epoch NNN, the newest keep_checkpoint_max of them
"""
import dataclasses
import glob
import json
import math
import os
import re

import mindspore as ms

from src.model.checkpoint import load_weights, read_checkpoint, save_checkpoint
from src.model_utils.errors import UserError

PREFIX = "conv_tasnet"
STATE_KEY = "train_state"


def last_path(directory):
    return os.path.join(directory, f"{PREFIX}-last.ckpt")


def best_path(directory):
    return os.path.join(directory, f"{PREFIX}-best.ckpt")


def epoch_path(directory, epoch):
    return os.path.join(directory, f"{PREFIX}-epoch{epoch:03d}.ckpt")


def new_running():
    """The sums of an epoch before its first step."""
    return dict(loss=0.0, steps=0, skipped=0, seconds=0.0)


@dataclasses.dataclass
class TrainState:
    """Counters of a run. `epoch` epochs are complete; `epoch_step` batches of the next are done.

    best_score is the best validation SI-SNRi (dB), reached at best_epoch; since_best counts the
    epochs without improvement (early stop) and since_lr_change those since the last improvement
    or learning-rate change (plateau schedule). `running` sums the loss, applied and skipped steps
    and seconds of the current epoch; `history` holds one curves row per finished epoch.
    """
    lr: float
    epoch: int = 0
    epoch_step: int = 0
    step: int = 0
    best_score: float = -math.inf
    best_epoch: int = 0
    since_best: int = 0
    since_lr_change: int = 0
    running: dict = dataclasses.field(default_factory=new_running)
    history: list = dataclasses.field(default_factory=list)

    def to_json(self):
        values = dataclasses.asdict(self)
        values["best_score"] = None if math.isinf(self.best_score) else self.best_score
        return json.dumps(values)

    @classmethod
    def from_json(cls, text):
        values = json.loads(text)
        if values.get("best_score") is None:
            values["best_score"] = -math.inf
        return cls(**values)


def end_of_epoch(state, score, lr_patience, lr_factor):
    """Update the schedule with the epoch's validation score (higher is better).

    Returns (improved, new_lr or None): the learning rate is multiplied by lr_factor after
    lr_patience epochs in a row without a better score.
    """
    improved = score > state.best_score
    if improved:
        state.best_score, state.best_epoch = score, state.epoch
        state.since_best = state.since_lr_change = 0
    else:
        state.since_best += 1
        state.since_lr_change += 1
    new_lr = None
    if lr_patience > 0 and state.since_lr_change >= lr_patience:
        new_lr = state.lr * lr_factor
        state.lr = new_lr
        state.since_lr_change = 0
    return improved, new_lr


def stops_early(state, stop_patience):
    """Whether the run stops: stop_patience epochs in a row without a better validation score
    (0: never). Checked before each epoch, so a resumed run that had met it stops too."""
    return stop_patience > 0 and state.since_best >= stop_patience


def save_train_checkpoint(step_cell, path, state, settings=None):
    """Network, optimizer and `state` of a training cell (`make_train_step`), written atomically;
    `settings` (the ConvTasNet keywords) are recorded for the loaders' checks."""
    save_checkpoint(step_cell, path, extra={STATE_KEY: state.to_json()}, settings=settings)


def resume_path(resume, directory):
    """The checkpoint named by cfg.resume: '' none, 'auto' the last one in `directory` if any."""
    if not resume:
        return None
    if resume == "auto":
        path = last_path(directory)
        return path if os.path.isfile(path) else None
    if not os.path.isfile(resume):
        raise UserError(f"resume: checkpoint {resume} not found (give a path, 'auto' or '')")
    return resume


def load_train_checkpoint(step_cell, net, path, settings=None):
    """Restore network and optimizer of `step_cell` from `path`; returns its TrainState.

    A checkpoint of another model (`load_weights`: a parameter missing, of another shape or not
    used by `net`, a recorded setting other than `settings`) raises UserError naming it.
    """
    params = read_checkpoint(path)
    load_weights(net, path, params, settings)
    if STATE_KEY not in params:
        raise UserError(f"{path}: no training state in this checkpoint (it holds weights only); "
                        "resume needs a checkpoint written by train.py")
    optimizer = step_cell.optimizer
    own = {id(p) for p in net.get_parameters()}
    for param in optimizer.get_parameters():
        if id(param) in own:
            continue
        saved = params.get(param.name)
        if saved is None or tuple(saved.shape) != tuple(param.shape):
            found = "missing" if saved is None else f"of shape {tuple(saved.shape)}"
            raise UserError(f"{path}: optimizer state '{param.name}' {found}, expected shape "
                            f"{tuple(param.shape)} (was it trained with another --optimizer?)")
        # set_data, not load_param_into_net: that one matches moment1.<name> against <name> too
        param.set_data(ms.Tensor(saved.asnumpy(), param.dtype))
    return TrainState.from_json(str(params[STATE_KEY]))


def prune_epoch_checkpoints(directory, keep):
    """Delete all but the `keep` newest epoch checkpoints of this run."""
    pattern = re.compile(re.escape(PREFIX) + r"-epoch(\d+)\.ckpt$")
    found = sorted((int(m.group(1)), p) for p in glob.glob(os.path.join(directory, "*.ckpt"))
                   if (m := pattern.search(os.path.basename(p))))
    for _, path in found[:max(0, len(found) - keep)]:
        os.remove(path)
