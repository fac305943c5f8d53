import importlib
import os
import sys

import numpy as np
import pytest
import yaml
import mindspore as ms

from src.model.conv_tasnet import ConvTasNet
from src.model_utils.errors import UserError, run_main
from src.model_utils.config import DEFAULT_CONFIG
from src.deploy.export import check_mindir, export_network, load_mindir, mindir_input_shape
from helpers import TINY_NET

TINY = TINY_NET


def tiny_net(seed=0, **kwargs):
    ms.set_seed(seed)
    net = ConvTasNet(**{**TINY, **kwargs})
    net.set_train(False)
    return net


@pytest.fixture(autouse=True)
def graph_mode():
    ms.set_context(mode=ms.GRAPH_MODE)


@pytest.mark.parametrize("kwargs", [{}, {"norm_type": "cLN", "causal": True, "edge_pad": 2}])
def test_dynamic_mindir_runs_any_length_like_the_cell(tmp_path, kwargs):
    net = tiny_net(**kwargs)
    path = export_network(net, str(tmp_path / "model"), "MINDIR", input_length=0)
    assert path == str(tmp_path / "model.mindir")
    assert os.listdir(tmp_path) == ["model.mindir"]           # no temporary left behind
    assert mindir_input_shape(path) == [1, -1]
    graph = load_mindir(path)
    rng = np.random.default_rng(0)
    for length in (3, 401):   # shorter than L (one frame), and a length that needs end padding
        x = ms.Tensor(rng.standard_normal((1, length)).astype(np.float32))
        got = graph(x).asnumpy()
        assert got.shape == (1, 2, length)
        ms.set_context(mode=ms.PYNATIVE_MODE)  # the cell's reference, without compiling it
        expected = net(x).asnumpy()
        ms.set_context(mode=ms.GRAPH_MODE)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_fixed_length_mindir_and_the_check_sees_another_network(tmp_path):
    net = tiny_net()
    path = export_network(net, str(tmp_path / "fixed.mindir"), "MINDIR", input_length=256)
    assert path == str(tmp_path / "fixed.mindir")
    assert mindir_input_shape(path) == [1, 256]
    assert check_mindir(net, path, [256]) < 1e-6
    assert check_mindir(tiny_net(seed=7), path, [256]) > 1e-3


def test_unreadable_mindir(tmp_path):
    bad = tmp_path / "bad.mindir"
    bad.write_bytes(b"\x94not a model")
    with pytest.raises(UserError, match="bad.mindir: not a readable MINDIR"):
        mindir_input_shape(str(bad))
    with pytest.raises(UserError, match="missing.mindir: MINDIR file not found"):
        mindir_input_shape(str(tmp_path / "missing.mindir"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny checkpoint and the config it was made with, as training writes them."""
    folder = tmp_path_factory.mktemp("trained")
    ms.save_checkpoint(tiny_net(seed=3), str(folder / "tiny.ckpt"))
    with open(folder / "config.yaml", "w") as f:
        yaml.safe_dump(TINY, f)
    return folder


def run_export(monkeypatch, *flags):
    """export.py's main in this process; returns the exit status (0 when it returns).

    The device of this test process is set already (MindSpore allows it once per process), so the
    script's device set-up is skipped (tests/deploy/test_infer_310.py runs export.py in a process of its own).
    """
    monkeypatch.setattr(sys, "argv", ["export.py", *flags])
    monkeypatch.setattr("src.model_utils.device.init_device", lambda cfg: None)
    try:
        run_main(importlib.import_module("export").main)
    except SystemExit as exit_:
        return exit_.code
    return 0


@pytest.mark.slow
def test_export_cli_writes_and_checks(trained, tmp_path, monkeypatch, capsys):
    status = run_export(monkeypatch, f"--config_path={trained}/config.yaml",
                        f"--ckpt_file={trained}/tiny.ckpt", f"--file_name={tmp_path}/out/tasnet")
    out = capsys.readouterr().out
    assert status == 0
    assert f"exported {tmp_path}/out/tasnet.mindir (MINDIR, input [1, T] for any T)" in out
    assert "checked: the reloaded MINDIR gives the network's output at lengths 8000, 12003" in out
    assert mindir_input_shape(str(tmp_path / "out" / "tasnet.mindir")) == [1, -1]


@pytest.mark.parametrize("flags,message", [
    (["--ckpt_file={d}/none.ckpt"], "none.ckpt: checkpoint not found"),
    (["--ckpt_file={d}/tiny.ckpt", "--config_path={default}"],
     "tiny.ckpt: made for another model configuration: N: checkpoint has 16, config 512; "
     "L: checkpoint has 4, config 16"),
    (["--ckpt_file={d}/tiny.ckpt", "--file_format=AIR"], "file_format: AIR is written by the "
     "Ascend toolkit; run with --device_target=Ascend"),
    (["--ckpt_file={d}/tiny.ckpt", "--file_format=ONNX", "--input_length=-5"],
     "input_length: expected 0 (dynamic) or a number of samples"),
    (["--ckpt_file={d}/tiny.ckpt", "--file_format=TFLITE"], "file_format: expected one of"),
    (["--ckpt_file={d}/tiny.ckpt", "--input_length=-5"], "input_length: expected 0 (dynamic)"),
])
def test_export_errors_are_one_line(trained, tmp_path, monkeypatch, capsys, flags, message):
    flags = [f.format(d=trained, default=DEFAULT_CONFIG) for f in flags]
    if not any(f.startswith("--config_path") for f in flags):
        flags.append(f"--config_path={trained}/config.yaml")
    status = run_export(monkeypatch, *flags, f"--file_name={tmp_path}/m")
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert os.listdir(tmp_path) == []                         # nothing half-written
