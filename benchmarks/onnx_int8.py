"""The float ONNX model against its int8 versions: file size, RTF, peak RSS, SI-SNRi and SDRi.

    python benchmarks/onnx_int8.py --config_path=<train>/config.yaml --ckpt_file=<ckpt> \
        --data_dir=<data> --test_name=test --work_dir=DIR [--keep_float="none;encoder,decoder"] \
        [--seconds=10,60] [--threads=1] [--repeats=3] [--out=results.json]

Exports the checkpoint to ONNX (checked against the network), quantizes it with each scheme of
src/deploy/onnx_quantize.py (the calibrated ones on `calibration_mixtures` training mixtures of
`train_name`) once per keep_float set (`;` between sets, `,` between the node-name prefixes of a
set), scores every model on the whole utterances of `test_name` with the project's evaluation
(src.evaluation), and times each in a process of its own that imports only onnxruntime and numpy
(its peak RSS is then the model's, not MindSpore's) on a clip of each length made of test
mixtures end to end. RTF is the median over `repeats` calls after a warm-up call. Prints a
Markdown table; --out writes JSON.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def child(model, clip, threads, repeats):
    """In a fresh process: RTF and peak RSS of the ONNX `model` on the float32 .npy `clip`."""
    from src.deploy.onnx_runtime import load_onnx

    mixture = np.load(clip)[None]
    model_fn = load_onnx(model, threads)
    model_fn(mixture)                                             # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model_fn(mixture)
        times.append(time.perf_counter() - start)
    rate = model_fn.settings["sample_rate"]
    print(json.dumps({"rtf": float(np.median(times)) / (mixture.shape[-1] / rate),
                      "peak_rss_mb": peak_rss_mb()}))


def peak_rss_mb():
    """This process's peak RSS: VmHWM, which starts anew at exec (Linux keeps ru_maxrss across
    exec, so a child of a large parent would report the parent's peak)."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(model, clip, threads, repeats):
    out = subprocess.run([sys.executable, __file__, "--_child", model, clip, str(threads),
                          str(repeats)], capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def clip_of(dataset_rows, seconds, rate, path):
    """Test mixtures end to end, repeated up to `seconds`; saved as .npy at `path`."""
    audio = np.concatenate(dataset_rows)
    audio = np.tile(audio, int(np.ceil(seconds * rate / len(audio))))[:int(seconds * rate)]
    np.save(path, audio.astype(np.float32))
    return path


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--_child":
        model, clip, threads, repeats = sys.argv[2:6]
        return child(model, clip, int(threads), int(repeats))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work_dir", required=True)
    parser.add_argument("--keep_float", default="none")
    parser.add_argument("--seconds", default="10,60")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="")
    parser.add_argument("--quality", default="true", choices=["true", "false"],
                        help="false: speed and memory only (e.g. random weights of a size)")
    args, config_argv = parser.parse_known_args()

    from src.model_utils.config import load_config
    from src.model_utils.device import init_device
    from src.model.checkpoint import load_network
    from src.data.dataset import create_eval_dataset
    from src.evaluation.evaluate import evaluate
    from src.deploy.onnx_export import export_onnx
    from src.deploy.onnx_quantize import SCHEMES, quantize_onnx, training_mixtures
    from src.deploy.onnx_runtime import SETTINGS, load_onnx

    cfg = load_config(config_argv)
    init_device(cfg)
    os.makedirs(args.work_dir, exist_ok=True)
    net = load_network(cfg)
    float_path, worst, _ = export_onnx(net, os.path.join(args.work_dir, "float.onnx"),
                                       {key: getattr(cfg, key) for key in SETTINGS},
                                       lengths=(cfg.sample_rate,))
    mixtures = training_mixtures(cfg.data_dir, cfg.train_name, cfg.calibration_mixtures,
                                 cfg.segment, cfg.sample_rate)
    models = {"float": float_path}
    for keep in args.keep_float.split(";"):
        prefixes = [] if keep == "none" else keep.split(",")
        for scheme in SCHEMES:
            name = f"{scheme}" + ("" if not prefixes else f" (float: {keep})")
            path = os.path.join(args.work_dir, f"{scheme}_{keep.replace(',', '+')}.onnx")
            models[name] = quantize_onnx(float_path, path, scheme, mixtures, prefixes)

    results = {"machine": f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}",
               "threads": args.threads, "onnx_check": worst, "models": {}}
    dataset, ids = create_eval_dataset(cfg, cfg.test_name)
    test_mixtures = []
    for index, row in enumerate(dataset.create_dict_iterator(num_epochs=1, output_numpy=True)):
        if index >= 20:
            break
        test_mixtures.append(row["mixture"][0, :int(row["lengths"][0])])
    clips = {s: clip_of(test_mixtures, float(s), cfg.sample_rate,
                        os.path.join(args.work_dir, f"clip_{s}s.npy"))
             for s in args.seconds.split(",")}
    for name, path in models.items():
        entry = {"size_mb": os.path.getsize(path) / 1e6, "si_snri": float("nan"),
                 "sdri": float("nan")}
        if args.quality == "true":
            dataset, _ = create_eval_dataset(cfg, cfg.test_name)
            _, summary = evaluate(load_onnx(path, args.threads), dataset, ids, cfg.n_src,
                                  with_sdr=True, align=cfg.L // 2)
            entry.update(si_snri=summary["si_snri"], sdri=summary["sdri"])
        for seconds, clip in clips.items():
            timing = timed(path, clip, args.threads, args.repeats)
            entry[f"rtf_{seconds}s"] = timing["rtf"]
            entry[f"peak_rss_mb_{seconds}s"] = timing["peak_rss_mb"]
        results["models"][name] = entry
        print(name, json.dumps(entry), flush=True)
    base = results["models"]["float"]
    header = ["model", "MB", "SI-SNRi dB", "SDRi dB"] + [
        f"RTF {s} s (x float)" for s in clips] + [f"peak RSS {s} s MB" for s in clips]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, e in results["models"].items():
        cells = [name, f"{e['size_mb']:.2f}", f"{e['si_snri']:.2f}", f"{e['sdri']:.2f}"]
        cells += [f"{e[f'rtf_{s}s']:.3f} ({base[f'rtf_{s}s'] / e[f'rtf_{s}s']:.2f}x)"
                  for s in clips]
        cells += [f"{e[f'peak_rss_mb_{s}s']:.0f}" for s in clips]
        print("| " + " | ".join(cells) + " |")
    if args.out:
        from src.model_utils.atomic import write_json
        write_json(args.out, results)


if __name__ == "__main__":
    main()
