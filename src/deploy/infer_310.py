"""The offline inference pipeline (Ascend 310, or MindSpore on CPU): .bin files in, SI-SNRi out.

Layout under `infer_dir`:
    preprocess_Result/manifest.json   settings and, per utterance, its id, length and chunk files
    preprocess_Result/00_data/        model inputs: float32 [1, t], one file per chunk
    preprocess_Result/labels/         references float32 [C, T] per utterance
    preprocess_Result/mixtures/       mixtures float32 [T] per utterance (the SI-SNRi baseline)
    result_Files/                     <input name>_0.bin: model output float32 [1, C, t]

A streaming step MINDIR (export.py --stream=true, with stream true here) gets whole utterances,
each streamed through it hop by hop from a zero state. A MINDIR with a dynamic time axis gets
whole utterances (or, with chunk_seconds > 0, the chunks
that eval.py uses); one with a fixed length L_in gets chunks of at most L_in samples, zero-padded
to L_in. The chunks are the ones `src/deploy/inference.py` makes: preprocessing runs its chunking with a
model_fn that records each chunk, postprocessing runs the same chunking again with a model_fn that
replays the results, so the stitching (cross-fades, speaker order) is the one of eval.py and
separate.py.
"""
import json
import os
import shutil
import tempfile
import time

import numpy as np

from src.model_utils.errors import UserError
from src.model_utils.progress import progress_bar
from src.deploy.inference import chunk_settings, separate_in_chunks, stream_separate

MANIFEST = "manifest.json"
PREPROCESS_DIR = "preprocess_Result"
RESULT_DIR = "result_Files"
INPUT_DIR = "00_data"
TIMING_FILE = "time_per_input.csv"


def run_chunked(model_fn, mixture, chunk_samples, overlap_samples, align, fixed_length):
    """Separate mixture [T] as the pipeline does -> [C, T].

    fixed_length > 0: chunks of at most that many samples (no joined tail); else the chunking of
    `separate_in_chunks` (one pass when chunk_samples <= 0).
    """
    if fixed_length > 0:
        if len(mixture) <= fixed_length:
            return separate_in_chunks(model_fn, mixture, 0, 0)
        parts = stream_separate(model_fn, [mixture], fixed_length, overlap_samples, align,
                                join_tail=False)
        return np.concatenate(list(parts), axis=1)
    return separate_in_chunks(model_fn, mixture, chunk_samples, overlap_samples, align)


def _chunk_settings(cfg, fixed_length):
    chunk, overlap, align = chunk_settings(cfg, "chunk_seconds", fixed_length)
    return {"sample_rate": cfg.sample_rate, "n_src": cfg.n_src, "fixed_length": fixed_length,
            "chunk_samples": chunk, "overlap_samples": overlap, "align": align}


def _write_f32(path, array):
    np.ascontiguousarray(array, np.float32).tofile(path)


def write_310_inputs(cfg, mindir_path, prep_dir, log=print):
    """Write the test split of cfg.data_dir as .bin files for the MINDIR at `mindir_path`.

    The folder is written under a temporary name and renamed into place (an older one there, with
    a manifest, is replaced). Returns the manifest.
    """
    from src.data.dataset import create_eval_dataset
    from src.evaluation.evaluate import iterate_utterances
    from src.deploy.export import mindir_input_shape

    if cfg.stream:      # a streaming step streams whole utterances (or eval.py's chunks)
        from src.deploy.stream_export import read_sidecar
        read_sidecar(mindir_path)
        fixed = 0
    else:
        fixed = max(mindir_input_shape(mindir_path)[1], 0)
    settings = _chunk_settings(cfg, fixed)
    dataset, ids = create_eval_dataset(cfg, cfg.test_name)
    prep_dir = os.path.abspath(prep_dir)
    if os.path.exists(prep_dir) and not os.path.isfile(os.path.join(prep_dir, MANIFEST)):
        raise UserError(f"{prep_dir}: exists and is not a preprocess_Result folder; "
                        "choose another infer_dir")
    parent = os.path.dirname(prep_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-preprocess-", dir=parent)
    try:
        for sub in (INPUT_DIR, "labels", "mixtures"):
            os.makedirs(os.path.join(tmp, sub))
        utterances = []
        for index, (utt_id, mixture, references) in enumerate(iterate_utterances(dataset, ids)):
            if references.shape[0] != cfg.n_src:
                raise UserError(f"n_src: expected {cfg.n_src} sources, utterance {utt_id} has "
                                f"{references.shape[0]}")
            chunks = []

            def record(segment, chunks=chunks):
                chunks.append(segment[0].copy())
                return np.zeros((1, cfg.n_src, segment.shape[-1]), np.float32)

            run_chunked(record, mixture, settings["chunk_samples"],
                        settings["overlap_samples"], settings["align"], fixed)
            entry = {"id": utt_id, "length": int(len(mixture)),
                     "labels": f"labels/{index:05d}.bin", "mixture": f"mixtures/{index:05d}.bin",
                     "chunks": []}
            for k, chunk in enumerate(chunks):
                name = f"{index:05d}_{k:03d}"
                data = chunk
                if fixed:  # zero-padded to the model's length; the padding is cut off afterwards
                    data = np.zeros(fixed, np.float32)
                    data[:len(chunk)] = chunk
                _write_f32(os.path.join(tmp, INPUT_DIR, name + ".bin"), data)
                entry["chunks"].append({"name": name, "samples": int(len(chunk))})
            _write_f32(os.path.join(tmp, entry["labels"]), references)
            _write_f32(os.path.join(tmp, entry["mixture"]), mixture)
            utterances.append(entry)
        manifest = {**settings, "test_name": cfg.test_name, "utterances": utterances}
        with open(os.path.join(tmp, MANIFEST), "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=1)
        if os.path.exists(prep_dir):
            shutil.rmtree(prep_dir)
        os.replace(tmp, prep_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    n_chunks = sum(len(u["chunks"]) for u in utterances)
    shape = f"[1, {fixed}]" if fixed else "[1, T]"
    log(f"wrote {n_chunks} inputs {shape} for {len(utterances)} utterances to "
        f"{os.path.join(prep_dir, INPUT_DIR)}")
    return manifest


MANIFEST_KEYS = ("n_src", "fixed_length", "chunk_samples", "overlap_samples", "align",
                 "utterances")
AGAIN = "run the preprocess step again (NEED_PREPROCESS=y)"


def read_manifest(prep_dir):
    """The manifest of `prep_dir`; UserError naming it when missing, not JSON or incomplete."""
    path = os.path.join(prep_dir, MANIFEST)
    if not os.path.isfile(path):
        raise UserError(f"{path}: not found; run the preprocess step (NEED_PREPROCESS=y)")
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (ValueError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not a readable manifest ({err}); {AGAIN}") from None
    missing = [key for key in MANIFEST_KEYS if not isinstance(manifest, dict) or key not in manifest]
    if missing:
        raise UserError(f"{path}: not a manifest of preprocess_310.py (no {', '.join(missing)}); "
                        f"{AGAIN}")
    return manifest


def check_inputs(prep_dir):
    """The manifest of `prep_dir` after checking that every file it lists holds as many float32
    values as it says (a .bin cut short would otherwise crash the inference app). Returns it."""
    manifest = read_manifest(prep_dir)
    n_src, fixed = manifest["n_src"], manifest["fixed_length"]
    try:
        for entry in manifest["utterances"]:
            length = entry["length"]
            expected = [(entry["mixture"], length), (entry["labels"], n_src * length)]
            expected += [(os.path.join(INPUT_DIR, chunk["name"] + ".bin"),
                          fixed or chunk["samples"]) for chunk in entry["chunks"]]
            for name, values in expected:
                _check_size(os.path.join(prep_dir, name), values)
    except (KeyError, TypeError) as err:
        raise UserError(f"{os.path.join(prep_dir, MANIFEST)}: an utterance without {err}; "
                        f"{AGAIN}") from None
    return manifest


def _check_size(path, values):
    if not os.path.isfile(path):
        raise UserError(f"{path}: not found; {AGAIN}")
    size = os.path.getsize(path)
    if size != 4 * values:
        raise UserError(f"{path}: {size} bytes, expected {4 * values} ({values} float32 values); "
                        f"truncated or changed after preprocessing: {AGAIN}")


def run_bins_on_cpu(mindir_path, input_dir, output_dir, log=print, stream=False):
    """The CPU counterpart of ascend310_infer/out/main: every <name>.bin of input_dir through the
    MINDIR, outputs to <name>_<k>.bin and the time per input to time_per_input.csv.

    stream: the MINDIR is a streaming step (export.py --stream=true, its sidecar beside it): each
    input is streamed through it hop by hop, the state fed back, into <name>_0.bin [1, C, T]."""
    import mindspore as ms
    from src.deploy.export import load_mindir, mindir_input_shape
    from src.model_utils.atomic import atomic_output, write_text

    declared = mindir_input_shape(mindir_path)
    if stream:
        from src.deploy.stream_export import read_sidecar, stream_graph
        info = read_sidecar(mindir_path)
        declared = [1, 0]
    graph = load_mindir(mindir_path)
    if not os.path.isdir(input_dir):
        raise UserError(f"{input_dir}: input folder not found; run the preprocess step")
    files = sorted(f for f in os.listdir(input_dir) if f.endswith(".bin"))
    if not files:
        raise UserError(f"{input_dir}: no .bin input files")
    os.makedirs(output_dir, exist_ok=True)
    lines = []
    for name in progress_bar(files, desc="inferring", unit="input"):
        samples = np.fromfile(os.path.join(input_dir, name), np.float32)
        if declared[1] > 0 and len(samples) != declared[1]:
            raise UserError(f"{os.path.join(input_dir, name)}: {len(samples)} samples, but the "
                            f"model takes {declared} (run the preprocess step for this model)")
        start = time.perf_counter()
        if stream:
            arrays = [stream_graph(graph, info, samples)[None]]
        else:
            outputs = graph(ms.Tensor(samples[None]))
            outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
            arrays = [o.asnumpy() for o in outputs]
        elapsed_ms = (time.perf_counter() - start) * 1000
        stem = os.path.splitext(name)[0]
        for k, array in enumerate(arrays):
            with atomic_output(os.path.join(output_dir, f"{stem}_{k}.bin")) as tmp:
                _write_f32(tmp, array)
        lines.append(f"{stem},{elapsed_ms:.3f}\n")
    write_text(os.path.join(output_dir, TIMING_FILE), "".join(lines))
    average = np.mean([float(line.split(",")[1]) for line in lines])
    log(f"inferred {len(files)} inputs, average {average:.3f} ms per input")


def postprocess(prep_dir, result_dir, on_utterance=None):
    """Stitch the results of every utterance and score them against the references.

    on_utterance: called as on_utterance(index, id, mixture [T], estimates [C, T]) with the
    estimates in the references' order (src.evaluation.evaluate.wav_writer saves them).
    Returns (rows, summary) as src.evaluation.evaluate.evaluate does (SI-SNR and SI-SNRi; no SDR).
    """
    from src.evaluation.evaluate import make_row, score_utterance, summarize

    manifest = check_inputs(prep_dir)
    n_src, fixed = manifest["n_src"], manifest["fixed_length"]
    rows = []
    for index, entry in enumerate(manifest["utterances"]):
        length = entry["length"]
        mixture = np.fromfile(os.path.join(prep_dir, entry["mixture"]), np.float32)
        references = np.fromfile(os.path.join(prep_dir, entry["labels"]), np.float32)
        references = references.reshape(n_src, length)

        def replay(segment, chunks=iter(entry["chunks"]), utt_id=entry["id"]):
            chunk = next(chunks, None)
            if chunk is None or chunk["samples"] != segment.shape[-1]:
                raise UserError(f"{os.path.join(prep_dir, MANIFEST)}: the chunks of {utt_id} do "
                                "not match its settings; run the preprocess step again")
            output = read_result(result_dir, chunk["name"], n_src, fixed or chunk["samples"])
            return output[None, :, :chunk["samples"]]

        estimates = run_chunked(replay, mixture, manifest["chunk_samples"],
                                manifest["overlap_samples"], manifest["align"], fixed)
        scores, reordered = score_utterance(estimates, references, mixture, with_sdr=False)
        rows.append(make_row(entry["id"], length, scores))
        if on_utterance is not None:
            on_utterance(index, entry["id"], mixture, reordered)
    return rows, summarize(rows)


def read_result(result_dir, name, n_src, samples):
    """The model output for input `name`: float32 [C, samples]; UserError if missing or mis-sized."""
    path = os.path.join(result_dir, f"{name}_0.bin")
    if not os.path.isfile(path):
        raise UserError(f"{path}: result not found; run the inference step")
    data = np.fromfile(path, np.float32)
    if data.size != n_src * samples:
        raise UserError(f"{path}: {data.size} values, expected {n_src} x {samples} "
                        "(a result of another model or input)")
    return data.reshape(n_src, samples)


def _mindir_path(cfg):
    if not cfg.mindir_path:
        raise UserError("mindir_path: expected the exported MINDIR (--mindir_path=...)")
    return cfg.mindir_path


def run_310_preprocess(cfg, log=print):
    """preprocess_310.py: the test split of cfg.data_dir as .bin inputs for the MINDIR
    cfg.mindir_path, in <infer_dir>/preprocess_Result. Returns the manifest. With
    cfg.check_inputs_only, writes nothing and checks the sizes of the files written before."""
    prep_dir = os.path.join(cfg.infer_dir, PREPROCESS_DIR)
    if cfg.check_inputs_only:
        manifest = check_inputs(prep_dir)
        log(f"{prep_dir}: the inputs of {len(manifest['utterances'])} utterances are complete")
        return manifest
    return write_310_inputs(cfg, _mindir_path(cfg), prep_dir, log)


def run_cpu_inference(cfg, log=print):
    """infer_cpu.py: every preprocessed input through the MINDIR cfg.mindir_path, on this
    process's device, into <infer_dir>/result_Files; with cfg.stream, the streaming step MINDIR
    hop by hop."""
    run_bins_on_cpu(_mindir_path(cfg), os.path.join(cfg.infer_dir, PREPROCESS_DIR, INPUT_DIR),
                    os.path.join(cfg.infer_dir, RESULT_DIR), log, stream=cfg.stream)


def run_postprocess(cfg, log=print):
    """postprocess.py: score the results under cfg.infer_dir; writes eval_results.csv and
    eval_summary.json there, and with cfg.save_wav the separated sources of that many utterances
    to <infer_dir>/wav/ (as eval.py writes them). Returns (rows, summary)."""
    from src.evaluation.evaluate import summary_line, wav_writer, write_results
    from src.deploy.output_level import check_output_settings, output_subtype

    if cfg.save_wav > 0:
        check_output_settings(cfg)
    save = wav_writer(os.path.join(cfg.infer_dir, "wav"), cfg.save_wav, cfg.sample_rate,
                      cfg.output_scale, output_subtype(cfg))
    rows, summary = postprocess(os.path.join(cfg.infer_dir, PREPROCESS_DIR),
                                os.path.join(cfg.infer_dir, RESULT_DIR), on_utterance=save)
    write_results(cfg.infer_dir, rows, summary)
    log(summary_line(summary))
    log(f"Average SISNR improvement: {summary['si_snri']:.4f}")
    return rows, summary
