"""Separate your own recordings with a trained or converted model.

    python separate.py --model_path model.ckpt --config_path model.yaml --input talk.flac \
        --output_dir separated [--plot true]
    python separate.py --model_path conv_tasnet.mindir --input recordings/ --output_dir separated

Any format libsndfile reads (WAV, FLAC, OGG, MP3 where supported), any sample rate (resampled to
the model's and back), stereo downmixed, any length (overlapping chunks of
separate_chunk_seconds). Writes <name>_s1.wav ... at the input's rate into output_dir. A file that
cannot be separated is reported in one line and the others are still processed; the exit status
is then 2.
"""
import src.model_utils.quiet  # noqa: F401  (first: GLOG_v must be set before mindspore loads)
from src.model_utils.errors import run_main
from src.model_utils.config import load_config
from src.model_utils.device import init_device
from src.deploy.separation import run_separation


def main():
    cfg = load_config(description="Separate audio files into one WAV per speaker")
    init_device(cfg)
    run_separation(cfg)


if __name__ == "__main__":
    run_main(main)
