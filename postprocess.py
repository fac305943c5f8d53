"""Score the results of the offline inference pipeline: SI-SNRi on whole test utterances.

    python postprocess.py --config_path=<config.yaml> [--infer_dir=./infer_310] [--save_wav=N]

Reads <infer_dir>/preprocess_Result and <infer_dir>/result_Files, stitches the chunks of each
utterance, writes eval_results.csv and eval_summary.json to <infer_dir> and prints
"Average SISNR improvement: X". With --save_wav=N, the separated sources of N utterances go to
<infer_dir>/wav/ (at the mixture's level and in the output_format, as eval.py writes them).
"""
import src.model_utils.quiet  # noqa: F401  (first: GLOG_v must be set before mindspore loads)
import os

from src.model_utils.errors import run_main
from src.model_utils.config import load_config


def main():
    cfg = load_config(description="Score offline inference results (SI-SNRi)")
    from src.evaluation.evaluate import summary_line, wav_writer, write_results
    from src.deploy.infer_310 import PREPROCESS_DIR, RESULT_DIR, postprocess
    from src.deploy.output_level import check_output_settings, output_subtype
    if cfg.save_wav > 0:
        check_output_settings(cfg)
    save = wav_writer(os.path.join(cfg.infer_dir, "wav"), cfg.save_wav, cfg.sample_rate,
                      cfg.output_scale, output_subtype(cfg))
    rows, summary = postprocess(os.path.join(cfg.infer_dir, PREPROCESS_DIR),
                                os.path.join(cfg.infer_dir, RESULT_DIR), on_utterance=save)
    write_results(cfg.infer_dir, rows, summary)
    print(summary_line(summary))
    print(f"Average SISNR improvement: {summary['si_snri']:.4f}")


if __name__ == "__main__":
    run_main(main)
