"""A new training run never mixes with, or silently replaces, another run in its output_dir; the
training split falls back to train-100 when only that one was generated."""
import os

import numpy as np
import pytest
import mindspore as ms
import mindspore.dataset as ds

from src.model.build import build_network
from src.model_utils.config import load_config
from src.model_utils.errors import UserError
from src.training.trainer import fit, train
from helpers import flags

T = 160


def memory_sets(train_rows=8):
    """train_rows // 2 training batches of 2 rows, 2 validation utterances."""
    rng = np.random.default_rng(0)
    sources = rng.standard_normal((8, 2, T)).astype(np.float32)
    columns = {"mixture": sources.sum(axis=1), "sources": sources,
               "lengths": np.full(8, T, np.int32)}
    train = {k: v[:train_rows] for k, v in columns.items()}
    valid = {k: v[:2] for k, v in columns.items()}
    return (ds.NumpySlicesDataset(train, shuffle=False).batch(2, drop_remainder=True),
            ds.NumpySlicesDataset(valid, shuffle=False).batch(1))


def run(out, *extra):
    cfg = load_config(flags(output_dir=out, lr=0.01) + list(extra))
    ms.set_seed(cfg.seed)
    return fit(cfg, build_network(cfg), *memory_sets())


def contents(directory):
    return {name: (directory / name).read_bytes() for name in sorted(os.listdir(directory))}


@pytest.mark.slow
@pytest.mark.slow   # three short trainings of a tiny model
def test_finished_run_refused_resumed_or_replaced_only_when_asked(tmp_path, graph_mode, capsys):
    out = tmp_path / "run"
    run(out, "--epochs=2", "--keep_checkpoint_max=3")
    before = contents(out)
    assert {"conv_tasnet-epoch001.ckpt", "conv_tasnet-epoch002.ckpt"} <= set(before)

    with pytest.raises(UserError) as err:
        run(out, "--epochs=1")
    message = str(err.value)
    assert message.startswith(f"output_dir: {out} holds a training run (conv_tasnet-")
    assert "--resume=auto" in message and "new --output_dir" in message and "\n" not in message
    assert contents(out) == before                            # nothing touched

    capsys.readouterr()
    state = run(out, "--epochs=2", "--resume=auto")          # finished: nothing left to do
    assert state.epoch == 2 and "resumed from" in capsys.readouterr().out

    run(out, "--epochs=1", "--overwrite=true")
    assert "removed the 7 checkpoints and curves of the previous run" in capsys.readouterr().out
    after = sorted(os.listdir(out))
    assert after == ["config.yaml", "conv_tasnet-best.ckpt", "conv_tasnet-epoch001.ckpt",
                     "conv_tasnet-last.ckpt", "curves.csv", "curves.json", "curves.png"]
    assert contents(out)["conv_tasnet-last.ckpt"] != before["conv_tasnet-last.ckpt"]


def test_resume_auto_with_nothing_to_resume_says_so(tmp_path, capsys):
    out = tmp_path / "fresh"
    cfg = load_config(flags(output_dir=out, resume="auto", batch_size=2))
    train_set, valid_set = memory_sets(train_rows=1)          # no full batch: stops after the check
    with pytest.raises(UserError, match="the training set gives no batch"):
        fit(cfg, build_network(cfg), train_set, valid_set)
    assert f"nothing to resume in {out}: starting a new run" in capsys.readouterr().out


def test_only_train_100_generated_preprocessed_and_trained_on(tmp_path, capsys):
    from src.data.preparation import prepare_dataset
    from src.data.librimix import training_split
    from helpers import config, make_tiny_librimix
    in_dir = make_tiny_librimix(tmp_path / "in", sizes={"train-100": 2, "dev": 1},
                                max_seconds=0.5)
    data_dir = tmp_path / "data"
    lines = []
    written = prepare_dataset(config(in_dir=in_dir, out_dir=data_dir, preprocess_workers=1),
                              log=lines.append)
    assert sorted(written) == ["dev", "train-100"]
    assert f"splits found in {in_dir}: train-100, dev; absent: train-360, test " \
           "(--splits chooses them)" in lines
    # Named on the command line, a missing split is still an error.
    with pytest.raises(UserError, match="split 'test' needs"):
        prepare_dataset(config(in_dir=in_dir, out_dir=tmp_path / "other", splits="[dev,test]",
                               preprocess_workers=1), log=lines.append)

    cfg = load_config([f"--data_dir={data_dir}"])
    assert training_split(cfg) == ("train-100", f"train_name: no preprocessed 'train-360' in "
                                   f"{data_dir}: training on 'train-100' (give --train_name to "
                                   "choose)")
    explicit = load_config([f"--data_dir={data_dir}", "--train_name=train-360"])
    assert training_split(explicit) == ("train-360", None)
    assert training_split(load_config([f"--data_dir={tmp_path}"])) == ("train-360", None)
    # train.py's train() takes it: the training set it builds is train-100's (too small here).
    capsys.readouterr()
    with pytest.raises(UserError, match=f"{data_dir}/train-100: 2 usable training mixtures"):
        train(load_config([f"--data_dir={data_dir}", f"--output_dir={tmp_path / 'run'}",
                           "--batch_size=4"]))
    assert "training on 'train-100'" in capsys.readouterr().out
