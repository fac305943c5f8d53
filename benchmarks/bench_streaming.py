"""Streaming separation with the causal model: compute per hop, real-time factor, memory.

    python benchmarks/bench_streaming.py [--seconds 60] [--hops_ms 8,16,32] [--memory true]
        [--recompute true] [--out results.json] [--<model size>=<value> ...]

Runs on one CPU core (the process is pinned to it, BLAS and MindSpore on one thread), with the
paper's causal configuration by default (N=512, L=16, B=128, H=512, Sc=128, P=3, X=8, R=3,
cLN) and random weights (the compute does not depend on their values):
    stream     StreamingSeparator over a --seconds stream of noise at each hop: per-hop compute
               (median, p99; wall clock and this process's CPU time, which the load of other
               processes on a shared machine does not inflate) and the real-time factor (compute
               over audio time).
    recompute  the other approach: re-running the causal network (MindSpore, the CPU engine,
               one graph for a fixed length) over its receptive field plus one hop, for each hop;
               and the same MindSpore graph on one hop's samples alone, the least a MindSpore call
               per hop costs.
    memory     peak RSS of fresh processes streaming 10 s and 600 s (16-ms hops), the weights
               loaded from a file (no MindSpore model built), peak from VmHWM.
--kernels false streams with numpy alone (the separator's path without a C++ compiler).
Prints one JSON object (also written to --out).
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

# One thread everywhere, set before numpy and MindSpore start their pools.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

PAPER_CAUSAL = dict(N=512, L=16, B=128, H=512, Sc=128, P=3, X=8, R=3, C=2)
RATE = 8000


def build(sizes, seed=0):
    """(MindSpore ConvTasNet on the CPU engine, in eval mode, its parameters as numpy) with random
    weights."""
    import mindspore as ms
    from src.model.build import default_engine
    from src.model.cpu_engine import CpuConvTasNet

    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_seed(seed)
    net = CpuConvTasNet(**sizes, norm_type="cLN", causal=True,
                        kernels=default_engine("CPU") == "kernels")
    net.set_train(False)
    return net, {name: p.asnumpy() for name, p in net.parameters_and_names()}


def separator(sizes, params, kernels=True):
    from src.deploy.streaming import StreamingSeparator
    return StreamingSeparator(params, sizes["L"], sizes["X"], sizes["R"], sizes["C"],
                              kernels=kernels)


def stream(sizes, params, seconds, hop, kernels=True):
    """Per-hop (wall, cpu) seconds of a stream of `seconds` of noise in hops of `hop` samples
    (each hop drawn as it comes: the stream is never held whole, as from a microphone)."""
    rng = np.random.default_rng(0)
    sep = separator(sizes, params, kernels)
    wall, cpu = [], []
    for _ in range(int(seconds * RATE) // hop):
        block = (rng.standard_normal(hop) * 0.1).astype(np.float32)
        w0, c0 = time.perf_counter(), time.process_time()
        sep.push(block)
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return np.array(wall), np.array(cpu)


def hop_summary(times, hop_s):
    return {"median_ms": 1000 * float(np.median(times)),
            "p99_ms": 1000 * float(np.percentile(times, 99)),
            "rtf_median": float(np.median(times)) / hop_s,
            "rtf_total": float(times.sum()) / (len(times) * hop_s)}


def receptive_field_frames(sizes):
    return sizes["R"] * (sizes["P"] - 1) * (2 ** sizes["X"] - 1) + 1


def time_calls(fn, repeats):
    fn()                                   # graph compilation
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return float(np.median(wall)), float(np.median(cpu))


def recompute(net, sizes, hop, repeats):
    """Per-hop seconds (wall, cpu) of the network over its receptive field + one hop, and over
    one hop's samples alone."""
    import mindspore as ms

    S = sizes["L"] // 2
    rf_samples = receptive_field_frames(sizes) * S + hop
    out = {}
    for name, length in (("receptive_field", rf_samples), ("one_hop", hop)):
        x = ms.Tensor(np.random.default_rng(1).standard_normal((1, length)).astype(np.float32))
        wall, cpu = time_calls(lambda: net(x).asnumpy(), repeats)
        out[name] = {"samples": length, "wall_ms": 1000 * wall, "cpu_ms": 1000 * cpu}
    return out


def own_peak_rss_mb():
    """This process's peak RSS since it started (VmHWM; ru_maxrss would also count the parent's
    pages at the fork that started it)."""
    with open("/proc/self/status", encoding="ascii") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def peak_rss_mb(seconds, hop_ms, sizes, params_file, kernels):
    """Peak RSS of a fresh process that loads the parameters from `params_file` (.npz; no
    MindSpore model built in that process) and streams `seconds` in hops of
    `hop_ms`."""
    code = ("import sys; sys.path.insert(0, %r); import numpy as np; "
            "import benchmarks.bench_streaming as b; p = dict(np.load(%r)); "
            "b.stream(%r, p, %r, %d, %r); print(b.own_peak_rss_mb())"
            % (ROOT, params_file, sizes, seconds, int(hop_ms * RATE / 1000), kernels))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, env={**os.environ, "GLOG_v": "3"}, check=True)
    return float(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--hops_ms", default="8,16,32")
    parser.add_argument("--recompute", default="true")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--memory", default="true")
    parser.add_argument("--memory_seconds", default="10,600")
    parser.add_argument("--kernels", default="true",
                        help="false: the separator's numpy path alone, without stream_block.cc")
    parser.add_argument("--out", default="")
    for key, value in PAPER_CAUSAL.items():
        parser.add_argument(f"--{key}", type=int, default=value)
    args = parser.parse_args()
    sizes = {key: getattr(args, key) for key in PAPER_CAUSAL}
    kernels = args.kernels == "true"
    net, params = build(sizes)
    with open("/proc/loadavg", encoding="ascii") as f:
        load_before = f.read().split()[:3]
    result = {"sizes": sizes, "seconds": args.seconds, "kernels": kernels, "machine": {
        "cpu": platform.processor() or platform.machine(), "cores_used": 1,
        "load_average_before": load_before}, "stream": {}, "recompute": {}}
    for hop_ms in [float(h) for h in args.hops_ms.split(",") if h]:
        hop = int(round(hop_ms * RATE / 1000))
        wall, cpu = stream(sizes, params, args.seconds, hop, kernels)
        result["stream"][f"{hop_ms:g}ms"] = {"hop_samples": hop,
                                             "wall": hop_summary(wall, hop / RATE),
                                             "cpu": hop_summary(cpu, hop / RATE)}
        if args.recompute == "true":
            rec = recompute(net, sizes, hop, args.repeats)
            rec["cpu_ratio_recompute_over_stream"] = rec["receptive_field"]["cpu_ms"] / (
                1000 * float(np.median(cpu)))
            result["recompute"][f"{hop_ms:g}ms"] = rec
        print(json.dumps({f"{hop_ms:g}ms": result["stream"][f"{hop_ms:g}ms"],
                          "recompute": result["recompute"].get(f"{hop_ms:g}ms")}),
              file=sys.stderr, flush=True)
    if args.memory == "true":
        with tempfile.TemporaryDirectory() as tmp:
            params_file = os.path.join(tmp, "params.npz")
            np.savez(params_file, **params)
            result["peak_rss_mb"] = {f"{s}s": peak_rss_mb(float(s), 16, sizes, params_file,
                                                          kernels)
                                     for s in args.memory_seconds.split(",")}
    with open("/proc/loadavg", encoding="ascii") as f:
        result["machine"]["load_average_after"] = f.read().split()[:3]
    result["rss_this_process_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
