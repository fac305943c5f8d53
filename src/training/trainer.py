"""The training loop: epochs of steps, validation, LR plateau schedule, early stop, checkpoints.

`train(cfg)` is what train.py runs: it joins the process group when `cfg.distribute`, builds the
datasets (the training set sharded by rank), the network and the training step, resumes when
asked, and calls `fit`. `fit` takes the network and datasets as arguments so that other data can
be used.

Per epoch: the training batches (logged every log_interval steps; a progress bar when stdout is a
terminal), then the mean SI-SNRi on the validation set, then the schedule (learning rate times
lr_factor after lr_patience epochs without a better SI-SNRi; stop after early_stop_patience), then
rank 0 writes the checkpoints (see src/training/train_state.py) and the curves (src/training/curves.py). A step with
a NaN/inf loss or gradient is skipped and logged; max_nonfinite_steps of them in a row stop the run
with an error and leave the last checkpoint as it was.
"""
import glob
import hashlib
import math
import os
import sys
import time

from src.model.build import build_network, model_kwargs
from src.training.curves import CSV_NAME, JSON_NAME, PNG_NAME, write_curves
from src.data.dataset import read_rows
from src.model_utils.atomic import remove_leftovers, write_yaml
from src.model_utils.errors import UserError
from src.model_utils.progress import is_terminal, progress_bar
from src.evaluation.evaluate import evaluate
from src.deploy.inference import dynamic_model_function
from src.training.train_state import (PREFIX, TrainState, best_path, end_of_epoch, epoch_path,
                                      last_path, load_train_checkpoint, new_running,
                                      prune_epoch_checkpoints, resume_path, save_train_checkpoint,
                                      stops_early)
from src.training.train_step import init_parallel, make_train_step, set_learning_rate

CONFIG_NAME = "config.yaml"


class RunLog:
    """Log lines on stdout (through tqdm when a bar is shown), with the rank in parallel runs."""

    def __init__(self, rank_id=0, rank_size=1):
        self.prefix = f"[rank {rank_id}] " if rank_size > 1 else ""
        self.bar = None
        self.show_bar = rank_id == 0 and is_terminal(sys.stdout)
        self.compiled = False  # the first step of a process includes the graph compilation

    def __call__(self, message):
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {self.prefix}{message}"
        if self.bar is not None:
            self.bar.write(line)
        else:
            print(line, flush=True)

    def open_bar(self, epoch, total, initial):
        if self.show_bar:
            self.bar = progress_bar(total=total, initial=initial, desc=f"epoch {epoch}",
                                    file=sys.stdout)

    def advance(self, loss):
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
            self.bar.update(1)

    def close_bar(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def save_config(cfg, directory):
    """Write the resolved configuration as `config.yaml`, usable as --config_path."""
    values = {k: v for k, v in cfg.to_dict().items() if k != "config_path"}
    write_yaml(os.path.join(directory, CONFIG_NAME), values)


def previous_run_files(directory):
    """The checkpoints and curves a training run left in `directory` (sorted paths)."""
    found = glob.glob(os.path.join(glob.escape(directory), f"{PREFIX}-*.ckpt"))
    curves = [os.path.join(directory, name) for name in (CSV_NAME, JSON_NAME, PNG_NAME)]
    return sorted(found + [path for path in curves if os.path.isfile(path)])


def claim_output_dir(directory, overwrite, is_main, log):
    """Make sure a new run does not mix its files with those of another run in `directory`.

    Without `overwrite` another run's checkpoints or curves there are an error; with it, rank 0
    removes them, so that no old epoch checkpoint sits beside the new ones.
    """
    previous = previous_run_files(directory)
    if not previous:
        return
    if not overwrite:
        raise UserError(f"output_dir: {directory} holds a training run "
                        f"({', '.join(os.path.basename(p) for p in previous[:3])}"
                        f"{', ...' if len(previous) > 3 else ''}); pass --resume=auto to continue "
                        "it, or a new --output_dir (--overwrite=true replaces it)")
    if is_main:
        for old in previous:
            os.remove(old)
        log(f"overwrite: removed the {len(previous)} checkpoints and curves of the previous run "
            f"in {directory}")


def validation_scorer(net, dataset, cfg, progress=False):
    """A function that returns the mean SI-SNRi (dB) of `net` on `dataset`, now.

    The network is wrapped once with a dynamic time axis (one graph for all utterance lengths,
    compiled at the first call, reused every epoch) and run in inference mode; it is put back in
    training mode after.
    """
    model_fn = dynamic_model_function(net)

    def score():
        net.set_train(False)
        try:
            _, summary = evaluate(model_fn, dataset, n_src=cfg.n_src, with_sdr=False,
                                  progress=progress)
        finally:
            net.set_train(True)
        return summary["si_snri"]
    return score


def train(cfg):
    """Train as configured by `cfg` (train.py). Returns the final TrainState."""
    from src.data.dataset import create_eval_dataset, create_train_dataset
    from src.data.librimix import training_split
    rank_id, rank_size = init_parallel(cfg)
    cfg.train_name, note = training_split(cfg)
    if note:
        RunLog(rank_id, rank_size)(note)
    train_set = create_train_dataset(cfg, rank_id, rank_size)
    valid_set, _ = create_eval_dataset(cfg, cfg.valid_name, cfg.cv_maxlen)
    net = build_network(cfg)
    return fit(cfg, net, train_set, valid_set, rank_id, rank_size)


def fit(cfg, net, train_set, valid_set, rank_id=0, rank_size=1):
    """Train `net` on `train_set` (columns mixture, sources, lengths), validating on `valid_set`.

    Only rank 0 writes files (config.yaml, checkpoints, curves) to cfg.output_dir. Returns the
    final TrainState.
    """
    out_dir = os.path.abspath(cfg.output_dir)
    is_main = rank_id == 0
    log = RunLog(rank_id, rank_size)
    path = resume_path(cfg.resume, out_dir)
    if not path:
        if cfg.resume == "auto":
            log(f"nothing to resume in {out_dir}: starting a new run")
        claim_output_dir(out_dir, cfg.overwrite, is_main, log)
    steps_per_epoch = train_set.get_dataset_size()
    if steps_per_epoch < 1:
        raise UserError(f"batch_size: {cfg.batch_size} is more than the training mixtures of one "
                        f"device; the training set gives no batch")
    step_cell = make_train_step(net, cfg)
    validation_si_snri = validation_scorer(net, valid_set, cfg, progress=log.show_bar)
    settings = model_kwargs(cfg)
    if path:
        state = load_train_checkpoint(step_cell, net, path, settings)
        log(f"resumed from {path}: {state.epoch} epochs and {state.epoch_step} steps done, "
            f"{state.step} steps in all, lr {state.lr:.3g}")
    else:
        state = TrainState(lr=cfg.lr)
    set_learning_rate(step_cell.optimizer, state.lr)
    if is_main:
        save_config(cfg, out_dir)
        remove_leftovers(out_dir)
    samples_per_step = cfg.batch_size * rank_size
    log(f"training: {steps_per_epoch} steps per epoch, {cfg.batch_size} mixtures per device x "
        f"{rank_size} device(s), optimizer {cfg.optimizer}, output in {out_dir}")

    def save_last():
        if is_main:
            save_train_checkpoint(step_cell, last_path(out_dir), state, settings)

    batches = None
    while state.epoch < cfg.epochs:
        if stops_early(state, cfg.early_stop_patience):
            log(f"stopped early: no better validation SI-SNRi for {state.since_best} epochs")
            break
        if batches is None:
            batches = resume_iterator(train_set, state, steps_per_epoch, cfg.epochs)
        run_epoch(cfg, step_cell, batches, state, log, steps_per_epoch, samples_per_step,
                  save_last)
        score = validation_si_snri()
        running = state.running
        row = dict(epoch=state.epoch + 1, steps=running["steps"], skipped=running["skipped"],
                   train_loss=running["loss"] / running["steps"] if running["steps"] else math.nan,
                   valid_si_snri=score, lr=state.lr, seconds=round(running["seconds"], 3))
        state.epoch += 1
        state.epoch_step = 0
        state.running = new_running()
        state.history.append(row)
        improved, new_lr = end_of_epoch(state, score, cfg.lr_patience, cfg.lr_factor)
        log(f"epoch {state.epoch} done: train loss {row['train_loss']:.4f}, valid SI-SNRi "
            f"{score:.3f} dB (best {state.best_score:.3f} at epoch {state.best_epoch}), "
            f"{row['steps']} steps, {row['skipped']} skipped, {row['seconds']:.1f} s")
        if new_lr is not None:
            set_learning_rate(step_cell.optimizer, new_lr)
            log(f"no better validation SI-SNRi for {cfg.lr_patience} epochs: lr {row['lr']:.3g} "
                f"-> {new_lr:.3g}")
        if is_main:
            save_last()
            if cfg.keep_checkpoint_max > 0:
                save_train_checkpoint(step_cell, epoch_path(out_dir, state.epoch), state,
                                      settings)
                prune_epoch_checkpoints(out_dir, cfg.keep_checkpoint_max)
            if improved:
                save_train_checkpoint(step_cell, best_path(out_dir), state, settings)
            write_curves(state.history, out_dir)
    # Equal on every rank of a data-parallel run: the ranks' logs can be compared.
    log(f"finished after {state.epoch} epochs; parameters sha1 {parameters_digest(net)}")
    return state


def parameters_digest(net):
    """SHA-1 of the network's parameter values, in name order."""
    digest = hashlib.sha1()
    for param in sorted(net.get_parameters(), key=lambda p: p.name):
        digest.update(param.name.encode())
        digest.update(param.asnumpy().tobytes())
    return digest.hexdigest()


def resume_iterator(dataset, state, steps_per_epoch, epochs):
    """One iterator over all epochs, started where `state` is.

    The pipeline's shuffling and crops depend on the seed and the epoch number only, and
    `set_init_step` makes the pipeline skip the batches already trained on, so a resumed run sees
    the same batches as an uninterrupted one.
    """
    state.epoch_step = min(state.epoch_step, steps_per_epoch - 1)
    start = state.epoch * steps_per_epoch + state.epoch_step
    if start:
        dataset.set_init_step(start)
    return read_rows(dataset, num_epochs=epochs)


def run_epoch(cfg, step_cell, batches, state, log, steps_per_epoch, samples_per_step, save_last):
    """Train on the rest of the current epoch: the batches `batches` yields until the epoch ends."""
    epoch = state.epoch + 1
    log.open_bar(epoch, steps_per_epoch, state.epoch_step)
    nonfinite_in_row = 0
    interval_start, interval_steps = time.perf_counter(), 0
    try:
        for batch in batches:
            started = time.perf_counter()
            loss, finite = step_cell(batch["mixture"], batch["sources"], batch["lengths"])
            loss, finite = float(loss.asnumpy()), bool(finite.asnumpy())
            now = time.perf_counter()
            state.step += 1
            state.epoch_step += 1
            state.running["seconds"] += now - started
            interval_steps += 1
            if not log.compiled:
                log(f"first step of this process (includes graph compilation): "
                    f"{now - started:.1f} s")
                interval_start, interval_steps, log.compiled = now, 0, True
            if finite:
                nonfinite_in_row = 0
                state.running["loss"] += loss
                state.running["steps"] += 1
            else:
                nonfinite_in_row += 1
                state.running["skipped"] += 1
                log(f"epoch {epoch} step {state.epoch_step}: loss {loss} is not finite (or a "
                    f"gradient), update skipped ({nonfinite_in_row} in a row)")
                if 0 < cfg.max_nonfinite_steps <= nonfinite_in_row:
                    raise UserError(
                        f"max_nonfinite_steps: {nonfinite_in_row} non-finite losses in a row at "
                        f"epoch {epoch} step {state.epoch_step}; stopped, the last checkpoint is "
                        f"left as it was (lower --lr or check the data)")
            log.advance(loss)
            if interval_steps and cfg.log_interval > 0 \
                    and state.epoch_step % cfg.log_interval == 0:
                elapsed = now - interval_start
                log(f"epoch {epoch} step {state.epoch_step}/{steps_per_epoch} (total "
                    f"{state.step}) loss {loss:.4f} lr {state.lr:.3g} "
                    f"{1000 * elapsed / interval_steps:.1f} ms/step "
                    f"{samples_per_step * interval_steps / elapsed:.2f} samples/s")
                interval_start, interval_steps = time.perf_counter(), 0
            if cfg.ckpt_interval > 0 and state.epoch_step % cfg.ckpt_interval == 0 \
                    and state.epoch_step < steps_per_epoch:
                save_last()
    finally:
        log.close_bar()
