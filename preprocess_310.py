"""Write the test set as .bin inputs for the offline (Ascend 310 or CPU) inference pipeline.

    python preprocess_310.py --config_path=<config.yaml> --mindir_path=conv_tasnet.mindir \
        --data_dir=./data [--test_name=test] [--infer_dir=./infer_310] [--chunk_seconds=0]

The MINDIR's input shape decides the layout: whole utterances for a dynamic time axis, chunks
zero-padded to its length for a fixed one; with --stream=true (a streaming step MINDIR) whole
utterances. Output: <infer_dir>/preprocess_Result/.
With --check_inputs_only=true it writes nothing and checks the sizes of the files written before.
"""
import src.model_utils.quiet  # noqa: F401  (first: GLOG_v must be set before mindspore loads)
from src.model_utils.errors import run_main
from src.model_utils.config import load_config


def main():
    cfg = load_config(description="Write test mixtures as .bin files for offline inference")
    from src.model_utils.device import init_device
    from src.deploy.infer_310 import run_310_preprocess
    init_device(cfg)
    run_310_preprocess(cfg)


if __name__ == "__main__":
    run_main(main)
