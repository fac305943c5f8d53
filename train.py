"""Train Conv-TasNet on a preprocessed LibriMix split (see default_config.yaml for every flag).

One device:  python train.py --data_dir=./data --output_dir=./output [--device_target=GPU ...]
Resume:      python train.py ... --resume=auto      (or --resume=path/to/conv_tasnet-last.ckpt)
Several:     bash scripts/run_distribute_train.sh RANK_SIZE [RANK_TABLE_FILE] [CONFIG_PATH]
"""
import src.model_utils.quiet  # noqa: F401  (first: GLOG_v must be set before mindspore loads)
from src.model_utils.errors import run_main
from src.model_utils.config import load_config
from src.model_utils.device import init_device
from src.training.trainer import train


def main():
    cfg = load_config(description="Train Conv-TasNet (checkpoints, curves and config.yaml go to "
                                  "output_dir)")
    init_device(cfg)
    train(cfg)


if __name__ == "__main__":
    run_main(main)
