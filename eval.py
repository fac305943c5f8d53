"""Score a trained Conv-TasNet on whole test utterances: SI-SNRi, SDRi, SIR, SAR, STOI (ESTOI, PESQ).

    python eval.py --config_path=<output_dir>/config.yaml --ckpt_file=<checkpoint> \
        [--data_dir=./data] [--test_name=test] [--save_wav=N] [--eval_sdr=true] [--chunk_seconds=0]
        [--metrics='[si_snr,sdr,sir,sar,stoi,estoi,pesq]']

Writes per-utterance scores (eval_results.csv) and their means (eval_summary.json) to
<output_dir>/eval_<test_name>/, and the separated sources of N utterances to its wav/ folder.
A run that is stopped resumes where it was on the next call with the same settings.
"""
import src.model_utils.quiet  # noqa: F401  (first: GLOG_v must be set before mindspore loads)
from src.model_utils.errors import run_main
from src.model_utils.config import load_config


def main():
    cfg = load_config(description="Score a Conv-TasNet checkpoint on the test set (SI-SNRi, SDRi)")
    from src.model_utils.device import init_device
    from src.evaluation.evaluate import run_evaluation
    init_device(cfg)
    run_evaluation(cfg)


if __name__ == "__main__":
    run_main(main)
