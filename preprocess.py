"""Convert LibriMix, wsj0-2mix/3mix, WHAM! or WHAMR! (as their generators write them) into the
JSON lists and MindRecord files that training and evaluation read. Input layouts: see
src/data/layouts.py; output layout: see src/data/librimix.py.

    python preprocess.py --in_dir=/data/LibriMix --out_dir=./data [--splits=[train-360,dev,test]]
    python preprocess.py --config_path=configs/wsj0_2mix_8k.yaml --in_dir=/data/wsj0-mix --out_dir=./data

Runs no network, so sets up no device.
"""
import src.model_utils.quiet  # noqa: F401  (first: GLOG_v must be set before mindspore loads)
from src.model_utils.errors import run_main
from src.model_utils.config import load_config
from src.data.preparation import prepare_dataset


def main():
    cfg = load_config(description="Convert LibriMix, wsj0-mix, WHAM! or WHAMR! folders into JSON "
                                  "lists and MindRecord files.")
    prepare_dataset(cfg)


if __name__ == "__main__":
    run_main(main)
