"""The inference step of scripts/run_infer_310.sh on a CPU: every preprocessed .bin input through
the MINDIR, written where the Ascend 310 app writes its results.

    python infer_cpu.py --config_path=<config.yaml> --mindir_path=conv_tasnet.mindir \
        [--infer_dir=./infer_310]
"""
import src.model_utils.quiet  # noqa: F401  (first: GLOG_v must be set before mindspore loads)
import os

from src.model_utils.config import load_config
from src.model_utils.errors import UserError, run_main


def main():
    cfg = load_config(description="Run the preprocessed .bin files through a MINDIR on CPU")
    if not cfg.mindir_path:
        raise UserError("mindir_path: expected the exported MINDIR (--mindir_path=...)")
    import mindspore as ms
    from src.deploy.infer_310 import INPUT_DIR, PREPROCESS_DIR, RESULT_DIR, run_bins_on_cpu
    ms.set_device("CPU")
    ms.set_context(mode=ms.GRAPH_MODE)
    run_bins_on_cpu(cfg.mindir_path, os.path.join(cfg.infer_dir, PREPROCESS_DIR, INPUT_DIR),
                    os.path.join(cfg.infer_dir, RESULT_DIR))


if __name__ == "__main__":
    run_main(main)
