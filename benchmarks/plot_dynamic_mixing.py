"""Validation SI-SNRi of training runs side by side: one curve per run, against training steps.

Reads the curves.json that train.py writes in each output_dir, plots every run's validation
SI-SNRi (dB) against the number of training steps as one PNG, and prints one JSON object with each
run's steps, training seconds, and first, last and best validation SI-SNRi.

    python train.py --config_path configs/demo_cpu.yaml --data_dir DATA --output_dir out/static
    python train.py --config_path configs/demo_cpu.yaml --data_dir DATA --output_dir out/dm \\
        --dynamic_mixing=true
    python benchmarks/plot_dynamic_mixing.py --run "stored mixtures=out/static" \\
        --run "dynamic mixing=out/dm" --out curves.png [--title TEXT]
"""
import argparse
import json
import os
import sys

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from src.model_utils.atomic import atomic_output  # noqa: E402
from src.training.curves import JSON_NAME  # noqa: E402
from src.model_utils.errors import UserError, run_main  # noqa: E402
from src.data.librimix import read_json  # noqa: E402


def read_run(spec):
    """'label=output_dir' -> (label, rows of its curves.json)."""
    label, sep, folder = spec.partition("=")
    if not sep or not label or not folder:
        raise UserError(f"--run: expected LABEL=OUTPUT_DIR, got {spec!r}")
    rows = read_json(os.path.join(folder, JSON_NAME))
    if not isinstance(rows, list) or not rows or "valid_si_snri" not in rows[0]:
        raise UserError(f"{os.path.join(folder, JSON_NAME)}: expected train.py's list of epoch rows")
    return label, rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", required=True, help="LABEL=OUTPUT_DIR (repeat)")
    parser.add_argument("--out", required=True, help="the PNG to write")
    parser.add_argument("--title", default="Validation SI-SNRi")
    args = parser.parse_args()
    runs = [read_run(spec) for spec in args.run]
    fig = Figure(figsize=(7, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    summary = {}
    for label, rows in runs:
        steps, total = [], 0
        for row in rows:
            total += row["steps"] + row["skipped"]
            steps.append(total)
        scores = [row["valid_si_snri"] for row in rows]
        ax.plot(steps, scores, marker="o", label=label)
        summary[label] = {"epochs": len(rows), "steps": total,
                          "train_seconds": round(sum(r["seconds"] for r in rows), 1),
                          "first_si_snri_db": round(scores[0], 2),
                          "last_si_snri_db": round(scores[-1], 2),
                          "best_si_snri_db": round(max(scores), 2)}
    ax.set(xlabel="training steps", ylabel="validation SI-SNRi (dB)", title=args.title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_output(args.out) as tmp:
        fig.savefig(tmp, format="png")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    run_main(main)
