"""Convert pretrained PyTorch Conv-TasNet weights (Asteroid or torchaudio) into a checkpoint.

    python convert_pytorch.py --src ConvTasNet_Libri2Mix_sepclean_8k.bin --dst convtasnet.ckpt
    python eval.py --config_path convtasnet.yaml --ckpt_file convtasnet.ckpt

Reads Asteroid's serialized model (model_args give the configuration), an Asteroid state_dict or
torchaudio's ConvTasNet state_dict (sizes from the tensor shapes; X, and for Asteroid the mask
activation, from --X, --mask_nonlinear ... as they are not recorded). The file is read without
running code from it, and torch is not needed. Writes <dst> and <dst without .ckpt>.yaml.
"""
import src.model_utils.quiet  # noqa: F401  (first: GLOG_v must be set before mindspore loads)
from src.model.convert import convert, MODEL_KEYS
from src.model_utils.errors import UserError, run_main
from src.model_utils.config import load_config


def main():
    cfg = load_config(description="Convert Asteroid/torchaudio Conv-TasNet weights to a checkpoint")
    if not cfg.src or not cfg.dst:
        raise UserError("src, dst: expected --src <file.pth|.bin> --dst <file.ckpt>")
    kind, settings, assumed, recipe = convert(cfg.src, cfg.dst, cfg)
    print(f"{cfg.src}: {kind} Conv-TasNet, " + ", ".join(f"{k}={settings[k]}" for k in MODEL_KEYS))
    if assumed:
        print("not recorded in the file, taken from the configuration (pass the model's values "
              "if they differ): " + ", ".join(f"--{k}={settings[k]}" for k in assumed))
    print(f"wrote {cfg.dst} and {recipe}")
    print(f"next: python eval.py --config_path {recipe} --ckpt_file {cfg.dst}")


if __name__ == "__main__":
    run_main(main)
