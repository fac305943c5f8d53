"""Separate speech as it arrives, hop by hop, with a causal model.

    python stream.py --config_path model.yaml --model_path model.ckpt --input talk.wav \\
        --output_dir separated [--stream_hop_ms 16]
    arecord -t raw -f S16_LE -c 1 -r 8000 | python stream.py --config_path model.yaml \\
        --model_path model.ckpt --input=- --output_dir=- | aplay -t raw -f S16_LE -c 2 -r 8000

Input: an audio file, or `-` for raw PCM on standard input (s16le, mono, the model's rate).
Output: <name>_s1.wav ... in output_dir, or `-` for raw PCM on standard output (s16le, the
speakers interleaved). The outputs equal separate.py's offline ones; a summary of the latency,
the compute per hop and the real-time factor goes to standard error. A non-causal model is
refused. See src/deploy/stream_runner.py.
"""
import src.model_utils.quiet  # noqa: F401  (first: GLOG_v must be set before mindspore loads)
from src.model_utils.errors import run_main
from src.model_utils.config import load_config


def main():
    cfg = load_config(description="Separate a file or standard input hop by hop (causal model)")
    from src.model_utils.device import init_device
    from src.deploy.stream_runner import run_streaming
    # The stream runs in numpy on the CPU; MindSpore only reads the checkpoint.
    init_device(cfg, device_target="CPU")
    run_streaming(cfg)


if __name__ == "__main__":
    run_main(main)
