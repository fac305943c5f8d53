"""Write the test set as .bin inputs for the offline (Ascend 310 or CPU) inference pipeline.

    python preprocess_310.py --config_path=<config.yaml> --mindir_path=conv_tasnet.mindir \
        --data_dir=./data [--test_name=test] [--infer_dir=./infer_310] [--chunk_seconds=0]

The MINDIR's input shape decides the layout: whole utterances for a dynamic time axis, chunks
zero-padded to its length for a fixed one. Output: <infer_dir>/preprocess_Result/.
With --check_inputs_only=true it writes nothing and checks the sizes of the files written before.
"""
import src.model_utils.quiet  # noqa: F401  (first: GLOG_v must be set before mindspore loads)
import os

from src.model_utils.errors import UserError, run_main
from src.model_utils.config import load_config


def main():
    cfg = load_config(description="Write test mixtures as .bin files for offline inference")
    from src.deploy.infer_310 import PREPROCESS_DIR, check_inputs, write_310_inputs
    prep_dir = os.path.join(cfg.infer_dir, PREPROCESS_DIR)
    if cfg.check_inputs_only:
        manifest = check_inputs(prep_dir)
        print(f"{prep_dir}: the inputs of {len(manifest['utterances'])} utterances are complete")
        return
    if not cfg.mindir_path:
        raise UserError("mindir_path: expected the exported MINDIR (--mindir_path=...)")
    write_310_inputs(cfg, cfg.mindir_path, prep_dir)


if __name__ == "__main__":
    run_main(main)
