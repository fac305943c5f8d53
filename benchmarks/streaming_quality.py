"""SI-SNRi of a causal checkpoint offline and streamed, on the utterances of a preprocessed split.

    python benchmarks/streaming_quality.py --config_path=train/config.yaml \
        --ckpt_file=train/conv_tasnet-best.ckpt --data_dir=data [--stream_hop_ms=16] \
        [--test_name=test] [--output_dir=DIR]

For every utterance of <data_dir>/<test_name> (the JSON lists preprocess.py writes): the offline
model (MindSpore, the whole utterance in one pass) and the StreamingSeparator (hops of
stream_hop_ms) are scored with the project's SI-SNRi (best permutation); prints the means, the
largest difference between the two outputs, and writes streaming_quality.json to output_dir.
"""
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from src.data.audio import read_audio  # noqa: E402
from src.deploy.stream_runner import hop_samples  # noqa: E402
from src.deploy.streaming import load_streaming_separator  # noqa: E402
from src.evaluation.metrics import si_snri  # noqa: E402
from src.model.checkpoint import load_network  # noqa: E402
from src.model_utils.atomic import write_json  # noqa: E402
from src.model_utils.config import load_config  # noqa: E402
from src.model_utils.errors import run_main  # noqa: E402


def main():
    import mindspore as ms

    cfg = load_config(description=__doc__.splitlines()[0])
    split = os.path.join(cfg.data_dir, cfg.test_name)
    lists = {}
    for name in ["mix"] + [f"s{c + 1}" for c in range(cfg.n_src)]:
        with open(os.path.join(split, f"{name}.json"), encoding="utf-8") as f:
            lists[name] = [path for path, _ in json.load(f)]
    net = load_network(cfg, cfg.ckpt_file)
    hop = hop_samples(cfg)
    rows = []
    for i, path in enumerate(lists["mix"]):
        mixture = read_audio(path)[0].astype(np.float32)
        references = np.stack([read_audio(lists[f"s{c + 1}"][i])[0] for c in range(cfg.n_src)])
        offline = net(ms.Tensor(mixture[None])).asnumpy()[0]
        separator = load_streaming_separator(cfg, cfg.ckpt_file)
        parts = [separator.push(mixture[start:start + hop])
                 for start in range(0, len(mixture), hop)]
        streamed = np.concatenate(parts + [separator.finish()], axis=1)
        rows.append({"mixture": os.path.basename(path),
                     "si_snri_offline": si_snri(offline, references, mixture)[1],
                     "si_snri_streamed": si_snri(streamed, references, mixture)[1],
                     "max_relative_difference": float(np.abs(streamed - offline).max()
                                                      / np.abs(offline).max())})
    summary = {key: float(np.mean([r[key] for r in rows]))
               for key in ("si_snri_offline", "si_snri_streamed")}
    summary["max_relative_difference"] = max(r["max_relative_difference"] for r in rows)
    summary["utterances"], summary["hop_ms"] = len(rows), cfg.stream_hop_ms
    print(json.dumps(summary, indent=1))
    if cfg.output_dir:
        write_json(os.path.join(cfg.output_dir, "streaming_quality.json"),
                   {"summary": summary, "utterances": rows})


if __name__ == "__main__":
    run_main(main)
