"""Scoring a separation model on whole utterances: SI-SNR(i) and SDR(i), per utterance and averaged.

SI-SNR uses the numpy reference of `src/evaluation/metrics.py` under the best permutation (PIT); SI-SNRi is
the gain over the mixture itself. SDR is BSS Eval v3 (`mir_eval.separation.bss_eval_sources`,
distortion filters of 512 taps, its own best permutation, as in the Conv-TasNet paper's scoring);
SDRi is the gain over the mixture used as the estimate of every source. Each utterance is
separated alone at its own length (no padding reaches the model), and utterances longer than
`chunk_samples` go through the overlapping-chunk inference of `src/deploy/inference.py`.
"""
import csv
import io
import json
import os
import warnings

import numpy as np

from src.model_utils.atomic import write_json, write_text
from src.data.audio import write_audio
from src.model_utils.errors import UserError
from src.deploy.inference import dynamic_model_function, separate_in_chunks
from src.evaluation.metrics import si_snri

CSV_COLUMNS = ("id", "length", "si_snr", "si_snri", "sdr", "sdri")
RESULTS_CSV = "eval_results.csv"
SUMMARY_JSON = "eval_summary.json"


def sdr_improvement(estimates, references, mixture):
    """BSS Eval v3 SDR of estimates [C, T] against references [C, T], and its gain over mixture [T].

    Returns (sdr_mean, sdri_mean) in dB. Raises ValueError (mir_eval's) for a silent signal, for
    which SDR is undefined.
    """
    from mir_eval.separation import bss_eval_sources
    references = np.asarray(references, np.float64)
    mixtures = np.broadcast_to(np.asarray(mixture, np.float64), references.shape)
    with warnings.catch_warnings():
        # mir_eval 0.8 marks bss_eval_sources deprecated (the requirements pin 0.8.2); it is the
        # reference implementation of BSS Eval v3 that published SDR numbers use.
        warnings.simplefilter("ignore", FutureWarning)
        sdr = bss_eval_sources(references, np.asarray(estimates, np.float64))[0]
        baseline = bss_eval_sources(references, mixtures, compute_permutation=False)[0]
    return float(sdr.mean()), float((sdr - baseline).mean())


def score_utterance(estimates, references, mixture, with_sdr=True):
    """Scores of one utterance: estimates [C, T], references [C, T], mixture [T].

    Returns (scores, reordered): scores is a dict with si_snr, si_snri (and sdr, sdri when
    with_sdr), means over the C sources in dB; reordered [C, T] are the estimates in the order of
    the references (best SI-SNR permutation).
    """
    mean_si_snr, mean_si_snri, perm = si_snri(estimates, references, mixture)
    scores = {"si_snr": mean_si_snr, "si_snri": mean_si_snri}
    if with_sdr:
        scores["sdr"], scores["sdri"] = sdr_improvement(estimates, references, mixture)
    return scores, np.asarray(estimates)[perm]


def iterate_utterances(dataset, ids=None):
    """(id, mixture [T], references [C, T]) of each utterance of a dataset of batches.

    The dataset has columns mixture [batch, T], sources [batch, C, T], lengths [batch]; padding
    beyond each length is cut off. `ids` names the utterances in order (default: their index).
    """
    index = 0
    for batch in dataset.create_dict_iterator(num_epochs=1, output_numpy=True):
        for row in range(len(batch["lengths"])):
            length = int(batch["lengths"][row])
            utt_id = str(ids[index]) if ids is not None and index < len(ids) else str(index)
            yield (utt_id, batch["mixture"][row, :length].astype(np.float32),
                   batch["sources"][row, :, :length].astype(np.float32))
            index += 1


def evaluate(net, dataset, ids=None, n_src=None, with_sdr=True, chunk_samples=0,
             overlap_samples=0, align=1, progress=False, on_utterance=None, done=None,
             on_row=None):
    """Separate and score every utterance of `dataset`.

    Args:
        net: a cell (ConvTasNet, nn.GraphCell) or a model_fn (numpy [1, t] -> [1, C, t]). A
            cell in training mode is evaluated in inference mode and put back afterwards.
        dataset: mindspore dataset with columns mixture [b, T], sources [b, C, T], lengths [b]
            (src.data.dataset.create_eval_dataset).
        ids: utterance names in dataset order.
        n_src: the number of sources the model gives; a dataset with another number is an error.
        with_sdr: also compute SDR and SDRi (BSS Eval v3; slower than SI-SNR).
        chunk_samples, overlap_samples, align: utterances longer than chunk_samples (> 0) are
            separated in overlapping chunks (src.deploy.inference.separate_in_chunks).
        progress: show a tqdm progress bar.
        on_utterance: called as on_utterance(index, id, mixture [T], estimates [C, T]) with the
            estimates in the references' order.
        done: {id: row} of utterances scored before (a resumed run): taken as they are.
        on_row: called with each new row once it is complete.
    Returns:
        (rows, summary): rows is a list of dicts with keys CSV_COLUMNS (sdr, sdri None without
        SDR), length in samples; summary holds their means, the number of utterances and the
        total length in samples.
    """
    was_training = getattr(net, "training", False)
    if was_training:
        net.set_train(False)
    try:
        return _evaluate(dynamic_model_function(net), dataset, ids, n_src, with_sdr, chunk_samples,
                         overlap_samples, align, progress, on_utterance, done, on_row)
    finally:
        if was_training:
            net.set_train(True)   # a training loop's network goes back to training mode


def _evaluate(model_fn, dataset, ids, n_src, with_sdr, chunk_samples, overlap_samples, align,
              progress, on_utterance, done, on_row):
    total = len(ids) if ids is not None else None
    utterances = iterate_utterances(dataset, ids)
    if progress:
        from tqdm import tqdm
        utterances = tqdm(utterances, total=total, desc="evaluating", unit="utt")
    rows = []
    for index, (utt_id, mixture, references) in enumerate(utterances):
        if done and utt_id in done:
            rows.append(done[utt_id])
            continue
        if n_src is not None and references.shape[0] != n_src:
            raise UserError(f"n_src: the model separates {n_src} sources but utterance {utt_id} "
                            f"has {references.shape[0]}")
        estimates = separate_in_chunks(model_fn, mixture, chunk_samples, overlap_samples, align)
        try:
            scores, reordered = score_utterance(estimates, references, mixture, with_sdr)
        except ValueError as err:
            raise UserError(f"utterance {utt_id}: SDR is undefined ({str(err).split('.')[0]}); "
                            "score without it (--eval_sdr=false)") from None
        rows.append({"id": utt_id, "length": int(len(mixture)), "si_snr": scores["si_snr"],
                     "si_snri": scores["si_snri"], "sdr": scores.get("sdr"),
                     "sdri": scores.get("sdri")})
        if on_utterance is not None:
            on_utterance(index, utt_id, mixture, reordered)
        if on_row is not None:
            on_row(rows[-1])
    return rows, summarize(rows)


def summarize(rows):
    """Means of the per-utterance scores: {'utterances', 'samples', 'si_snr', 'si_snri', 'sdr', 'sdri'}."""
    if not rows:
        raise UserError("the evaluation set is empty")
    summary = {"utterances": len(rows), "samples": int(sum(r["length"] for r in rows))}
    for key in ("si_snr", "si_snri", "sdr", "sdri"):
        values = [r[key] for r in rows if r[key] is not None]
        summary[key] = float(np.mean(values)) if values else None
    return summary


def write_results(directory, rows, summary, extra=None):
    """Write the rows as CSV and the summary (plus `extra`, e.g. the checkpoint) as JSON, atomically.

    Returns (csv_path, json_path).
    """
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{row[k]:.4f}" if isinstance(row[k], float) else
                             ("" if row[k] is None else row[k])) for k in CSV_COLUMNS})
    csv_path = os.path.join(directory, RESULTS_CSV)
    json_path = os.path.join(directory, SUMMARY_JSON)
    write_text(csv_path, out.getvalue())
    write_json(json_path, {**summary, **(extra or {})})
    return csv_path, json_path


def summary_line(summary):
    """One line for the log: 'SI-SNR ... dB, SI-SNRi ... dB[, SDR ..., SDRi ...] over n utterances'."""
    parts = [f"SI-SNR {summary['si_snr']:.2f} dB", f"SI-SNRi {summary['si_snri']:.2f} dB"]
    if summary.get("sdri") is not None:
        parts += [f"SDR {summary['sdr']:.2f} dB", f"SDRi {summary['sdri']:.2f} dB"]
    return ", ".join(parts) + f" over {summary['utterances']} utterances"



class Journal:
    """The rows scored so far, appended to a file as they come, so that a killed run resumes.

    The first line records what the rows depend on (`key`); a journal with another key, or none,
    starts afresh. A last line cut off by a kill is ignored.
    """

    def __init__(self, path, key):
        self.path, self.key = path, key
        self.done = {}
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
            if lines and _loads(lines[0]) == key:
                for line in lines[1:]:
                    row = _loads(line)
                    if isinstance(row, dict) and set(row) == set(CSV_COLUMNS):
                        self.done[row["id"]] = row
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        write_text(path, "".join(json.dumps(x) + "\n" for x in [key, *self.done.values()]))
        self.file = open(path, "a", encoding="utf-8")

    def append(self, row):
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()

    def finish(self):
        self.file.close()
        os.remove(self.path)


def _loads(line):
    try:
        return json.loads(line)
    except ValueError:
        return None


def wav_writer(directory, count, sample_rate):
    """on_utterance that writes the estimates of the first `count` utterances as <id>_s<j>.wav."""
    def write(index, utt_id, mixture, estimates):
        if index < count:
            for j, signal in enumerate(estimates, 1):
                write_audio(os.path.join(directory, f"{utt_id}_s{j}.wav"), signal, sample_rate,
                            subtype="FLOAT")
    return write


def run_evaluation(cfg, log=print):
    """eval.py: score cfg.ckpt_file on the split cfg.test_name of cfg.data_dir.

    Writes eval_results.csv, eval_summary.json (and with save_wav, wav/) into
    <output_dir>/eval_<test_name>/. Returns (rows, summary).
    """
    from src.model.checkpoint import load_network
    from src.data.dataset import create_eval_dataset
    from src.deploy.inference import chunk_settings

    if cfg.save_wav < 0:
        raise UserError(f"save_wav: expected a number of utterances >= 0, got {cfg.save_wav}")
    chunk, overlap, align = chunk_settings(cfg, "chunk_seconds")
    net = load_network(cfg)
    dataset, ids = create_eval_dataset(cfg, cfg.test_name)
    eval_dir = os.path.join(cfg.output_dir, f"eval_{cfg.test_name}")
    ckpt = os.path.abspath(cfg.ckpt_file)
    key = {"ckpt_file": ckpt, "ckpt_mtime": os.path.getmtime(ckpt),
           "data_dir": os.path.abspath(cfg.data_dir), "test_name": cfg.test_name,
           "eval_sdr": cfg.eval_sdr, "chunk_samples": chunk, "overlap_samples": overlap}
    journal = Journal(os.path.join(eval_dir, ".eval_progress.jsonl"), key)
    if journal.done:
        log(f"resuming: {len(journal.done)} of {len(ids)} utterances already scored")
    rows, summary = evaluate(net, dataset, ids, cfg.n_src, cfg.eval_sdr, chunk, overlap,
                             align=align, progress=True, done=journal.done,
                             on_utterance=wav_writer(os.path.join(eval_dir, "wav"),
                                                     cfg.save_wav, cfg.sample_rate),
                             on_row=journal.append)
    csv_path, json_path = write_results(eval_dir, rows, summary,
                                        {"ckpt_file": ckpt, "test_name": cfg.test_name,
                                         "chunk_seconds": cfg.chunk_seconds})
    journal.finish()
    log(f"{cfg.test_name}: {summary_line(summary)}")
    log(f"per-utterance scores: {csv_path}; summary: {json_path}")
    return rows, summary
