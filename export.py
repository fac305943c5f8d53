"""Export a trained Conv-TasNet checkpoint to MINDIR (default), AIR (Ascend) or ONNX.

    python export.py --config_path=<output_dir>/config.yaml --ckpt_file=<checkpoint> \
        [--file_name=conv_tasnet] [--file_format=MINDIR] [--input_length=0]

--input_length=0 exports a dynamic time axis (any length); a number of samples (at least L) fixes
it. A MINDIR is loaded back and checked against the network's own output before it is renamed
into place: a file that fails its check is never published. An ONNX model is checked by
onnx.checker and run by onnxruntime against the network (src/deploy/onnx_export.py).
"""
import src.model_utils.quiet  # noqa: F401  (first: GLOG_v must be set before mindspore loads)
from src.model_utils.errors import UserError, run_main
from src.model_utils.config import load_config

TOLERANCE = 1e-4


def main():
    cfg = load_config(description="Export a Conv-TasNet checkpoint to MINDIR, AIR or ONNX")
    from src.model.checkpoint import load_network
    from src.deploy.export import check_mindir, export_network
    from src.model_utils.device import init_device

    if 0 < cfg.input_length < cfg.L:
        raise UserError(f"input_length: {cfg.input_length} samples is shorter than the encoder "
                        f"kernel L={cfg.L}; expected 0 (any length) or at least {cfg.L}")
    init_device(cfg)
    net = load_network(cfg)
    if cfg.file_format == "ONNX":
        from src.deploy.onnx_export import run_onnx_export
        run_onnx_export(cfg, net)
        return
    lengths = ([cfg.input_length] if cfg.input_length else
               [cfg.sample_rate, cfg.sample_rate * 3 // 2 + 3])
    checked = {}

    def check(exported):
        checked["worst"] = worst = check_mindir(net, exported, lengths)
        if worst > TOLERANCE:
            raise UserError(f"{cfg.file_name}: the reloaded MINDIR differs from the network by "
                            f"{worst:.3g} (more than {TOLERANCE}); nothing written")

    path = export_network(net, cfg.file_name, cfg.file_format, cfg.input_length,
                          cfg.device_target, check=check if cfg.file_format == "MINDIR" else None)
    shape = "[1, T] for any T" if cfg.input_length == 0 else f"[1, {cfg.input_length}]"
    print(f"exported {path} ({cfg.file_format}, input {shape})")
    if cfg.file_format != "MINDIR":
        print(f"not checked: MindSpore cannot load {cfg.file_format} back")
        return
    print(f"checked: the reloaded MINDIR gives the network's output at lengths "
          f"{', '.join(map(str, lengths))} (largest difference {checked['worst']:.3g})")


if __name__ == "__main__":
    run_main(main)
