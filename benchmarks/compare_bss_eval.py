"""BSS Eval v3 (SDR, SIR, SAR, SDRi) by fast-bss-eval against mir_eval: agreement in dB and time.

    python benchmarks/compare_bss_eval.py --work_dir /tmp/bss [--speech_dir DIR] [--out JSON]

Three sets of utterances, each scored as eval.py scores it (estimates with the best permutation,
the mixture as the baseline of SDRi, 512-tap distortion filters):
- demo: the test split of the synthetic demo LibriMix (make_demo_data.py, 30 mixtures of 2-6 s),
  separated by a randomly initialised network of configs/demo_cpu.yaml (poor, model-like output);
- demo_graded: the same mixtures with estimates made of each reference, a share of the other
  source and noise, at signal-to-distortion ratios of 0-20 dB (the range of trained models);
- speech: with --speech_dir, pairs of real utterances from a folder of speech files (any rate,
  resampled to 8 kHz), mixed at random levels, with graded estimates as above.
Each library runs every utterance once, in turns; times are wall-clock seconds on this process.
"""
import argparse
import glob
import json
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

RATE = 8000


def demo_split(work_dir):
    """[(mixture [T], references [2, T])] of the demo test split."""
    import soundfile as sf
    from src.data.demo_data import make_demo_librimix
    root = make_demo_librimix(os.path.join(work_dir, "demo"), seed=0,
                              sizes={"train-360": 1, "dev": 1, "test": 30})
    items = []
    for mix_path in sorted(glob.glob(os.path.join(root, "test", "mix_clean", "*.wav"))):
        name = os.path.basename(mix_path)
        refs = np.stack([sf.read(os.path.join(root, "test", s, name))[0] for s in ("s1", "s2")])
        items.append((sf.read(mix_path)[0], refs))
    return items


def speech_pairs(speech_dir, count, rng):
    """count mixtures of two real utterances at 8 kHz (cut to the shorter, random levels)."""
    from src.data.audio import read_audio
    files = sorted(glob.glob(os.path.join(speech_dir, "*.flac")) +
                   glob.glob(os.path.join(speech_dir, "*.wav")))
    items = []
    for k in range(count):
        a, b = (read_audio(files[i], RATE, resample=True)[0] for i in (2 * k, 2 * k + 1))
        n = min(len(a), len(b), 6 * RATE)
        refs = np.stack([a[:n], b[:n]]).astype(np.float64)
        refs *= (10 ** (rng.uniform(-5, 5, 2) / 20) / np.std(refs, axis=1))[:, None] * 0.05
        items.append((refs.sum(axis=0), refs))
    return items


def graded(items, rng):
    """Estimates of each reference with leakage and noise at 0-20 dB, scaled and swapped."""
    out = []
    for mixture, refs in items:
        n = refs.shape[1]
        snr = rng.uniform(0, 20, 2)
        level = np.std(refs, axis=1) * 10 ** (-snr / 20)
        est = refs + 0.5 * level[:, None] * refs[::-1] / np.std(refs, axis=1)[::-1, None]
        est += level[:, None] * rng.standard_normal((2, n))
        out.append((mixture, refs, (est * rng.uniform(0.1, 30, 2)[:, None])[::-1]))
    return out


def random_network(items):
    """Estimates of a randomly initialised configs/demo_cpu.yaml network."""
    import mindspore as ms
    from src.model.build import build_network
    from src.model_utils.config import load_config
    cfg = load_config(["--config_path=configs/demo_cpu.yaml"])
    ms.set_seed(0)
    net = build_network(cfg)
    net.set_train(False)
    return [(m, r, net(ms.Tensor(m[None].astype(np.float32))).asnumpy()[0].astype(np.float64))
            for m, r in items]


def score(library, refs, est, mixture):
    """(sdr, sir, sar, sdri) arrays [C] with `library`, as eval.py computes them."""
    mixtures = np.broadcast_to(mixture, refs.shape)
    if library == "mir_eval":
        from mir_eval.separation import bss_eval_sources
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            sdr, sir, sar, _ = bss_eval_sources(refs, est)
            base = bss_eval_sources(refs, mixtures, compute_permutation=False)[0]
    else:
        import fast_bss_eval
        kwargs = dict(filter_length=512, use_cg_iter=None, zero_mean=False, clamp_db=None)
        sdr, sir, sar, _ = fast_bss_eval.bss_eval_sources(refs, est, **kwargs)
        base = fast_bss_eval.bss_eval_sources(refs, mixtures, compute_permutation=False,
                                              **kwargs)[0]
    return np.stack([sdr, sir, sar, sdr - base])


def compare(items):
    times = {"mir_eval": 0.0, "fast_bss_eval": 0.0}
    diffs, means = [], {k: [] for k in times}
    for mixture, refs, est in items:
        results = {}
        for library in times:
            start = time.perf_counter()
            results[library] = score(library, refs, est, mixture)
            times[library] += time.perf_counter() - start
            means[library].append(results[library].mean(axis=1))
        diffs.append(np.abs(results["mir_eval"] - results["fast_bss_eval"]).max(axis=1))
    diffs = np.array(diffs)                    # [utterances, (sdr, sir, sar, sdri)]
    return {"utterances": len(items), "seconds_of_audio": sum(len(m) for m, _, _ in items) / RATE,
            "max_abs_diff_db": dict(zip(("sdr", "sir", "sar", "sdri"),
                                        np.round(diffs.max(axis=0), 6).tolist())),
            "mean_scores_mir_eval": dict(zip(("sdr", "sir", "sar", "sdri"),
                                             np.round(np.mean(means["mir_eval"], 0), 3).tolist())),
            "time_s": {k: round(v, 2) for k, v in times.items()},
            "speedup": round(times["mir_eval"] / times["fast_bss_eval"], 2)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work_dir", required=True)
    parser.add_argument("--speech_dir", default="")
    parser.add_argument("--speech_pairs", type=int, default=15)
    parser.add_argument("--out", default="benchmarks/results/compare_bss_eval.json")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    demo = demo_split(args.work_dir)
    report = {"demo": compare(random_network(demo))}
    print(json.dumps(report), flush=True)
    report["demo_graded"] = compare(graded(demo, rng))
    print(json.dumps(report), flush=True)
    if args.speech_dir:
        report["speech"] = compare(graded(speech_pairs(args.speech_dir, args.speech_pairs, rng),
                                          rng))
    from importlib.metadata import version
    report["versions"] = {name: version(name) for name in ("fast-bss-eval", "mir_eval", "numpy")}
    report["load_average"] = os.getloadavg()
    print(json.dumps(report, indent=1))
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
