"""Checkpoints of another model configuration are refused by every loader, in both directions."""
import os

import numpy as np
import pytest
import yaml
import mindspore as ms
import mindspore.dataset as ds

from src.model.checkpoint import load_weights, save_checkpoint
from src.model.build import build_network, model_kwargs
from src.model.conv_tasnet import ConvTasNet
from src.model_utils.config import load_config
from src.model_utils.errors import UserError
from src.training.train_state import TrainState, save_train_checkpoint
from src.training.train_step import make_train_step
from src.training.trainer import fit
from helpers import run_script, TINY_MODEL, flags

# (what the checkpoint was trained with, what the configuration says, what the message names)
MISMATCHES = {
    "larger X": (dict(X=2), dict(X=1), ["X: checkpoint has 2 blocks per repeat, config 1",
                                        "entries the network does not use: "
                                        "separator.blocks.1."]),
    "smaller X": (dict(X=1), dict(X=2), ["X: checkpoint has 1 blocks per repeat, config 2",
                                         "parameters missing from the checkpoint: "
                                         "separator.blocks.1."]),
    "skip convs": (dict(Sc=4), dict(Sc=0), ["Sc: checkpoint has skip convolutions (Sc=4), "
                                            "config Sc=0", "does not use: separator.blocks.0."
                                            "skip_conv.bias"]),
    "no skip convs": (dict(Sc=0), dict(Sc=4), ["Sc: checkpoint has no skip convolutions (Sc=0), "
                                               "config Sc=4", "missing from the checkpoint: "
                                               "separator.blocks.0.skip_conv."]),
}


def make_run(folder, **model):
    """A training checkpoint as train.py writes it, and the run's config.yaml; returns folder."""
    cfg = load_config(flags(**model))
    net = build_network(cfg)
    save_train_checkpoint(make_train_step(net, cfg), str(folder / "conv_tasnet-last.ckpt"),
                          TrainState(lr=1e-3), model_kwargs(cfg))
    with open(folder / "config.yaml", "w", encoding="utf-8") as f:
        yaml.safe_dump({**TINY_MODEL, "sample_rate": 8000, **model}, f)
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{case: run folder} for each trained configuration of MISMATCHES."""
    return {case: make_run(tmp_path_factory.mktemp(case.replace(" ", "_")), **trained)
            for case, (trained, _, _) in MISMATCHES.items()}



def assert_one_line_naming(err, expected):
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "made for another model configuration" in err, err
    for phrase in expected:
        assert phrase in err, err


@pytest.mark.parametrize("case", MISMATCHES)
def test_eval_refuses(runs, case, tmp_path, monkeypatch, capsys):
    run = runs[case]
    _, config_flags, expected = MISMATCHES[case]
    status = run_script(monkeypatch, "eval", f"--config_path={run}/config.yaml",
                        f"--ckpt_file={run}/conv_tasnet-last.ckpt", f"--data_dir={tmp_path}",
                        f"--output_dir={tmp_path}/out",
                        *[f"--{k}={v}" for k, v in config_flags.items()])
    assert status == 2
    assert_one_line_naming(capsys.readouterr().err, expected)
    assert not os.path.exists(tmp_path / "out")


@pytest.mark.parametrize("case", MISMATCHES)
def test_export_refuses_and_checks_nothing(runs, case, tmp_path, monkeypatch, capsys):
    run = runs[case]
    _, config_flags, expected = MISMATCHES[case]
    status = run_script(monkeypatch, "export", f"--config_path={run}/config.yaml",
                        f"--ckpt_file={run}/conv_tasnet-last.ckpt", f"--file_name={tmp_path}/m",
                        *[f"--{k}={v}" for k, v in config_flags.items()])
    out, err = capsys.readouterr()
    assert status == 2 and "checked" not in out and "exported" not in out
    assert_one_line_naming(err, expected)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("case", MISMATCHES)
def test_separate_refuses(runs, case, tmp_path, monkeypatch, capsys):
    run = runs[case]
    _, config_flags, expected = MISMATCHES[case]
    wav = tmp_path / "talk.wav"
    import soundfile as sf
    sf.write(wav, np.zeros(800, np.float32), 8000)
    status = run_script(monkeypatch, "separate", f"--config_path={run}/config.yaml",
                        f"--model_path={run}/conv_tasnet-last.ckpt", f"--input={wav}",
                        f"--output_dir={tmp_path}/out",
                        *[f"--{k}={v}" for k, v in config_flags.items()])
    assert status == 2
    assert_one_line_naming(capsys.readouterr().err, expected)
    assert not os.path.exists(tmp_path / "out") or os.listdir(tmp_path / "out") == []


def tiny_sets():
    """One training batch and one validation utterance of 160 samples."""
    sources = np.random.default_rng(0).standard_normal((2, 2, 160)).astype(np.float32)
    columns = {"mixture": sources.sum(axis=1), "sources": sources,
               "lengths": np.full(2, 160, np.int32)}
    valid = {k: v[:1] for k, v in columns.items()}
    return (ds.NumpySlicesDataset(columns, shuffle=False).batch(2),
            ds.NumpySlicesDataset(valid, shuffle=False).batch(1))


@pytest.mark.parametrize("case", MISMATCHES)
def test_resume_refuses(runs, case, tmp_path):
    run = runs[case]
    _, config_flags, expected = MISMATCHES[case]
    cfg = load_config(flags(output_dir=tmp_path, resume=f"{run}/conv_tasnet-last.ckpt",
                            **config_flags))
    with pytest.raises(UserError) as refused:
        fit(cfg, build_network(cfg), *tiny_sets())
    assert_one_line_naming(f"error: {refused.value}\n", expected)


@pytest.mark.parametrize("trained,configured,expected", [
    (dict(X=2), dict(X=1), "X, R: checkpoint has 2 blocks in all, config X*R = 1*1 = 1"),
    (dict(X=1), dict(X=2), "X, R: checkpoint has 1 blocks in all, config X*R = 2*1 = 2"),
    (dict(Sc=4), dict(Sc=0), "Sc: checkpoint has skip convolutions (Sc=4), config Sc=0"),
    (dict(Sc=0), dict(Sc=4), "Sc: checkpoint has no skip convolutions (Sc=0), config Sc=4"),
    (dict(H=16), dict(H=8), "H: checkpoint has 16, config 8"),
])
def test_weights_only_checkpoint_names_settings_from_shapes(tmp_path, trained, configured,
                                                           expected):
    """A checkpoint that recorded no settings (saved by hand or by older versions)."""
    path = str(tmp_path / "w.ckpt")
    ms.save_checkpoint(ConvTasNet(**{**TINY_MODEL, **trained}), path)
    settings = {**model_kwargs(load_config(flags())), **configured}
    with pytest.raises(UserError, match="made for another model configuration") as refused:
        load_weights(ConvTasNet(**settings), path, settings=settings)
    assert expected in str(refused.value)


def test_recorded_settings_tell_what_shapes_cannot(tmp_path):
    """X=2, R=1 and X=1, R=2 have the same parameters but other dilations."""
    settings = model_kwargs(load_config(flags(X=2, R=1)))
    path = str(tmp_path / "w.ckpt")
    save_checkpoint(ConvTasNet(**settings), path, settings=settings)
    other = {**settings, "X": 1, "R": 2}
    with pytest.raises(UserError, match="X: checkpoint has 2 blocks per repeat, config 1; "
                                        "R: checkpoint has 1 repeats, config 2"):
        load_weights(ConvTasNet(**other), path, settings=other)


def test_same_model_loads_with_its_training_state(tmp_path):
    """Optimizer moments (Adam and SGD), counters and recorded settings are not refused."""
    for optimizer in ("adam", "sgd"):
        cfg = load_config(flags(optimizer=optimizer))
        settings = model_kwargs(cfg)
        trained = ConvTasNet(**settings)
        path = str(tmp_path / f"{optimizer}.ckpt")
        save_train_checkpoint(make_train_step(trained, cfg), path, TrainState(lr=1e-3), settings)
        net = load_weights(ConvTasNet(**settings), path, settings=settings)
        for (name, loaded), (_, saved) in zip(net.parameters_and_names(),
                                              trained.parameters_and_names()):
            np.testing.assert_array_equal(loaded.asnumpy(), saved.asnumpy(), err_msg=name)
