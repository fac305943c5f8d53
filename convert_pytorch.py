"""Convert pretrained PyTorch Conv-TasNet weights (Asteroid or torchaudio) into a checkpoint.

    python convert_pytorch.py --src ConvTasNet_Libri2Mix_sepclean_8k.bin --dst convtasnet.ckpt
    python eval.py --config_path convtasnet.yaml --ckpt_file convtasnet.ckpt

Reads Asteroid's serialized model (model_args give the configuration), an Asteroid state_dict or
torchaudio's ConvTasNet state_dict (sizes from the tensor shapes; X, and for Asteroid the mask
activation, from --X, --mask_nonlinear ... as they are not recorded). The file is read without
running code from it, and torch is not needed. Writes <dst> and <dst without .ckpt>.yaml. Runs no
network (the weights are only mapped and saved), so sets up no device and compiles nothing.
"""
import src.model_utils.quiet  # noqa: F401  (first: GLOG_v must be set before mindspore loads)
from src.model.convert import run_conversion
from src.model_utils.errors import run_main
from src.model_utils.config import load_config


def main():
    cfg = load_config(description="Convert Asteroid/torchaudio Conv-TasNet weights to a checkpoint")
    run_conversion(cfg)


if __name__ == "__main__":
    run_main(main)
