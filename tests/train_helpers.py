"""A tiny preprocessed LibriMix and a tiny model configuration shared by the training tests."""
import os

import numpy as np
import mindspore as ms

from src.data.preparation import prepare_dataset
from librimix_helpers import config, make_tiny_librimix

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
