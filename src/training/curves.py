"""Training curves: one row per epoch, written as CSV, JSON and a PNG plot next to the checkpoints.

A row holds: epoch, steps (updates applied in the epoch), skipped (non-finite steps), train_loss
(mean PIT loss = negative SI-SNR in dB over the applied steps), valid_si_snri (mean SI-SNR
improvement on the validation set, dB), lr (the rate used during the epoch), seconds (time spent
in training steps; the first epoch of a process includes the graph compilation).
"""
import csv
import io
import os

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from src.model_utils.atomic import atomic_output, write_json, write_text

COLUMNS = ("epoch", "steps", "skipped", "train_loss", "valid_si_snri", "lr", "seconds")
CSV_NAME, JSON_NAME, PNG_NAME = "curves.csv", "curves.json", "curves.png"


def write_curves(rows, directory):
    """Write `rows` (list of dicts with COLUMNS) as curves.csv, curves.json and curves.png."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(os.path.join(directory, CSV_NAME), text.getvalue())
    write_json(os.path.join(directory, JSON_NAME), list(rows))
    plot_curves(rows, os.path.join(directory, PNG_NAME))


def plot_curves(rows, path):
    """Train loss and validation SI-SNRi per epoch, side by side, as a PNG."""
    epochs = [r["epoch"] for r in rows]
    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    loss_ax, snr_ax = fig.subplots(1, 2)
    loss_ax.plot(epochs, [r["train_loss"] for r in rows], marker="o")
    loss_ax.set(xlabel="epoch", ylabel="train loss (negative SI-SNR, dB)", title="Training loss")
    snr_ax.plot(epochs, [r["valid_si_snri"] for r in rows], marker="o", color="tab:green")
    snr_ax.set(xlabel="epoch", ylabel="SI-SNRi (dB)", title="Validation SI-SNRi")
    for ax in (loss_ax, snr_ax):
        ax.grid(True, alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png")
