"""Data-parallel training on CPU: two msrun workers launched by scripts/run_distribute_train.sh."""
import os
import re
import subprocess

import numpy as np
import pytest
import mindspore as ms

from src.model.build import build_network
from src.data.dataset import create_train_dataset
from src.model_utils.errors import UserError
from src.model_utils.config import load_config
from src.training.train_state import last_path
from src.training.train_step import init_parallel, make_train_step
from helpers import ROOT, checkpoint_arrays, flags, make_data_dir

# The whole module: pipelines in subprocesses, graphs compiled for export (run_tests.sh --fast
# leaves it out).
pytestmark = pytest.mark.slow

SCRIPT = os.path.join(ROOT, "scripts", "run_distribute_train.sh")


def rank_batches(cfg, rank_id, rank_size):
    """The batches of the first epoch that rank `rank_id` of `rank_size` trains on."""
    dataset = create_train_dataset(cfg, rank_id, rank_size)
    return list(dataset.create_dict_iterator(num_epochs=1, output_numpy=True))


def rows(batches):
    return [m.tobytes() for b in batches for m in b["mixture"]]


def test_two_workers_train_like_one_process_on_the_combined_batch(tmp_path, graph_mode):
    data_dir = make_data_dir(str(tmp_path))
    out = tmp_path / "run"
    # SGD: its update is proportional to the gradient, so a sum instead of a mean would show.
    run_flags = flags(data_dir=data_dir, output_dir=out, epochs=1, optimizer="sgd", lr=0.05)
    env = {**os.environ, "WAIT": "1"}
    result = subprocess.run(["bash", SCRIPT, "2", "", os.path.join(ROOT, "default_config.yaml")]
                            + run_flags, env=env, capture_output=True, text=True, timeout=400)
    logs = [out / "msrun" / f"worker_{rank}.log" for rank in (0, 1)]
    texts = [p.read_text() if p.exists() else "" for p in logs]
    assert result.returncode == 0, result.stdout + result.stderr + "".join(texts)

    # Both ranks: the same per-device batch, the same number of steps, the same final weights.
    digests = []
    for rank, text in enumerate(texts):
        assert f"[rank {rank}] training: 2 steps per epoch, 2 mixtures per device x 2 device(s)" \
            in text
        digests += re.findall(rf"\[rank {rank}\] finished after 1 epochs; parameters sha1 (\w+)",
                              text)
    assert len(digests) == 2 and digests[0] == digests[1]

    # Each rank trains on its own half of the data.
    cfg = load_config(run_flags)
    halves = [rank_batches(cfg, rank, 2) for rank in (0, 1)]
    whole = rows(rank_batches(cfg, 0, 1))
    assert not set(rows(halves[0])) & set(rows(halves[1]))
    assert sorted(rows(halves[0]) + rows(halves[1])) == sorted(whole)

    # One process, one step per pair of batches on their concatenation: the same weights, since
    # the loss is a mean over the batch and the ranks' gradients are averaged before clipping.
    ms.set_seed(cfg.seed)
    net = build_network(cfg)
    step = make_train_step(net, cfg)
    for first, second in zip(*halves):
        combined = [ms.Tensor(np.concatenate([first[k], second[k]]))
                    for k in ("mixture", "sources", "lengths")]
        assert bool(step(*combined)[1].asnumpy())
    saved = checkpoint_arrays(last_path(str(out)))
    largest = max(float(np.abs(saved[name] - p.asnumpy()).max())
                  for name, p in net.parameters_dict().items())
    assert largest < 1e-6


def test_distribute_without_a_launcher_is_refused(monkeypatch):
    for name in ("RANK_ID", "MS_WORKER_NUM"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(UserError, match="distribute: true needs a launcher"):
        init_parallel(load_config(["--distribute=true"]))
    assert init_parallel(load_config([])) == (0, 1)


def test_scripts_check_their_arguments():
    def run(script, *args):
        return subprocess.run(["bash", os.path.join(ROOT, "scripts", script), *args],
                              capture_output=True, text=True, timeout=60)

    for args, message in [((), None), (("1",), "RANK_SIZE: expected a number of devices >= 2"),
                          (("two",), "RANK_SIZE"),
                          (("2", "missing_table.json"), "RANK_TABLE_FILE: missing_table.json: "
                                                        "file not found"),
                          (("2", "", "missing.yaml"), "CONFIG_PATH: missing.yaml: config file")]:
        result = run("run_distribute_train.sh", *args)
        assert result.returncode == 1
        assert "[RANK_SIZE] [RANK_TABLE_FILE] [CONFIG_PATH] [--key=value ...]" in result.stderr
        if message:
            assert message in result.stderr
    result = run("run_distribute_train.sh", "2", os.path.join(ROOT, "default_config.yaml"))
    assert result.returncode == 1
    assert "RANK_TABLE_FILE: an HCCL rank table is for Ascend, device_target is CPU" in result.stderr
    help_text = run("run_distribute_train.sh", "--help")
    assert help_text.returncode == 0 and "[RANK_SIZE] [RANK_TABLE_FILE] [CONFIG_PATH]" in \
        help_text.stdout

    result = run("run_standalone_train.sh", "gpu0")
    assert result.returncode == 1
    assert "DEVICE_ID: expected a device index" in result.stderr
    assert "[DEVICE_ID] [CONFIG_PATH]" in result.stderr
    result = run("run_standalone_train.sh", "0", os.path.join(ROOT, "default_config.yaml"),
                 "--epochs=many")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == \
        "error: epochs: expected an integer, got 'many' (command line)"
