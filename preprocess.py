"""Convert LibriMix (as its generator writes it) into the JSON lists and MindRecord files that
training and evaluation read. Output layout: see src/data/librimix.py.

    python preprocess.py --in_dir=/data/LibriMix --out_dir=./data [--splits=[train-360,dev,test]]

Runs no network, so sets up no device.
"""
from src.model_utils.errors import run_main
from src.model_utils.config import load_config
from src.data.preparation import prepare_dataset


def main():
    cfg = load_config(description="Convert LibriMix folders into JSON lists and MindRecord files.")
    prepare_dataset(cfg)


if __name__ == "__main__":
    run_main(main)
