"""Export a trained Conv-TasNet checkpoint to MINDIR (default), AIR (Ascend) or ONNX.

    python export.py --config_path=<output_dir>/config.yaml --ckpt_file=<checkpoint> \
        [--file_name=conv_tasnet] [--file_format=MINDIR] [--input_length=0]

--input_length=0 exports a dynamic time axis (any length); a number of samples fixes it. A MINDIR
is loaded back and checked against the network's own output; an ONNX model is checked by
onnx.checker and run by onnxruntime against the network (src/deploy/onnx_export.py).
"""
import src.model_utils.quiet  # noqa: F401  (first: GLOG_v must be set before mindspore loads)
from src.model_utils.errors import run_main
from src.model_utils.config import load_config


def main():
    cfg = load_config(description="Export a Conv-TasNet checkpoint to MINDIR, AIR or ONNX")
    from src.model.checkpoint import load_network
    from src.deploy.export import check_mindir, export_network
    from src.model_utils.device import init_device

    init_device(cfg)
    net = load_network(cfg)
    if cfg.file_format == "ONNX":
        from src.deploy.onnx_export import run_onnx_export
        run_onnx_export(cfg, net)
        return
    path = export_network(net, cfg.file_name, cfg.file_format, cfg.input_length,
                          cfg.device_target)
    shape = "[1, T] for any T" if cfg.input_length == 0 else f"[1, {cfg.input_length}]"
    print(f"exported {path} ({cfg.file_format}, input {shape})")
    if cfg.file_format != "MINDIR":
        print(f"not checked: MindSpore cannot load {cfg.file_format} back")
        return
    lengths = ([cfg.input_length] if cfg.input_length else
               [cfg.sample_rate, cfg.sample_rate * 3 // 2 + 3])
    worst = check_mindir(net, path, lengths)
    if worst > 1e-4:
        raise RuntimeError(f"{path}: the reloaded MINDIR differs from the network by {worst:.3g}")
    print(f"checked: the reloaded MINDIR gives the network's output at lengths "
          f"{', '.join(map(str, lengths))} (largest difference {worst:.3g})")


if __name__ == "__main__":
    run_main(main)
