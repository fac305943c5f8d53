"""Small LibriMix sets and configurations shared by the data tests."""
import glob
import os

import soundfile as sf

from src.data.demo_data import make_demo_librimix
from src.model_utils.config import load_config

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
