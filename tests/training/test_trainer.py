"""The training loop: schedule, outputs, non-finite steps, refused resumes, resume after SIGKILL."""
import csv
import io
import json
import math
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import mindspore as ms
import mindspore.dataset as ds
from matplotlib.image import imread

from src.model.checkpoint import load_weights, save_checkpoint
from src.model.build import build_network
from src.model_utils.errors import UserError
from src.model_utils.config import load_config
from src.training.train_state import (STATE_KEY, TrainState, end_of_epoch, last_path,
                             save_train_checkpoint, stops_early)
from src.training.train_step import make_train_step
from src.training.trainer import RunLog, fit, train
from helpers import ROOT, assert_same_arrays, checkpoint_arrays, flags, make_data_dir

T = 160  # samples per training row of the in-memory sets


def test_plateau_halves_lr_and_early_stop_counts_epochs_without_improvement():
    state = TrainState(lr=1e-3)
    events = []
    for score in [1.0, 2.0, 1.5, 1.9, 2.0, 1.0, 2.5, 2.4, 2.4, 2.4, 2.4, 2.4]:
        state.epoch += 1
        improved, new_lr = end_of_epoch(state, score, lr_patience=3, lr_factor=0.5)
        stop = stops_early(state, stop_patience=5)
        events.append((improved, new_lr, stop))
    improved = [e[0] for e in events]
    assert improved == [True, True] + [False] * 4 + [True] + [False] * 5
    # Three epochs without a better score (epochs 3-5): halved at epoch 5, not again at epoch 6.
    assert [i + 1 for i, e in enumerate(events) if e[1] is not None] == [5, 10]
    assert events[4][1] == pytest.approx(5e-4) and events[9][1] == pytest.approx(2.5e-4)
    # Four epochs without improvement (3-6) do not stop the run; five (8-12) do.
    assert [i + 1 for i, e in enumerate(events) if e[2]] == [12]
    assert (state.best_score, state.best_epoch) == (2.5, 7)
    assert TrainState.from_json(state.to_json()) == state
    fresh = TrainState(lr=1.0)
    assert TrainState.from_json(fresh.to_json()).best_score == -math.inf


def memory_sets(nan_at=()):
    """4 training batches of 2 rows per epoch, and 2 validation utterances.

    nan_at: (epoch, batch) pairs (0-based) whose mixtures are NaN; batch None: every batch.
    """
    rng = np.random.default_rng(0)
    sources = rng.standard_normal((8, 2, T)).astype(np.float32)
    columns = {"mixture": sources.sum(axis=1), "sources": sources,
               "lengths": np.full(8, T, np.int32)}

    def poison(mixture, sources, lengths, info):
        epoch, index = info.get_epoch_num(), info.get_batch_num() % 4
        if (epoch, index) in nan_at or (epoch, None) in nan_at:
            mixture = [np.full_like(m, np.nan) for m in mixture]
        return mixture, sources, lengths

    train_set = ds.NumpySlicesDataset(columns, shuffle=False).batch(
        2, per_batch_map=poison, input_columns=["mixture", "sources", "lengths"])
    valid = {k: v[:2] for k, v in columns.items()}
    return train_set, ds.NumpySlicesDataset(valid, shuffle=False).batch(1)


@pytest.mark.slow
def test_fit_outputs_skips_a_nan_batch_and_stops_on_a_nan_streak(tmp_path, graph_mode, capsys):
    out = tmp_path / "run"
    cfg = load_config(flags(output_dir=out, epochs=3, keep_checkpoint_max=1,
                            max_nonfinite_steps=2, lr=0.01))
    ms.set_seed(cfg.seed)
    net = build_network(cfg)
    train_set, valid_set = memory_sets(nan_at={(0, 1), (2, None)})
    with pytest.raises(UserError, match=r"max_nonfinite_steps: 2 non-finite losses in a row at "
                                        r"epoch 3 step 2; stopped"):
        fit(cfg, net, train_set, valid_set)
    log = capsys.readouterr().out
    assert "epoch 1 step 2: loss nan is not finite" in log
    assert "epoch 1 step 4/4 (total 4) loss" in log and "ms/step" in log and "samples/s" in log
    assert "epoch 2 done: train loss" in log and "valid SI-SNRi" in log

    names = sorted(os.listdir(out))
    assert names == ["config.yaml", "conv_tasnet-best.ckpt", "conv_tasnet-epoch002.ckpt",
                     "conv_tasnet-last.ckpt", "curves.csv", "curves.json", "curves.png"]
    # The last checkpoint is the end of epoch 2, untouched by the NaN streak of epoch 3.
    last = ms.load_checkpoint(str(out / "conv_tasnet-last.ckpt"))
    state = TrainState.from_json(str(last[STATE_KEY]))
    assert (state.epoch, state.epoch_step, state.step) == (2, 0, 8)
    assert_same_arrays(checkpoint_arrays(str(out / "conv_tasnet-last.ckpt")),
                       checkpoint_arrays(str(out / "conv_tasnet-epoch002.ckpt")))
    assert all(np.isfinite(v).all() for v in checkpoint_arrays(str(out / "conv_tasnet-last.ckpt"))
               .values())

    with open(out / "curves.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [(r["epoch"], r["steps"], r["skipped"]) for r in rows] == [("1", "3", "1"),
                                                                    ("2", "4", "0")]
    assert json.loads((out / "curves.json").read_text())[1]["valid_si_snri"] == \
        pytest.approx(float(rows[1]["valid_si_snri"]))
    assert state.history[1]["train_loss"] == pytest.approx(float(rows[1]["train_loss"]))
    assert imread(str(out / "curves.png")).shape[2] in (3, 4)

    # config.yaml is a complete recipe: loading it gives the run's configuration back.
    again = load_config(["--config_path", str(out / "config.yaml")]).to_dict()
    expected = cfg.to_dict()
    assert {k: v for k, v in again.items() if k != "config_path"} == \
        {k: v for k, v in expected.items() if k != "config_path"}
    # The best checkpoint is an ordinary checkpoint for evaluation.
    load_weights(build_network(cfg), str(out / "conv_tasnet-best.ckpt"))


def test_resume_refuses_checkpoints_it_cannot_continue(tmp_path):
    cfg = load_config(flags(output_dir=tmp_path))
    net = build_network(cfg)
    adam = str(tmp_path / "adam.ckpt")
    save_train_checkpoint(make_train_step(net, cfg), adam, TrainState(lr=1e-3))
    weights_only = str(tmp_path / "weights.ckpt")
    save_checkpoint(net, weights_only)
    train_set, valid_set = memory_sets()

    def resume(path, *extra):
        other = load_config(flags(output_dir=tmp_path, resume=path) + list(extra))
        fit(other, build_network(other), train_set, valid_set)

    with pytest.raises(UserError, match=r"parameter 'encoder.weight' has shape \(8, [\d, ]+\) in "
                                        r"the checkpoint but \(16, [\d, ]+\) in the model"):
        resume(adam, "--N=16")
    with pytest.raises(UserError, match="optimizer state '.*' missing.*--optimizer"):
        resume(adam, "--optimizer=sgd")
    with pytest.raises(UserError, match="no training state in this checkpoint"):
        resume(weights_only)
    with pytest.raises(UserError, match="resume: checkpoint .*nothing.ckpt not found"):
        resume(str(tmp_path / "nothing.ckpt"))


def read_state(path):
    try:
        return TrainState.from_json(str(ms.load_checkpoint(path)[STATE_KEY]))
    except (ValueError, RuntimeError, OSError, KeyError):
        return None


@pytest.mark.slow
def test_run_killed_with_sigkill_resumes_where_its_checkpoint_left_off(tmp_path, graph_mode,
                                                                       capsys):
    data_dir = make_data_dir(str(tmp_path))
    common = dict(data_dir=data_dir, epochs=2, ckpt_interval=1)
    killed_dir, reference_dir = tmp_path / "killed", tmp_path / "reference"
    killed_dir.mkdir()
    env = {**os.environ, "PYTHONPATH": ROOT, "GLOG_v": "3"}
    with open(killed_dir / "train.log", "w", encoding="utf-8") as log:
        proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py")]
                                + flags(output_dir=killed_dir, **common),
                                stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            state = read_state(last_path(str(killed_dir)))
            if state is not None and state.step >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, (killed_dir / "train.log").read_text()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    saved = read_state(last_path(str(killed_dir)))
    assert saved is not None and saved.epoch < 2
    # What a kill during a checkpoint write leaves (atomic_output's name, MindSpore's own .tmp),
    # whether or not this kill happened to land there.
    (killed_dir / ".tmp-killedwrite.ckpt").write_bytes(b"")
    (killed_dir / ".tmp-killedwrite.tmp").write_bytes(b"partial")

    cfg = load_config(flags(output_dir=killed_dir, resume="auto", **common))
    ms.set_seed(cfg.seed)  # what train.py's init_device does; the device is set already
    train(cfg)
    log = capsys.readouterr().out
    assert (f"resumed from {last_path(str(killed_dir))}: {saved.epoch} epochs and "
            f"{saved.epoch_step} steps done, {saved.step} steps in all, lr 0.001") in log
    assert not [n for n in os.listdir(killed_dir) if n.startswith(".tmp-")]

    reference = load_config(flags(output_dir=reference_dir, **common))
    ms.set_seed(reference.seed)
    train(reference)
    # Weights, optimizer moments, step counts: the resumed run ends where the uninterrupted one
    # does, so it restored them, the learning rate and the position in the data.
    assert_same_arrays(checkpoint_arrays(last_path(str(killed_dir))),
                       checkpoint_arrays(last_path(str(reference_dir))), atol=1e-6)
    resumed = read_state(last_path(str(killed_dir)))
    uninterrupted = read_state(last_path(str(reference_dir)))
    assert resumed.step == uninterrupted.step == 8
    for a, b in zip(resumed.history, uninterrupted.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-5)
        assert a["valid_si_snri"] == pytest.approx(b["valid_si_snri"], abs=1e-4)


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_only_on_a_terminal_with_log_lines_above_it(monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    log = RunLog()
    log.open_bar(epoch=3, total=5, initial=2)
    log.advance(-7.25)
    log("a log line")
    log.close_bar()
    text = terminal.getvalue()
    assert "epoch 3" in text and "3/5" in text and "loss=-7.250" in text
    assert re.search(r"\d\d:\d\d:\d\d a log line\n", text)

    piped = io.StringIO()
    monkeypatch.setattr(sys, "stdout", piped)
    log = RunLog()
    log.open_bar(epoch=1, total=5, initial=0)
    log.advance(1.0)
    log("another line")
    log.close_bar()
    assert re.fullmatch(r"\S+ \S+ another line\n", piped.getvalue())
