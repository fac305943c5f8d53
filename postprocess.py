"""Score the results of the offline inference pipeline: SI-SNRi on whole test utterances.

    python postprocess.py --config_path=<config.yaml> [--infer_dir=./infer_310] [--save_wav=N]

Reads <infer_dir>/preprocess_Result and <infer_dir>/result_Files, stitches the chunks of each
utterance, writes eval_results.csv and eval_summary.json to <infer_dir> and prints
"Average SISNR improvement: X". With --save_wav=N, the separated sources of N utterances go to
<infer_dir>/wav/ (at the mixture's level and in the output_format, as eval.py writes them).
Runs no network, so sets up no device.
"""
import src.model_utils.quiet  # noqa: F401  (first: GLOG_v must be set before mindspore loads)
from src.model_utils.errors import run_main
from src.model_utils.config import load_config


def main():
    cfg = load_config(description="Score offline inference results (SI-SNRi)")
    from src.deploy.infer_310 import run_postprocess
    run_postprocess(cfg)


if __name__ == "__main__":
    run_main(main)
