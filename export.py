"""Export a trained Conv-TasNet checkpoint to MINDIR (default), AIR (Ascend) or ONNX.

    python export.py --config_path=<output_dir>/config.yaml --ckpt_file=<checkpoint> \
        [--file_name=conv_tasnet] [--file_format=MINDIR] [--input_length=0]

--input_length=0 exports a dynamic time axis (any length); a number of samples (at least L) fixes
it. A MINDIR is loaded back and checked against the network's own output before it is renamed
into place: a file that fails its check is never published. An ONNX model is checked by
onnx.checker and run by onnxruntime against the network (src/deploy/onnx_export.py).

--stream=true (a causal cLN model) writes the streaming step instead: <file_name>_stream.mindir
(one hop of --stream_hop_ms in, the network state as explicit inputs and outputs) and the sidecar
<file_name>_stream.json, published after the reloaded MINDIR streamed --stream_check_seconds
(default 10 s) as the numpy streaming separator does (src/deploy/stream_export.py).
"""
import src.model_utils.quiet  # noqa: F401  (first: GLOG_v must be set before mindspore loads)
from src.model_utils.errors import run_main
from src.model_utils.config import load_config


def main():
    cfg = load_config(description="Export a Conv-TasNet checkpoint to MINDIR, AIR or ONNX")
    from src.model_utils.device import init_device
    from src.deploy.export import run_export
    init_device(cfg)
    run_export(cfg)


if __name__ == "__main__":
    run_main(main)
