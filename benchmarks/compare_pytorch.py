"""This project's Conv-TasNet against Asteroid's (PyTorch) on the same machine, side by side.

Runs the measurements of benchmarks/bench_model.py on the MindSpore cell and the same ones on
Asteroid's ConvTasNet, built with the same configuration and fed the same input sizes, taking
turns (each MindSpore measurement, then PyTorch's) for --rounds rounds, each measurement in a
fresh process. Prints one JSON object with the medians over the rounds and the ratios MindSpore /
PyTorch (below 1: MindSpore is faster or leaner).

    python benchmarks/compare_pytorch.py [--torch_python PATH] [--rounds 3]
        [bench_model.py flags: --batch --seconds --repeats --warmup --infer_seconds --threads]
        [--measure train,infer,mindir] [--<config key>=<value> ...]

PyTorch side: Asteroid's ConvTasNet (masknn.TDConvNet, gLN/cLN/BN, the same N, L, B, H, Sc, P,
X, R, C), Asteroid's PITLossWrapper over pairwise_neg_sisdr, torch.optim.Adam (cfg.lr), gradient
clipping to cfg.clip_grad_norm; inference under torch.inference_mode. Measurements: train,
infer (the module), and for MindSpore's infer_dynamic/mindir/mindir_static the same module call
(PyTorch runs any length without compiling); framework: peak RSS with torch and Asteroid
imported and the model built. torch and asteroid are not project dependencies;
install them as benchmarks/README.md says (--torch_python: the interpreter that has them).
"""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_model import (child_mode, child_spec, machine, parse_arguments,  # noqa: E402
                         peak_rss_mb, run_child, summary, timed_calls)
from src.model_utils.errors import UserError, run_main  # noqa: E402

RATIO_KEYS = ("median_s", "peak_rss_mb", "rtf")


def asteroid_model(model):
    """Asteroid's ConvTasNet for the project's model settings `model` (a dict)."""
    from asteroid.models import ConvTasNet as AsteroidConvTasNet
    return AsteroidConvTasNet(
        n_src=model["n_src"], n_filters=model["N"], kernel_size=model["L"],
        stride=model["L"] // 2, bn_chan=model["B"], hid_chan=model["H"],
        skip_chan=model["Sc"], conv_kernel_size=model["P"], n_blocks=model["X"],
        n_repeats=model["R"], norm_type=model["norm_type"], mask_act=model["mask_nonlinear"],
        causal=model["causal"], sample_rate=model["sample_rate"])


def asteroid_step(net, loss_fn, optimizer, mixture, sources, clip_grad_norm):
    """One training step of Asteroid's model as its recipes take it (clipping when > 0); the
    loss tensor."""
    import torch
    optimizer.zero_grad()
    loss = loss_fn(net(mixture), sources)
    loss.backward()
    if clip_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(net.parameters(), clip_grad_norm)
    optimizer.step()
    return loss


def measure_torch(kind, spec):
    """One Asteroid measurement in this process (run by the interpreter that has torch)."""
    import torch
    from asteroid.losses import PITLossWrapper, pairwise_neg_sisdr

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    model_cfg = spec["model"]
    net = asteroid_model(model_cfg)
    rng = np.random.default_rng(0)
    info = dict(threads=torch.get_num_threads(), torch=torch.__version__)
    if kind == "framework":
        return dict(peak_rss_mb=round(peak_rss_mb()), **info)
    if kind == "train":
        batch = spec["batch"]
        samples = int(round(spec["seconds"] * model_cfg["sample_rate"]))
        mixture = torch.from_numpy(rng.standard_normal((batch, samples)).astype(np.float32))
        sources = torch.from_numpy(
            rng.standard_normal((batch, model_cfg["n_src"], samples)).astype(np.float32))
        loss_fn = PITLossWrapper(pairwise_neg_sisdr, pit_from="pw_mtx")
        optimizer = torch.optim.Adam(net.parameters(), lr=model_cfg["lr"])
        net.train()

        def step():
            return asteroid_step(net, loss_fn, optimizer, mixture, sources,
                                 model_cfg["clip_grad_norm"]).item()
        first, times = timed_calls(step, spec["repeats"], spec["warmup"])
        return summary(first, times, samples_per_s=batch / float(np.median(times)), **info)
    samples = int(round(spec["infer_seconds"] * model_cfg["sample_rate"]))
    clip = rng.standard_normal((1, samples)).astype(np.float32)
    net.eval()

    def infer():
        with torch.inference_mode():
            return net(torch.from_numpy(clip)).numpy()
    first, times = timed_calls(infer, spec["repeats"], spec["warmup"])
    return summary(first, times, rtf=float(np.median(times)) / spec["infer_seconds"], **info)


def torch_kind(kind):
    """The Asteroid measurement that corresponds to MindSpore's measurement `kind`."""
    return kind if kind in ("framework", "train") else "infer"


def model_settings(cfg):
    keys = ("N", "L", "B", "H", "Sc", "P", "X", "R", "n_src", "norm_type", "causal",
            "mask_nonlinear", "sample_rate", "lr", "clip_grad_norm")
    if cfg.encoder_activation != "linear" or cfg.edge_pad != 0:
        raise UserError("encoder_activation/edge_pad: Asteroid's ConvTasNet has a linear encoder "
                        "and no edge padding; compare with encoder_activation linear, edge_pad 0")
    return {key: getattr(cfg, key) for key in keys}


def medians(runs):
    """Medians over the rounds of the numbers of each measurement's results."""
    good = [r for r in runs if "error" not in r]
    if not good:
        return runs[0]
    out = {k: v for k, v in good[0].items() if not isinstance(v, (int, float)) or
           isinstance(v, bool)}
    for key, value in good[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = float(np.median([r[key] for r in good]))
    out["rounds"] = len(good)
    out.pop("times_s", None)
    return out


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if child_mode(argv, "_torch_", measure_torch):
        return
    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--torch_python", default=sys.executable)
    extra.add_argument("--rounds", type=int, default=3)
    own, rest = extra.parse_known_args(argv)
    if own.rounds < 1:
        raise UserError(f"--rounds: expected a positive integer, got {own.rounds}")
    if not os.path.isfile(own.torch_python):
        raise UserError(f"--torch_python: {own.torch_python} not found")
    args, config_argv, measures = parse_arguments(rest, __doc__.splitlines()[0])
    from src.model_utils.config import load_config
    spec = child_spec(args, config_argv)
    spec["model"] = model_settings(load_config(config_argv))
    script = os.path.abspath(__file__)
    bench = os.path.join(os.path.dirname(script), "bench_model.py")
    runs = {kind: [] for kind in measures}
    # PyTorch runs any length without compiling, so one Asteroid inference measurement stands
    # for all of MindSpore's inference variants, and its runs are pooled.
    torch_kinds = sorted({torch_kind(kind) for kind in measures})
    torch_runs = {kind: [] for kind in torch_kinds}
    results = {"machine": machine(), "settings": spec}
    started = time.time()
    for _ in range(own.rounds):
        for kind in measures:
            runs[kind].append(run_child(sys.executable, bench, f"_measure_{kind}", spec))
        for kind in torch_kinds:
            torch_runs[kind].append(run_child(own.torch_python, script, f"_torch_{kind}", spec))
    for kind in measures:
        ms_result, torch_result = medians(runs[kind]), medians(torch_runs[torch_kind(kind)])
        ratios = {key: ms_result[key] / torch_result[key] for key in RATIO_KEYS
                  if key in ms_result and key in torch_result and torch_result[key]}
        results[kind] = dict(mindspore=ms_result, pytorch=torch_result,
                             ratio_mindspore_over_pytorch=ratios, mindspore_rounds=runs[kind])
    results.update({f"pytorch_{kind}_rounds": torch_runs[kind] for kind in torch_kinds})
    results["machine"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    results["machine"]["wall_s"] = round(time.time() - started)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    run_main(main)
