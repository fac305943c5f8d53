"""The inference step of scripts/run_infer_310.sh on a CPU: every preprocessed .bin input through
the MINDIR, written where the Ascend 310 app writes its results.

    python infer_cpu.py --config_path=<config.yaml> --mindir_path=conv_tasnet.mindir \
        [--infer_dir=./infer_310] [--stream=true]

--stream=true: the MINDIR is a streaming step (export.py --stream=true, its .json sidecar beside
it); each input is streamed through it hop by hop from a zero state, the state fed back.
"""
import src.model_utils.quiet  # noqa: F401  (first: GLOG_v must be set before mindspore loads)
from src.model_utils.config import load_config
from src.model_utils.errors import run_main


def main():
    cfg = load_config(description="Run the preprocessed .bin files through a MINDIR on CPU")
    from src.model_utils.device import init_device
    from src.deploy.infer_310 import run_cpu_inference
    init_device(cfg, device_target="CPU")
    run_cpu_inference(cfg)


if __name__ == "__main__":
    run_main(main)
