"""Scoring a separation model on whole utterances: SI-SNR(i), SDR(i), SIR, SAR, STOI, ESTOI, PESQ.

SI-SNR uses the numpy reference of `src/evaluation/metrics.py` under the best permutation (PIT); SI-SNRi is
the gain over the mixture itself. SDR, SIR and SAR are BSS Eval v3 (src/evaluation/scores.py:
distortion filters of 512 taps, its own best permutation, as in the Conv-TasNet paper's scoring);
SDRi is the gain over the mixture used as the estimate of every source. STOI, ESTOI and PESQ
score the estimates in the SI-SNR order, and the mixture itself as their baseline (`<name>_mix`).
Scores are those of the network's own output (every one of them is invariant to a gain per
source, see src/deploy/output_level.py); what is written as audio is rescaled. Each utterance is
separated alone at its own length (no padding reaches the model), and utterances longer than
`chunk_samples` go through the overlapping-chunk inference of `src/deploy/inference.py`.
"""
import csv
import io
import json
import os

import numpy as np

from src.model_utils.atomic import write_json, write_text
from src.data.audio import write_audio
from src.model_utils.errors import UserError
from src.model_utils.progress import progress_bar
from src.deploy.inference import dynamic_model_function, separate_in_chunks
from src.deploy.output_level import match_mixture_level
from src.evaluation.metrics import EPS, si_snri
from src.evaluation.scores import BSS_METRICS, bss_eval, check_metrics, extra_scores

CSV_COLUMNS = ("id", "length", "si_snr", "si_snri", "sdr", "sdri")
# written after CSV_COLUMNS when the metrics asked for them were computed
EXTRA_COLUMNS = ("sir", "sar", "stoi", "stoi_mix", "estoi", "estoi_mix", "pesq", "pesq_mix")
RESULTS_CSV = "eval_results.csv"
SUMMARY_JSON = "eval_summary.json"


def sdr_improvement(estimates, references, mixture, with_sir_sar=False):
    """BSS Eval v3 SDR of estimates [C, T] against references [C, T], and its gain over mixture [T].

    Returns (sdr_mean, sdri_mean) in dB, and with_sir_sar also (sir_mean, sar_mean). Raises
    ValueError for a silent signal, for which SDR is undefined.
    """
    references = np.asarray(references, np.float64)
    mixtures = np.broadcast_to(np.asarray(mixture, np.float64), references.shape)
    sdr, sir, sar = bss_eval(references, estimates)
    baseline = bss_eval(references, mixtures, compute_permutation=False)[0]
    means = (float(sdr.mean()), float((sdr - baseline).mean()))
    return means + (float(sir.mean()), float(sar.mean())) if with_sir_sar else means


def has_silent_reference(references):
    """True when a reference source of references [C, T] has no energy (after removing its mean)."""
    references = np.asarray(references, np.float64)
    centred = references - references.mean(axis=-1, keepdims=True)
    return bool(((centred ** 2).sum(axis=-1) <= EPS).any())


def score_utterance(estimates, references, mixture, with_sdr=True, metrics=("sdr",),
                    sample_rate=None):
    """Scores of one utterance: estimates [C, T], references [C, T], mixture [T].

    with_sdr: compute BSS Eval (sdr, sdri; sir, sar when in `metrics`); metrics: names of
    src.evaluation.scores.METRICS; sample_rate: needed for stoi, estoi and pesq.
    Returns (scores, reordered): scores is a dict with si_snr, si_snri (and the others
    computed), means over the C sources (dB; STOI 0-1; PESQ MOS); reordered [C, T] are the
    estimates in the order of the references (best SI-SNR permutation).
    """
    mean_si_snr, mean_si_snri, perm = si_snri(estimates, references, mixture)
    reordered = np.asarray(estimates)[perm]
    if has_silent_reference(references):
        # SI-SNR against silence is the -80 dB floor of EPS, not a score; SDR is undefined.
        return dict.fromkeys(("si_snr", "si_snri") + (("sdr", "sdri") if with_sdr else ())), \
            reordered
    scores = {"si_snr": mean_si_snr, "si_snri": mean_si_snri}
    if with_sdr and set(BSS_METRICS) & set(metrics):
        # one BSS Eval call gives all three; SIR and SAR are reported where asked for
        sdr, sdri, sir, sar = sdr_improvement(estimates, references, mixture, with_sir_sar=True)
        scores.update(sdr=sdr, sdri=sdri)
        scores.update({k: v for k, v in (("sir", sir), ("sar", sar)) if k in metrics})
    scores.update(extra_scores(reordered, references, mixture, metrics, sample_rate))
    return scores, reordered


def make_row(utt_id, length, scores):
    """The result row of one utterance: CSV_COLUMNS (None where not computed) and extra scores."""
    row = {"id": utt_id, "length": int(length)}
    row.update({k: scores.get(k) for k in CSV_COLUMNS[2:]})
    row.update({k: scores[k] for k in EXTRA_COLUMNS if k in scores})
    return row


def iterate_utterances(dataset, ids=None):
    """(id, mixture [T], references [C, T]) of each utterance of a dataset of batches.

    The dataset has columns mixture [batch, T], sources [batch, C, T], lengths [batch]; padding
    beyond each length is cut off. `ids` names the utterances in order (default: their index).
    """
    from src.data.dataset import read_rows
    index = 0
    for batch in read_rows(dataset, num_epochs=1, output_numpy=True):
        for row in range(len(batch["lengths"])):
            length = int(batch["lengths"][row])
            utt_id = str(ids[index]) if ids is not None and index < len(ids) else str(index)
            yield (utt_id, batch["mixture"][row, :length].astype(np.float32),
                   batch["sources"][row, :, :length].astype(np.float32))
            index += 1


def evaluate(net, dataset, ids=None, n_src=None, with_sdr=True, chunk_samples=0,
             overlap_samples=0, align=1, progress=False, on_utterance=None, done=None,
             on_row=None, metrics=("sdr",), sample_rate=None):
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
        progress: show progress (src.model_utils.progress: a bar on a terminal, lines in a file).
        on_utterance: called as on_utterance(index, id, mixture [T], estimates [C, T]) with the
            estimates in the references' order.
        done: {id: row} of utterances scored before (a resumed run): taken as they are.
        on_row: called with each new row once it is complete.
        metrics, sample_rate: the scores besides SI-SNR (score_utterance).
    Returns:
        (rows, summary): rows is a list of dicts with keys CSV_COLUMNS (sdr, sdri None without
        SDR) and the EXTRA_COLUMNS computed, length in samples; summary holds their means, the
        number of utterances and the total length in samples.
    """
    was_training = getattr(net, "training", False)
    if was_training:
        net.set_train(False)
    try:
        return _evaluate(dynamic_model_function(net), dataset, ids, n_src, with_sdr, chunk_samples,
                         overlap_samples, align, progress, on_utterance, done, on_row,
                         check_metrics(metrics, sample_rate), sample_rate)
    finally:
        if was_training:
            net.set_train(True)   # a training loop's network goes back to training mode


def _evaluate(model_fn, dataset, ids, n_src, with_sdr, chunk_samples, overlap_samples, align,
              progress, on_utterance, done, on_row, metrics, sample_rate):
    total = len(ids) if ids is not None else None
    utterances = iterate_utterances(dataset, ids)
    if progress:
        utterances = progress_bar(utterances, total=total, desc="evaluating", unit="utt")
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
            scores, reordered = score_utterance(estimates, references, mixture, with_sdr,
                                                metrics, sample_rate)
        except ValueError as err:
            raise UserError(f"utterance {utt_id}: SDR is undefined ({str(err).split('.')[0]}); "
                            "score without it (--eval_sdr=false)") from None
        rows.append(make_row(utt_id, len(mixture), scores))
        if on_utterance is not None:
            on_utterance(index, utt_id, mixture, reordered)
        if on_row is not None:
            on_row(rows[-1])
    return rows, summarize(rows)


def summarize(rows):
    """Means of the per-utterance scores: {'utterances', 'samples', 'silent_references', 'si_snr',
    'si_snri', 'sdr', 'sdri'}; utterances with a silent reference (scores None) are counted in
    'silent_references' and left out of the means."""
    if not rows:
        raise UserError("the evaluation set is empty")
    silent = sum(r["si_snr"] is None for r in rows)
    if silent == len(rows):
        raise UserError(f"every one of the {len(rows)} utterances has a silent reference source; "
                        "nothing to score")
    summary = {"utterances": len(rows), "samples": int(sum(r["length"] for r in rows)),
               "silent_references": silent}
    for key in ("si_snr", "si_snri", "sdr", "sdri"):
        values = [r[key] for r in rows if r[key] is not None]
        summary[key] = float(np.mean(values)) if values else None
    for key in EXTRA_COLUMNS:      # only the extra scores that were computed
        values = [r[key] for r in rows if r.get(key) is not None]
        if any(key in r for r in rows):
            summary[key] = float(np.mean(values)) if values else None
    return summary


def write_results(directory, rows, summary, extra=None):
    """Write the rows as CSV and the summary (plus `extra`, e.g. the checkpoint) as JSON, atomically.

    Returns (csv_path, json_path).
    """
    out = io.StringIO()
    columns = CSV_COLUMNS + tuple(k for k in EXTRA_COLUMNS if any(k in r for r in rows))
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{row.get(k):.4f}" if isinstance(row.get(k), float) else
                             ("" if row.get(k) is None else row[k])) for k in columns})
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
    parts += [f"{label} {summary[key]:{fmt}}{unit}" for key, label, fmt, unit in _EXTRA_LINE
              if summary.get(key) is not None]
    silent = summary.get("silent_references", 0)
    left_out = f" ({silent} with a silent reference left out)" if silent else ""
    return ", ".join(parts) + f" over {summary['utterances'] - silent} utterances{left_out}"


_EXTRA_LINE = (("sir", "SIR", ".2f", " dB"), ("sar", "SAR", ".2f", " dB"),
               ("stoi", "STOI", ".3f", ""), ("stoi_mix", "(mixture", ".3f", ")"),
               ("estoi", "ESTOI", ".3f", ""), ("estoi_mix", "(mixture", ".3f", ")"),
               ("pesq", "PESQ", ".2f", ""), ("pesq_mix", "(mixture", ".2f", ")"))



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
                    if isinstance(row, dict) and set(CSV_COLUMNS) <= set(row):
                        self.done[row["id"]] = row
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        write_text(path, "".join(json.dumps(x) + "\n" for x in [key, *self.done.values()]))
        self.file = open(path, "a", encoding="utf-8")

    def append(self, row):
        try:
            self.file.write(json.dumps(row) + "\n")
            self.file.flush()
        except OSError as err:          # a full disk: name the file
            raise OSError(err.errno, err.strerror, self.path) from None

    def finish(self):
        """Close and remove the journal (the run is complete, or failed)."""
        try:
            self.file.close()
        except OSError:
            pass        # its last line could not be written (full disk): it goes all the same
        if os.path.exists(self.path):
            os.remove(self.path)


def _loads(line):
    try:
        return json.loads(line)
    except ValueError:
        return None


def wav_writer(directory, count, sample_rate, output_scale="mixture", subtype="PCM_16"):
    """on_utterance that writes the estimates of the first `count` utterances as <id>_s<j>.wav.

    output_scale: "mixture" brings them to the mixture's level (src/deploy/output_level.py),
    "raw" writes the network's output; subtype: the soundfile WAV subtype.
    """
    def write(index, utt_id, mixture, estimates):
        if index < count:
            if output_scale == "mixture":
                estimates = match_mixture_level(estimates, mixture)
            for j, signal in enumerate(estimates, 1):
                write_audio(os.path.join(directory, f"{utt_id}_s{j}.wav"), signal, sample_rate,
                            subtype=subtype)
    return write


def run_evaluation(cfg, log=print):
    """eval.py: score cfg.ckpt_file (a checkpoint, or an .onnx model) on the split cfg.test_name of cfg.data_dir.

    Writes eval_results.csv, eval_summary.json (and with save_wav, wav/) into
    <output_dir>/eval_<test_name>/. Returns (rows, summary).
    """
    from src.model.checkpoint import load_network
    from src.data.dataset import create_eval_dataset
    from src.deploy.inference import chunk_settings
    from src.deploy.output_level import check_output_settings, output_subtype

    metrics = check_metrics(cfg.metrics, cfg.sample_rate)
    if cfg.save_wav > 0:
        check_output_settings(cfg)
    if cfg.save_wav < 0:
        raise UserError(f"save_wav: expected a number of utterances >= 0, got {cfg.save_wav}")
    chunk, overlap, align = chunk_settings(cfg, "chunk_seconds")
    if cfg.ckpt_file.lower().endswith(".onnx"):
        # An exported ONNX model, run by onnxruntime with the same chunking and scoring.
        from src.deploy.onnx_runtime import check_settings, load_onnx
        net = load_onnx(cfg.ckpt_file)
        check_settings(net.settings, cfg, cfg.ckpt_file)
    else:
        net = load_network(cfg)
    dataset, ids = create_eval_dataset(cfg, cfg.test_name)
    eval_dir = os.path.join(cfg.output_dir, f"eval_{cfg.test_name}")
    ckpt = os.path.abspath(cfg.ckpt_file)
    key = {"ckpt_file": ckpt, "ckpt_mtime": os.path.getmtime(ckpt),
           "data_dir": os.path.abspath(cfg.data_dir), "test_name": cfg.test_name,
           "eval_sdr": cfg.eval_sdr, "chunk_samples": chunk, "overlap_samples": overlap,
           "metrics": sorted(metrics)}
    journal = Journal(os.path.join(eval_dir, ".eval_progress.jsonl"), key)
    if journal.done:
        log(f"resuming: {len(journal.done)} of {len(ids)} utterances already scored")
    try:
        rows, summary = evaluate(net, dataset, ids, cfg.n_src, cfg.eval_sdr, chunk, overlap,
                                 align=align, progress=True, done=journal.done,
                                 on_utterance=wav_writer(os.path.join(eval_dir, "wav"),
                                                         cfg.save_wav, cfg.sample_rate,
                                                         cfg.output_scale, output_subtype(cfg)),
                                 on_row=journal.append, metrics=metrics,
                                 sample_rate=cfg.sample_rate)
        csv_path, json_path = write_results(eval_dir, rows, summary,
                                            {"ckpt_file": ckpt, "test_name": cfg.test_name,
                                             "chunk_seconds": cfg.chunk_seconds})
    except Exception:
        # An error (data changed, disk full) leaves no progress file; a stopped or killed run
        # keeps it and resumes.
        journal.finish()
        raise
    journal.finish()
    log(f"{cfg.test_name}: {summary_line(summary)}")
    log(f"per-utterance scores: {csv_path}; summary: {json_path}")
    return rows, summary
