import os
import subprocess
import sys

import pytest

from src.model_utils.errors import UserError
from src.model_utils.config import load_config
from src.model_utils.device import init_device
from helpers import ROOT



def test_defaults_are_the_paper_configuration():
    cfg = load_config([])
    assert (cfg.N, cfg.L, cfg.B, cfg.H, cfg.Sc, cfg.P, cfg.X, cfg.R, cfg.n_src) == \
        (512, 16, 128, 512, 128, 3, 8, 3, 2)
    assert (cfg.norm_type, cfg.causal, cfg.mask_nonlinear) == ("gLN", False, "relu")


def test_command_line_overrides_with_types():
    cfg = load_config(["--lr=0.01", "--batch_size", "8", "--causal=true", "--norm_type=cLN",
                       "--splits=[dev,test]", "--segment=3"])
    assert cfg.lr == 0.01 and cfg.batch_size == 8 and cfg.causal is True
    assert cfg.splits == ["dev", "test"]
    assert cfg.segment == 3.0 and isinstance(cfg.segment, float)


def test_recipe_file_then_command_line(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("n_src: 3\nlr: 0.002\n")
    cfg = load_config([f"--config_path={recipe}", "--lr=0.003"])
    assert cfg.n_src == 3 and cfg.lr == 0.003 and cfg.N == 512
    assert cfg.config_path == str(recipe)


@pytest.mark.parametrize("argv,message", [
    (["--learning_rate=0.1"], "unrecognized arguments: --learning_rate"),
    (["--lr=fast"], "lr: expected a number, got 'fast'"),
    (["--batch_size=2.5"], "batch_size: expected an integer"),
    (["--causal=maybe"], "causal: expected true or false"),
    (["--norm_type=LN"], "norm_type: expected one of"),
])
def test_bad_values_name_the_key(argv, message):
    with pytest.raises(UserError, match=message):
        load_config(argv)


def test_recipe_with_unknown_key_names_file_and_key(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("n_src: 2\nspeakers: 3\n")
    with pytest.raises(UserError, match=r"bad.yaml: unknown key 'speakers'"):
        load_config([f"--config_path={recipe}"])


def test_missing_recipe_file(tmp_path):
    with pytest.raises(UserError, match="config file not found"):
        load_config([f"--config_path={tmp_path / 'none.yaml'}"])


def test_unavailable_device_is_a_clear_error():
    cfg = load_config(["--device_target=Ascend"])
    with pytest.raises(UserError, match="Ascend is not available on this machine"):
        init_device(cfg)


def test_cpu_threads_default_is_one_per_usable_cpu_and_set_once(monkeypatch):
    from src.model_utils import device
    calls = []
    monkeypatch.setattr(device.ms.device_context.cpu.op_tuning, "threads_num", calls.append)
    monkeypatch.setattr(device, "_CPU_THREADS", None)
    assert device.set_cpu_threads(0) == len(os.sched_getaffinity(0))
    assert calls == [len(os.sched_getaffinity(0))]
    assert device.set_cpu_threads(5) == calls[0] and len(calls) == 1   # MindSpore allows one
    monkeypatch.setattr(device, "_CPU_THREADS", None)
    assert device.set_cpu_threads(3) == 3 and calls[-1] == 3


def test_init_device_sets_cpu_threads_in_a_fresh_process():
    # in a process of its own: MindSpore takes the device and the threads once, before any kernel
    code = ("import numpy as np, mindspore as ms\n"
            "from mindspore._c_expression import RuntimeConf\n"
            "from src.model_utils import device\n"
            "from src.model_utils.config import load_config\n"
            "assert not RuntimeConf.get_instance().is_op_threads_num_configured()\n"
            "cfg = load_config(['--cpu_threads=1'])\n"
            "device.init_device(cfg, ms.PYNATIVE_MODE)\n"
            "device.init_device(cfg, ms.PYNATIVE_MODE)\n"
            "assert RuntimeConf.get_instance().is_op_threads_num_configured()\n"
            "print(device._CPU_THREADS, float((ms.Tensor(np.ones(4, np.float32)) * 2).sum()))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "1 8.0"


def test_user_error_is_one_line_without_traceback():
    code = ("from src.model_utils.errors import run_main; from src.model_utils.config import load_config; "
            "run_main(load_config, ['--lr=abc'])")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == "error: lr: expected a number, got 'abc' (command line)"
