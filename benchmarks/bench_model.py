"""Speed and memory of the Conv-TasNet cell: training step, inference, exported MINDIR.

Every measurement runs in a fresh process of its own, so that the peak memory (RSS) of one does
not mix with another's, and after its graph compilation and warm-up steps.

    python benchmarks/bench_model.py [--config_path CFG] [--<config key>=<value> ...]
        [--batch 1] [--seconds 2.0] [--repeats 5] [--warmup 1] [--infer_seconds 10.0]
        [--measure framework,train,infer,infer_dynamic,mindir,mindir_static,onnx,onnx_int8]
        [--engine auto] [--threads 0] [--profile]

Measurements (--measure):
    framework      peak RSS with the framework imported and the model built, before any graph
    train          the project's training step (src/training/train_step.py: forward, PIT SI-SNR loss,
                   gradients, clipping, optimizer) on a batch of --batch mixtures of --seconds
    infer          the cell's forward pass on one --infer_seconds mixture (graph compiled for it)
    infer_dynamic  the same through a graph compiled once for any length (set_inputs with a
                   dynamic time axis, as eval.py and separate.py run it)
    mindir         exported with a dynamic time axis (by another process), loaded through
                   nn.GraphCell by a process that builds no cell, as a deployment runs it
    mindir_static  the same, exported for exactly --infer_seconds
    onnx           exported as ONNX with a dynamic time axis (export.py's graph and check, by
                   another process), run by onnxruntime in a process that imports no MindSpore
    onnx_int8      the same model quantized dynamically to int8 (export.py --quantize=dynamic)
--profile adds, per measurement, the operators that took the most time per call (MindSpore's
profiler over --repeats further calls; CPU operator times, fused kernels named GraphKernel_*; the
peak RSS then includes the profiler's).
Config keys are those of default_config.yaml (model sizes, device_target, cpu_graph_kernel, lr,
clip_grad_norm, ...); --engine plain, matmul or kernels overrides the engine chosen by device
(src/model/build.py).

Prints one JSON object: for each measurement the median and minimum seconds over --repeats,
samples_per_s (training mixtures per second), rtf (seconds of compute per second of audio),
first_s (the first call: graph compilation included) and peak_rss_mb; and the machine.
"""
import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from src.model_utils.errors import UserError, run_main  # noqa: E402

MEASUREMENTS = ("framework", "train", "infer", "infer_dynamic", "mindir", "mindir_static", "onnx",
                "onnx_int8")


def bench_arguments(parser):
    """The benchmark's own flags (the rest are config keys)."""
    parser.add_argument("--batch", type=int, default=1, help="training mixtures per step")
    parser.add_argument("--seconds", type=float, default=2.0, help="training mixture length, s")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps or calls")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed steps or calls after the first (compiling) one")
    parser.add_argument("--infer_seconds", type=float, default=10.0,
                        help="length of the inference clip, s")
    parser.add_argument("--threads", type=int, default=0,
                        help="compute threads (0: the framework's default)")
    parser.add_argument("--profile", action="store_true",
                        help="also report the operators that took the most time")
    return parser


def parse_arguments(argv, description):
    """(benchmark args, config argv, measurements) from the command line."""
    parser = bench_arguments(argparse.ArgumentParser(description=description, add_help=False))
    parser.add_argument("--measure", default=",".join(MEASUREMENTS))
    parser.add_argument("--engine", default="auto",
                        choices=["auto", "plain", "matmul", "kernels"])
    args, config_argv = parser.parse_known_args(argv)
    if "-h" in config_argv or "--help" in config_argv:
        parser.print_help()
        sys.exit(0)
    measures = [m for m in args.measure.split(",") if m]
    unknown = [m for m in measures if m not in MEASUREMENTS]
    if unknown:
        raise UserError(f"--measure: expected some of {','.join(MEASUREMENTS)}, got {unknown}")
    for name in ("batch", "repeats"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name}: expected a positive integer, got {getattr(args, name)}")
    for name in ("seconds", "infer_seconds"):
        if getattr(args, name) <= 0:
            raise UserError(f"--{name}: expected a positive duration, got {getattr(args, name)}")
    return args, config_argv, measures


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def timed_calls(call, repeats, warmup):
    """(first call seconds, [seconds of each timed call]); `call` must wait for its result."""
    start = time.perf_counter()
    call()
    first = time.perf_counter() - start
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return first, times


def summary(first, times, **extra):
    return dict(median_s=float(np.median(times)), min_s=float(min(times)), first_s=first,
                times_s=[round(t, 4) for t in times], peak_rss_mb=round(peak_rss_mb()), **extra)


def profile_operators(call, calls, top=12):
    """MindSpore's profiler over `calls` calls: [(operator type, ms per call, kernels per call)]."""
    import csv
    import glob
    from mindspore import Profiler

    with tempfile.TemporaryDirectory() as tmp:
        profiler = Profiler(output_path=tmp)
        for _ in range(calls):
            call()
        profiler.analyse()
        tables = glob.glob(os.path.join(tmp, "**", "cpu_op_type_info_*.csv"), recursive=True)
        if not tables:
            return []
        with open(tables[0], encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    rows.sort(key=lambda r: -float(r["total_compute_time"]))
    return [(r["op_type"][:120], round(float(r["total_compute_time"]) / calls, 2),
             int(r["type_occurrences"]) // calls) for r in rows[:top]]


def measured(call, spec, **extra):
    """timed_calls + summary, and the operator profile when spec["profile"]."""
    first, times = timed_calls(call, spec["repeats"], spec["warmup"])
    result = summary(first, times, **extra)
    if spec.get("profile"):
        result["top_operators_ms_per_call"] = profile_operators(call, spec["repeats"])
    return result


def measured_inference(model_fn, samples, spec, **extra):
    """`measured` of model_fn on one random clip [1, samples], with its real-time factor."""
    clip = np.random.default_rng(0).standard_normal((1, samples)).astype(np.float32)
    result = measured(lambda: model_fn(clip), spec, **extra)
    result["rtf"] = result["median_s"] / spec["infer_seconds"]
    return result


def measure_onnx(kind, spec):
    """onnx / onnx_int8: export (in another process), then onnxruntime alone in this one."""
    from src.deploy.onnx_runtime import load_onnx

    with tempfile.TemporaryDirectory() as tmp:
        exported = run_child(sys.executable, os.path.abspath(__file__), "_measure_export_onnx",
                             {**spec, "export_path": os.path.join(tmp, "model.onnx"),
                              "int8": kind == "onnx_int8"})
        if "error" in exported:
            return exported
        import onnxruntime
        model_fn = load_onnx(exported.pop("path"), spec["threads"])
        rate = model_fn.settings["sample_rate"]
        return measured_inference(model_fn, int(round(spec["infer_seconds"] * rate)),
                                  {**spec, "profile": False}, onnxruntime=onnxruntime.__version__,
                                  **exported)


def export_onnx_model(net, cfg, spec):
    """The float ONNX model of `net` at spec["export_path"] (checked as export.py checks it), and
    with spec["int8"] its dynamic int8 model: {path to measure, its size in MB}."""
    from src.deploy.onnx_export import export_onnx
    from src.deploy.onnx_quantize import quantize_onnx
    from src.deploy.onnx_runtime import SETTINGS

    path, _, _ = export_onnx(net, spec["export_path"], {k: getattr(cfg, k) for k in SETTINGS},
                             lengths=(cfg.sample_rate, cfg.sample_rate * 3 // 2 + 3))
    if spec["int8"]:
        path = quantize_onnx(path, path[:-5] + "_int8.onnx", "dynamic")
    return dict(path=path, file_mb=round(os.path.getsize(path) / 1e6, 2))


def measure_mindspore(kind, spec):
    """One measurement in this process (a child of `main`); returns its result dict."""
    if kind in ("onnx", "onnx_int8"):
        return measure_onnx(kind, spec)
    import mindspore as ms
    from src.model.build import build_network
    from src.deploy.export import export_network, load_mindir
    from src.deploy.inference import dynamic_model_function, model_function
    from src.model_utils.config import load_config
    from src.model_utils.device import init_device
    from src.training.train_step import make_train_step

    cfg = load_config(spec["config_argv"])
    init_device(cfg)
    if spec["threads"]:
        ms.set_context(runtime_num_threads=spec["threads"])
    clip_samples = int(round(spec["infer_seconds"] * cfg.sample_rate))
    if kind in ("mindir", "mindir_static"):
        # As deployed: a process that loads the file and runs it; the export ran in another.
        with tempfile.TemporaryDirectory() as tmp:
            exported = run_child(sys.executable, os.path.abspath(__file__), "_measure_export",
                                 {**spec, "export_path": os.path.join(tmp, "model"),
                                  "export_samples": clip_samples if kind == "mindir_static" else 0})
            if "error" in exported:
                return exported
            model_fn = model_function(load_mindir(exported.pop("path")))
            return measured_inference(model_fn, clip_samples, spec, **exported)
    net = build_network(cfg, None if spec["engine"] == "auto" else spec["engine"])
    rng = np.random.default_rng(0)
    engine = "plain" if not hasattr(net, "kernels") else "kernels" if net.kernels else "matmul"
    info = dict(engine=engine, graph_kernel=bool(
        ms.get_context("enable_graph_kernel")))
    if kind == "framework":
        return dict(peak_rss_mb=round(peak_rss_mb()), **info)
    if kind == "train":
        batch, samples = spec["batch"], int(round(spec["seconds"] * cfg.sample_rate))
        mixture = ms.Tensor(rng.standard_normal((batch, samples)).astype(np.float32))
        sources = ms.Tensor(rng.standard_normal((batch, cfg.n_src, samples)).astype(np.float32))
        lengths = ms.Tensor(np.full((batch,), samples, np.int32))
        step = make_train_step(net, cfg)
        result = measured(lambda: step(mixture, sources, lengths)[0].asnumpy(), spec, **info)
        result["samples_per_s"] = batch / result["median_s"]
        return result
    net.set_train(False)
    if kind == "export_onnx":
        return export_onnx_model(net, cfg, spec)
    if kind == "export":
        # export_network writes MindSpore's operators for the "kernels" engine
        info["engine_exported"] = info.pop("engine").replace("kernels", "matmul")
        return dict(path=export_network(net, spec["export_path"], "MINDIR",
                                        spec["export_samples"], cfg.device_target), **info)
    if kind == "infer":
        model_fn = model_function(net)
    elif kind == "infer_dynamic":
        model_fn = dynamic_model_function(net)
    else:
        raise UserError(f"--measure: unknown measurement {kind}")
    return measured_inference(model_fn, clip_samples, spec, **info)


def run_child(python, script, mode, spec):
    """Run `script --<mode>=<spec json>` with `python`; returns the JSON it prints last."""
    child_env = {**os.environ, "GLOG_v": "3"}
    if spec.get("threads"):
        child_env["OMP_NUM_THREADS"] = str(spec["threads"])
    proc = subprocess.run([python, script, f"--{mode}={json.dumps(spec)}"], capture_output=True,
                          text=True, env=child_env, cwd=ROOT)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]
        return {"error": f"exit {proc.returncode}: {tail}"}
    return json.loads(lines[-1])


def machine():
    """CPU model, cores, memory, load and library versions of this machine."""
    model = platform.processor()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next((line.split(":", 1)[1].strip() for line in out.splitlines()
                      if line.startswith("Model name")), model)
    except OSError:
        pass
    with open("/proc/meminfo", encoding="ascii") as f:
        mem_kb = int(next(line.split()[1] for line in f if line.startswith("MemTotal")))
    return dict(cpu=model, cores=os.cpu_count(), ram_gb=round(mem_kb / 2 ** 20, 1),
                load_average=[round(x, 2) for x in os.getloadavg()],
                python=platform.python_version())


def child_mode(argv, prefix, measure):
    """Run one measurement when `argv` holds run_child's `--<prefix><kind>=<spec json>`.

    Prints measure(kind, spec) as JSON and returns True; returns False for any other command line.
    """
    child = [a for a in argv if a.startswith(f"--{prefix}")]
    if not child:
        return False
    kind, spec = child[0][len(prefix) + 2:].split("=", 1)
    print(json.dumps(measure(kind, json.loads(spec))))
    return True


def child_spec(args, config_argv):
    return dict(config_argv=config_argv, batch=args.batch, seconds=args.seconds,
                repeats=args.repeats, warmup=args.warmup, infer_seconds=args.infer_seconds,
                threads=args.threads, engine=args.engine, profile=args.profile)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if child_mode(argv, "_measure_", measure_mindspore):
        return
    args, config_argv, measures = parse_arguments(argv, __doc__.splitlines()[0])
    from src.model_utils.config import load_config
    load_config(config_argv)  # refuse bad config keys before starting any child
    spec = child_spec(args, config_argv)
    results = {"machine": machine(), "settings": spec}
    for kind in measures:
        results[kind] = run_child(sys.executable, os.path.abspath(__file__),
                                  f"_measure_{kind}", spec)
    results["machine"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    run_main(main)
