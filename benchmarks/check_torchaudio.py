"""The torchaudio conversion against the real torchaudio library, at the paper's size (run by hand).

    python benchmarks/check_torchaudio.py --torch_python PATH [--out FILE.json]

torch and torchaudio are not project dependencies; they live in an environment of their own
(about 7 GB with torch's CUDA libraries), whose interpreter is --torch_python:

    python3 -m venv venv-torchaudio
    venv-torchaudio/bin/pip install torch==2.9.1 'numpy<2'
    venv-torchaudio/bin/pip install torch==2.9.1 'torchaudio==2.9.*'

In that interpreter (this script with --make DIR) torchaudio builds `conv_tasnet_base()` (N=512,
L=16, B=128, H=512, P=3, X=8, R=3, C=2, relu masks: the model of its CONVTASNET_BASE_LIBRI2MIX
bundle) with every weight randomized as tests/fixtures/make_fixtures.py does (norm gains and PReLU
slopes included), saves its state_dict, and runs it in eval mode on random mixtures of several
lengths (RMS 0.1, as speech at -20 dBFS). Here, in the project's environment, convert_pytorch.py's
converter turns the state_dict into a checkpoint and recipe (default flags: X=8,
mask_nonlinear=relu), the project's network runs the same mixtures, and the largest absolute
difference is compared with the tolerance (1e-4). Prints one JSON object (also written to --out)
and exits 1 when the outputs differ by more.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LENGTHS = (8000, 12345)     # 1 s and a length that is no multiple of the stride
TOLERANCE = 1e-4            # largest absolute difference allowed, on audio-level input
LEVEL = 0.1                 # input RMS (-20 dBFS, speech-like): outputs grow with the input


def make(out_dir):
    """In the torch environment: the randomized torchaudio model's state_dict and outputs."""
    import torch
    import torchaudio
    sys.path.insert(0, os.path.join(ROOT, "tests", "fixtures"))
    from make_fixtures import randomize

    torch.manual_seed(0)
    model = torchaudio.models.conv_tasnet_base()
    randomize(model, 7)
    model.eval()
    torch.save(model.state_dict(), os.path.join(out_dir, "conv_tasnet_base.pth"))
    rng = np.random.default_rng(7)
    arrays = {}
    for length in LENGTHS:
        mixture = (LEVEL * rng.standard_normal((2, length))).astype(np.float32)
        with torch.no_grad():
            arrays[f"mixture_{length}"] = mixture
            arrays[f"estimates_{length}"] = model(torch.from_numpy(mixture).unsqueeze(1)).numpy()
    np.savez(os.path.join(out_dir, "io.npz"), **arrays)
    with open(os.path.join(out_dir, "versions.json"), "w", encoding="utf-8") as f:
        json.dump({"torch": torch.__version__, "torchaudio": torchaudio.__version__,
                   "parameters": sum(p.numel() for p in model.parameters())}, f)


def compare(torch_python, out):
    sys.path.insert(0, ROOT)
    import src.model_utils.quiet  # noqa: F401
    import mindspore as ms
    from src.model.checkpoint import load_network
    from src.model.convert import convert
    from src.model_utils.config import load_config

    with tempfile.TemporaryDirectory() as work:
        subprocess.run([torch_python, os.path.abspath(__file__), "--make", work], check=True)
        with open(os.path.join(work, "versions.json"), encoding="utf-8") as f:
            result = json.load(f)
        ckpt = os.path.join(work, "converted.ckpt")
        kind, settings, assumed, recipe = convert(os.path.join(work, "conv_tasnet_base.pth"), ckpt,
                                                  load_config([]))
        net = load_network(load_config([f"--config_path={recipe}"]), ckpt)
        io = np.load(os.path.join(work, "io.npz"))
        result.update(kind=kind, settings={k: settings[k] for k in sorted(settings)},
                      assumed=list(assumed), tolerance=TOLERANCE, lengths={})
        for length in LENGTHS:
            reference = io[f"estimates_{length}"]
            estimates = net(ms.Tensor(io[f"mixture_{length}"])).asnumpy()
            result["lengths"][str(length)] = {
                "shape": list(estimates.shape), "reference_shape": list(reference.shape),
                "max_abs_diff": float(np.abs(estimates - reference).max())
                if estimates.shape == reference.shape else None,
                "reference_max_abs": float(np.abs(reference).max())}
            if estimates.shape == reference.shape:
                entry = result["lengths"][str(length)]
                entry["max_rel_diff"] = entry["max_abs_diff"] / entry["reference_max_abs"]
    diffs = [v["max_abs_diff"] for v in result["lengths"].values()]
    result["passed"] = all(d is not None and d <= TOLERANCE for d in diffs)
    text = json.dumps(result, indent=1)
    print(text)
    if out:
        with open(out, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    return result["passed"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch_python", help="interpreter of the environment with torchaudio")
    parser.add_argument("--out", default="", help="also write the JSON result here")
    parser.add_argument("--make", metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make:
        make(args.make)
        return
    if not args.torch_python:
        parser.error("--torch_python: expected the interpreter of the torchaudio environment")
    sys.exit(0 if compare(args.torch_python, args.out) else 1)


if __name__ == "__main__":
    main()
