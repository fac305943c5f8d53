"""Throughput of the data pipelines: MindRecord vs JSON lists (WAVs read with soundfile).

Generates a synthetic LibriMix, preprocesses it into both formats, then times full passes of the
training pipeline (random crops, batches), of the training pipeline with dynamic mixing (new
mixtures made from the sources, with speed perturbation and gains), and of the evaluation
pipeline (whole utterances).
Prints one JSON object. cpu_ms_per_mixture is the CPU time of the whole process (all its threads)
per mixture delivered: what the pipeline takes from a training step sharing the cores. MB/s is
the audio read per second: whole utterances (mixture and sources, 16-bit samples as stored), also
for training, which reads whole rows and crops them.

    python benchmarks/bench_loader.py [--mixtures 200] [--epochs 3] [--workers 2] [--work_dir DIR]
        [--speed_perturb [0.95,1.0,1.05]] [--gain_db [-5.0,5.0]]   (the dynamic-mixing pass)
"""
import argparse
import json
import os
import platform
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from src.data.dataset import create_eval_dataset, create_train_dataset  # noqa: E402
from src.data.demo_data import make_demo_librimix  # noqa: E402
from src.model_utils.errors import run_main  # noqa: E402
from src.data.librimix import load_split  # noqa: E402
from src.model_utils.config import load_config  # noqa: E402
from src.data.preparation import prepare_dataset  # noqa: E402


def timed_pass(dataset, epochs):
    """(rows, samples delivered, seconds, CPU seconds of the whole process) over `epochs` passes,
    after one warm-up pass."""
    iterator = dataset.create_tuple_iterator(output_numpy=True, num_epochs=epochs + 1)
    for _ in iterator:   # the first epoch warms up the workers and the page cache
        pass
    rows = samples = 0
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(epochs):
        for mixture, sources, lengths in iterator:
            rows += mixture.shape[0]
            samples += int(lengths.sum()) * (1 + sources.shape[1])
    return rows, samples, time.perf_counter() - start, time.process_time() - cpu_start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mixtures", type=int, default=200, help="training mixtures generated")
    parser.add_argument("--epochs", type=int, default=3, help="timed passes per pipeline")
    parser.add_argument("--workers", type=int, default=2, help="dataset_workers")
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--segment", type=float, default=4.0)
    parser.add_argument("--speed_perturb", default="[0.95,1.0,1.05]", help="with dynamic mixing")
    parser.add_argument("--gain_db", default="[-5.0,5.0]", help="with dynamic mixing")
    parser.add_argument("--work_dir", default="", help="where the set is made (default: a temp dir)")
    args = parser.parse_args()
    work = args.work_dir or tempfile.mkdtemp(prefix="bench_loader_")
    in_dir = make_demo_librimix(os.path.join(work, "librimix"), seed=0,
                                sizes={"train-360": args.mixtures, "dev": 1, "test": 1})
    data_dir = os.path.join(work, "data")
    if not os.path.isdir(os.path.join(data_dir, "train-360")):
        prepare_dataset(load_config([f"--in_dir={in_dir}", f"--out_dir={data_dir}",
                                "--splits=[train-360]"]), log=lambda *_: None)
    index = load_split(data_dir, "train-360", 2, 8000)
    results = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "mixtures": args.mixtures,
               "hours": round(index.info["hours"], 3), "workers": args.workers,
               "batch_size": args.batch_size, "segment_s": args.segment}
    for fmt in ("mindrecord", "json"):
        flags = [f"--data_dir={data_dir}", f"--data_format={fmt}", f"--dataset_workers={args.workers}",
                 f"--batch_size={args.batch_size}", f"--segment={args.segment}"]
        cfg = load_config(flags)
        mixing = load_config(flags + ["--dynamic_mixing=true", f"--speed_perturb={args.speed_perturb}",
                                      f"--gain_db={args.gain_db}"])
        for name, dataset in (("train", create_train_dataset(cfg)),
                              ("train_dynamic_mixing", create_train_dataset(mixing)),
                              ("eval", create_eval_dataset(cfg, "train-360")[0])):
            rows, samples, seconds, cpu_seconds = timed_pass(dataset, args.epochs)
            if name == "train":   # rows are crops of whole utterances: count what was read
                samples = rows * float(index.lengths.mean()) * 3
            results[f"{fmt}_{name}"] = {"mixtures_per_s": round(rows / seconds, 1),
                                        "MB_per_s": round(samples * 2 / seconds / 1e6, 2),
                                        "cpu_ms_per_mixture": round(1000 * cpu_seconds / rows, 2)}
            if name == "train_dynamic_mixing":   # reads whole source utterances, not whole rows
                del results[f"{fmt}_{name}"]["MB_per_s"]
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    run_main(main)
