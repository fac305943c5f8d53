"""Tiny data sets, tiny networks and runners shared by the test modules (fixtures: conftest.py).

Test modules import them with `from helpers import ...` (tests/conftest.py puts this folder on
sys.path); no test module imports another.
"""
import glob
import os
import subprocess
import sys

import numpy as np
import soundfile as sf
import yaml
import mindspore as ms
import mindspore.dataset as ds

from src.data.demo_data import make_demo_librimix
from src.data.preparation import prepare_dataset
from src.deploy.inference import load_model
from src.deploy.separation import chunking, separate_inputs
from src.model.conv_tasnet import ConvTasNet
from src.model.cpu_engine import CpuConvTasNet
from src.training.loss import PITLoss
from src.model_utils.config import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
# The tiny network of the model, export, evaluation and deployment tests.
TINY_NET = dict(N=16, L=4, B=8, H=16, Sc=8, P=3, X=2, R=1)


# ---------------------------------------------------------------- LibriMix sets and configurations

TINY_SIZES = {"train-360": 9, "dev": 3, "test": 4}


def make_tiny_librimix(root, n_src=2, seed=0, sizes=None, min_seconds=0.4, max_seconds=1.2,
                       noisy=False):
    """A synthetic LibriMix of a few short mixtures; returns its Libri<C>Mix/wav8k/min folder."""
    return make_demo_librimix(str(root), seed=seed, n_src=n_src, sizes=sizes or TINY_SIZES,
                              min_seconds=min_seconds, max_seconds=max_seconds, noisy=noisy)


def config(**values):
    """The default configuration with `values` given as command-line flags."""
    return load_config([f"--{key}={value}" for key, value in values.items()])


def wav_files(folder):
    return sorted(glob.glob(os.path.join(folder, "*.wav")))


def read_float(path):
    """soundfile's float32 reading of a WAV: the reference for bit-exactness."""
    return sf.read(path, dtype="float32")[0]


# ---------------------------------------------------------------- a fresh process

def run_python(script, **env):
    """Run `script` with this Python from the project root (extra environment `env`, MindSpore's
    log quiet); assert that it succeeded and return the CompletedProcess."""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=ROOT, env={**os.environ, "GLOG_v": "3", **env}, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def run_script(monkeypatch, name, *argv):
    """The main of script `name` (train, eval, export, ...) through run_main in this process;
    returns its exit status.

    MindSpore's device is set once per process (already, for the tests), so init_device is skipped.
    """
    import importlib
    from src.model_utils.errors import run_main
    monkeypatch.setattr(sys, "argv", [f"{name}.py", *argv])
    monkeypatch.setattr("src.model_utils.device.init_device", lambda cfg: None)
    module = importlib.import_module(name)
    if hasattr(module, "init_device"):
        monkeypatch.setattr(module, "init_device", lambda cfg: None)
    try:
        run_main(module.main)
    except SystemExit as exit_:
        return exit_.code
    return 0


# ---------------------------------------------------------------- training

# 8 training mixtures of 0.5-0.9 s cut into 0.5 s crops: 4 batches of 2 per epoch on one device.
SIZES = {"train-360": 8, "dev": 2, "test": 1}
TINY_MODEL = dict(N=8, L=4, B=4, H=8, Sc=4, X=2, R=1)
TRAIN = dict(segment=0.5, batch_size=2, log_interval=1, dataset_workers=1)


def make_data_dir(root):
    """Preprocess a tiny synthetic LibriMix under `root`; returns the data_dir."""
    in_dir = make_tiny_librimix(os.path.join(root, "librimix"), sizes=SIZES, min_seconds=0.5,
                                max_seconds=0.9)
    data_dir = os.path.join(root, "data")
    prepare_dataset(config(in_dir=in_dir, out_dir=data_dir, preprocess_workers=1),
               log=lambda *_: None)
    return data_dir


def flags(**values):
    """Command-line flags of the tiny model and training settings, with `values` over them."""
    merged = {**TINY_MODEL, **TRAIN, **values}
    return [f"--{key}={value}" for key, value in merged.items()]


def checkpoint_arrays(path):
    """{name: numpy array} of every tensor entry of a checkpoint."""
    return {name: value.asnumpy() for name, value in ms.load_checkpoint(path).items()
            if isinstance(value, ms.Tensor)}


def assert_same_arrays(actual, expected, atol=0.0):
    assert sorted(actual) == sorted(expected)
    for name in expected:
        np.testing.assert_allclose(actual[name], expected[name], rtol=0, atol=atol, err_msg=name)


# ---------------------------------------------------------------- evaluation data

def speech_like(rng, length):
    """A random signal with a spectral tilt and an envelope, so that sources are distinct."""
    white = rng.standard_normal(length + 8)
    coloured = np.convolve(white, rng.standard_normal(8), mode="valid")[:length]
    envelope = 0.5 + np.abs(np.sin(np.linspace(0, rng.uniform(2, 9), length)))
    return (coloured * envelope).astype(np.float32)


def make_dataset(lengths, C=2, batch=1, seed=0):
    """An eval dataset with the columns of create_eval_dataset, zero-padded to the longest."""
    rng = np.random.default_rng(seed)
    T = max(lengths)
    sources = np.zeros((len(lengths), C, T), np.float32)
    for i, n in enumerate(lengths):
        sources[i, :, :n] = [speech_like(rng, n) for _ in range(C)]
    mixture = sources.sum(axis=1)
    data = ds.NumpySlicesDataset({"mixture": mixture, "sources": sources,
                                  "lengths": np.array(lengths, np.int32)}, shuffle=False)
    return data.batch(batch), sources, mixture


# ---------------------------------------------------------------- separation

SEPARATION_NET = dict(N=8, L=16, B=4, H=8, Sc=4, P=3, X=1, R=1)
RATE = 8000
# the network's own output, so that it can be compared with the network run here
RAW = ("--output_scale=raw", "--output_format=float32")


def make_model(directory, name, **settings):
    """A random tiny ConvTasNet saved as <name>.ckpt with its recipe <name>.yaml; returns it."""
    ms.set_seed(len(name))
    settings = {**SEPARATION_NET, **settings}
    net = ConvTasNet(C=2, **settings)
    net.set_train(False)
    ms.save_checkpoint(net, os.path.join(directory, f"{name}.ckpt"))
    with open(os.path.join(directory, f"{name}.yaml"), "w", encoding="utf-8") as f:
        yaml.safe_dump({**settings, "n_src": 2, "sample_rate": RATE}, f)
    return net


def separation_config(models, name, input_path, output_dir, *extra):
    directory, _ = models
    return load_config([f"--config_path={directory}/{name}.yaml",
                        f"--model_path={directory}/{name}.ckpt", f"--input={input_path}",
                        f"--output_dir={output_dir}", *extra])


def separate(cfg, log=None):
    """separate_inputs with the model and chunking of `cfg` -> (written, failed)."""
    return separate_inputs(load_model(cfg, cfg.model_path), cfg, *chunking(cfg),
                           log=log or (lambda line: None))


def run_net(net, mixture):
    return net(ms.Tensor(np.asarray(mixture, np.float32)[None])).asnumpy()[0]


def voices(seconds, rate, channels=1, seed=0):
    """Two amplitude-modulated harmonic 'voices' at different pitches, mixed, [T, channels]."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    a = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 6))
    b = sum(np.sin(2 * np.pi * 230 * k * t) / k for k in range(1, 4))
    a, b = a * (1 + np.sin(2 * np.pi * 3 * t)), b * (1 + np.cos(2 * np.pi * 2 * t))
    mono = 0.2 * (a + b) + 0.01 * rng.standard_normal(len(t))
    return np.stack([mono * (0.8 + 0.2 * c) for c in range(channels)], axis=1).astype(np.float32)


# ---------------------------------------------------------------- the CPU engine against the plain model

SMALL = dict(N=16, L=4, B=8, H=16, Sc=8, P=3, X=3, R=2)
SHORT = dict(X=2, R=1)  # fewer blocks (dilations 1 and 2) where graphs are compiled


def twin_networks(kwargs, engine="matmul"):
    """A plain ConvTasNet and a CpuConvTasNet (`engine` "matmul" or "kernels") with the same
    (random, non-trivial) parameters."""
    ms.set_seed(3)
    conv = ConvTasNet(**kwargs)
    rng = np.random.default_rng(4)
    for _, param in conv.parameters_and_names():
        # Perturb gains, biases and slopes too, so that every parameter matters.
        param.set_data(ms.Tensor(param.asnumpy() + 0.1 * rng.standard_normal(param.shape)
                                 .astype(np.float32)))
    other = CpuConvTasNet(**kwargs, kernels=engine == "kernels")
    ms.load_param_into_net(other, {name: p for name, p in conv.parameters_and_names()})
    return conv, other


def signals(batch, length, C, seed=5):
    rng = np.random.default_rng(seed)
    mixture = rng.standard_normal((batch, length)).astype(np.float32)
    sources = rng.standard_normal((batch, C, length)).astype(np.float32)
    return mixture, sources


def loss_and_gradients(net, mixture, sources, lengths):
    loss_fn = PITLoss(net.C)

    def forward(x, s, n):
        return loss_fn(net(x), s, n)
    params = net.trainable_params()
    loss, grads = ms.jit(ms.value_and_grad(forward, None, params))(
        ms.Tensor(mixture), ms.Tensor(sources), ms.Tensor(lengths))
    return float(loss.asnumpy()), {p.name: g.asnumpy() for p, g in zip(params, grads)}


def chain_inputs(batch, frames, H, P, seed=6):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((batch, frames, H)).astype(np.float32),
            rng.standard_normal((H, 1, 1, P)).astype(np.float32),
            rng.standard_normal(H).astype(np.float32),
            np.array([0.3], np.float32),
            (1 + 0.2 * rng.standard_normal(H)).astype(np.float32),
            (0.2 * rng.standard_normal(H)).astype(np.float32)]


CHAINS = [(2, (2, 2), 9), (4, (8, 0), 11), (4, (4, 4), 3), (1, (2, 0), 1)]
