"""Separating a user's recordings: any readable format, rate and channel count, any length.

A file is streamed: blocks are read with soundfile, downmixed to mono, resampled to the model's
rate as a stream (src.data.audio.resample_stream), separated chunk by chunk
(src.deploy.inference.stream_separate), resampled back to the file's rate and appended to
temporary raw float32 files. The estimates are then brought to the level of the (downmixed)
input, whose blocks are kept until their estimates come out, with the gains of
src/deploy/output_level.py (statistics gathered during the stream), and written as
`<name>_s1.wav` ... `<name>_sC.wav` in cfg.output_format. Memory therefore depends on the chunk
length, not on the length of the file. Outputs are written under temporary names and renamed when
complete.
"""
import collections
import contextlib
import copy
import importlib.util
import os
import tempfile

import numpy as np
import soundfile as sf

from src.data.audio import audio_writing, probe_audio, resample_stream
from src.model_utils.atomic import TEMPORARY_PREFIX, atomic_output, remove_leftovers
from src.model_utils.errors import UserError
from src.deploy.inference import chunk_settings, stream_separate
from src.deploy.output_level import LevelMatcher, check_output_settings, output_subtype

READ_BLOCK = 1 << 16          # frames read from the input at a time
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au",
                    ".caf", ".w64", ".rf64")


def list_inputs(path):
    """The audio files to separate: `path` itself, or the audio files directly inside a folder.

    Temporary files (`.tmp-*`, outputs of a run killed before it renamed them) are never inputs.
    """
    if os.path.isdir(path):
        files = sorted(os.path.join(path, name) for name in os.listdir(path)
                       if name.lower().endswith(AUDIO_EXTENSIONS)
                       and not name.startswith(TEMPORARY_PREFIX)
                       and os.path.isfile(os.path.join(path, name)))
        if not files:
            raise UserError(f"{path}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) in the folder")
        return files
    if not os.path.exists(path):
        raise UserError(f"{path}: file not found")
    if os.path.basename(path).startswith(TEMPORARY_PREFIX):
        raise UserError(f"{path}: a temporary file of an unfinished write, not an input")
    return [path]


def output_stems(files, output_dir):
    """Output name stems in `output_dir`, one per input; a shared stem gets the extension added."""
    stems = [os.path.splitext(os.path.basename(f))[0] for f in files]
    return [os.path.join(output_dir, stem if stems.count(stem) == 1
                         else f"{stem}_{os.path.splitext(f)[1].lstrip('.').lower()}")
            for stem, f in zip(stems, files)]


def _open_input(path):
    if not os.path.isfile(path):
        raise UserError(f"{path}: file not found")
    try:
        return sf.SoundFile(path)
    except (RuntimeError, sf.LibsndfileError, ValueError) as err:
        raise UserError(f"{path}: not readable audio ({str(err).splitlines()[0][:120]})") from None


def _mono_blocks(audio, path):
    """Mono float32 blocks [n] of an open SoundFile (channels averaged).

    A NaN or infinite sample (float files can hold them) raises UserError: it would make every
    output sample NaN.
    """
    start = 0
    try:
        for block in audio.blocks(blocksize=READ_BLOCK, dtype="float32", always_2d=True):
            if not np.isfinite(block).all():
                first = start + int(np.argmin(np.isfinite(block).all(axis=1)))
                raise UserError(f"{path}: audio holds NaN or infinite samples (the first at "
                                f"sample {first})")
            start += block.shape[0]
            yield block.mean(axis=1) if block.shape[1] > 1 else block[:, 0]
    except (RuntimeError, sf.LibsndfileError) as err:
        raise UserError(f"{path}: audio data unreadable ({str(err).splitlines()[0][:120]})") \
            from None


def separate_file(model_fn, path, stem, cfg, chunk_samples, overlap_samples, align, protected=()):
    """Separate one file into `<stem>_s1.wav` ... at the file's rate. Returns the written paths.

    `protected`: absolute paths that must not be written (the inputs of the run).

    Raises UserError naming the file when it cannot be read, is empty, truncated (the check of
    preprocess.py, `probe_audio`), holds NaN or inf, or is shorter than the encoder kernel L at
    the model's rate.
    """
    probe_audio(path)
    with _open_input(path) as audio:
        rate, frames = audio.samplerate, audio.frames
        if frames <= 0:
            raise UserError(f"{path}: audio has no samples")
        model_frames = int(round(frames * cfg.sample_rate / rate))
        if model_frames < cfg.L:
            raise UserError(f"{path}: {frames} samples at {rate} Hz is shorter than the model's "
                            f"encoder kernel (L={cfg.L} samples at {cfg.sample_rate} Hz)")
        if rate != cfg.sample_rate and importlib.util.find_spec("soxr") is None:
            raise UserError(f"{path}: resampling from {rate} to the model's {cfg.sample_rate} Hz "
                            "needs the soxr package (pip install soxr)")
        outputs = [f"{stem}_s{c + 1}.wav" for c in range(cfg.n_src)]
        protected = set(protected) | {os.path.abspath(path)}
        clash = [o for o in outputs if os.path.abspath(o) in protected]
        if clash:
            raise UserError(f"{path}: its output {clash[0]} would overwrite an input; "
                            "choose another --output_dir")
        tap = _MixtureTap(_mono_blocks(audio, path))
        mixture = resample_stream(tap, rate, cfg.sample_rate)
        fixed_length = getattr(model_fn, "max_samples", None) is not None
        estimates = stream_separate(model_fn, mixture, chunk_samples, overlap_samples, align,
                                    join_tail=not fixed_length)
        estimates = resample_stream(estimates, cfg.sample_rate, rate, channels=cfg.n_src)
        folder = os.path.dirname(os.path.abspath(outputs[0]))
        with _naming(folder), contextlib.ExitStack() as stack:
            raw = [stack.enter_context(_scratch_file(os.path.dirname(os.path.abspath(o))))
                   for o in outputs]
            level = LevelMatcher(cfg.n_src)
            written = 0
            for block in estimates:
                block = block[:, :frames - written]     # resampling may round one sample over
                level.update(tap.take(block.shape[1]), block)
                for scratch, source in zip(raw, block):
                    scratch.write(np.ascontiguousarray(source, np.float32).tobytes())
                written += block.shape[1]
            for scratch in raw:                          # ... or one under
                scratch.write(np.zeros(frames - written, np.float32).tobytes())
            gains = level.gains() if cfg.output_scale == "mixture" else np.ones(cfg.n_src)
            for output, scratch, gain in zip(outputs, raw, gains):
                _write_scaled(scratch, output, gain, rate, output_subtype(cfg))
    return outputs


class _MixtureTap:
    """Passes mixture blocks [n] through and keeps them until take() consumes them in order."""

    def __init__(self, blocks):
        self.blocks, self.kept, self.offset = blocks, collections.deque(), 0

    def __iter__(self):
        for block in self.blocks:
            self.kept.append(block)
            yield block

    def take(self, n):
        """The next n samples passed through (zeros beyond the end) -> [n]."""
        parts, need = [], n
        while need > 0 and self.kept:
            block = self.kept[0][self.offset:self.offset + need]
            parts.append(block)
            need -= len(block)
            self.offset += len(block)
            if self.offset >= len(self.kept[0]):
                self.kept.popleft()
                self.offset = 0
        parts.append(np.zeros(need, np.float32))
        return np.concatenate(parts)


@contextlib.contextmanager
def _naming(folder):
    """An OSError without a file name inside the block (a scratch file has none: a full disk
    while the estimates are buffered) names `folder`, where the scratch files are."""
    try:
        yield
    except OSError as err:
        if err.filename is not None:
            raise
        raise OSError(err.errno, err.strerror, folder) from None


@contextlib.contextmanager
def _scratch_file(directory):
    """A temporary binary file in `directory`, removed on closing (unnamed where Linux allows)."""
    with tempfile.TemporaryFile(prefix=".tmp-", dir=directory) as f:
        yield f


def _write_scaled(scratch, output, gain, rate, subtype):
    """The raw float32 samples of `scratch` times `gain` as the WAV `output`, atomically."""
    scratch.seek(0)
    with atomic_output(output) as tmp, audio_writing(output):
        with sf.SoundFile(tmp, "w", samplerate=rate, channels=1, format="WAV",
                          subtype=subtype) as sink:
            while True:
                data = scratch.read(4 * READ_BLOCK)
                if not data:
                    break
                sink.write(np.frombuffer(data, np.float32) * np.float32(gain))


def plot_separation(path, outputs, png):
    """A PNG with the waveform and spectrogram of the mixture `path` and each estimate."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from src.data.audio import read_audio

    signals = [read_audio(p) for p in [path] + list(outputs)]
    titles = [f"mixture: {os.path.basename(path)}"] + [os.path.basename(o) for o in outputs]
    fig, axes = plt.subplots(len(signals), 2, figsize=(12, 2.2 * len(signals)), squeeze=False)
    for row, ((signal, rate), title) in enumerate(zip(signals, titles)):
        time = np.arange(len(signal)) / rate
        axes[row, 0].plot(time, signal, linewidth=0.4)
        axes[row, 0].set_title(title, fontsize=9)
        axes[row, 0].set_xlim(0, time[-1] if len(time) > 1 else 1)
        nfft = 512 if len(signal) >= 512 else max(16, 1 << (len(signal).bit_length() - 1))
        # A floor far below the signal keeps silent stretches (log of 0) out of the warnings.
        floor = 1e-6 * (np.abs(signal).max() + 1e-9)
        dither = floor * np.random.default_rng(0).standard_normal(len(signal))
        axes[row, 1].specgram(signal + dither, NFFT=nfft, Fs=rate, noverlap=nfft // 2,
                              cmap="magma")
        axes[row, 1].set_ylabel("Hz")
    for ax in axes[-1]:
        ax.set_xlabel("seconds")
    fig.tight_layout()
    with atomic_output(png) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return png


def separate_inputs(model_fn, cfg, chunk_samples, overlap_samples, align, log=print):
    """Separate `cfg.input` (a file or a folder) into `cfg.output_dir`.

    Every file is attempted; a file that fails is logged as one line naming it. Returns
    (written paths, failed files).
    """
    files = list_inputs(cfg.input)
    os.makedirs(cfg.output_dir, exist_ok=True)
    remove_leftovers(cfg.output_dir)       # of a run killed before it renamed its outputs
    written, failed = [], []
    inputs = [os.path.abspath(f) for f in files]
    for path, stem in zip(files, output_stems(files, cfg.output_dir)):
        try:
            outputs = separate_file(model_fn, path, stem, cfg, chunk_samples, overlap_samples,
                                    align, protected=inputs)
            if cfg.plot:
                outputs.append(plot_separation(path, outputs, f"{stem}_separated.png"))
        except UserError as err:
            log(f"error: {err}")
            failed.append(path)
            continue
        written.extend(outputs)
        log(f"{path} -> {', '.join(os.path.basename(o) for o in outputs)}")
    return written, failed


def chunking(cfg, model_fn=None):
    """(chunk, overlap, align) in samples at the model's rate for separate.py: chunks of
    separate_chunk_seconds, or of the fixed length of a model that takes exactly that many (a
    MINDIR exported with input_length, a fixed-length ONNX model's max_samples)."""
    fixed = cfg.input_length if cfg.model_path.lower().endswith(".mindir") else 0
    fixed = getattr(model_fn, "max_samples", None) or fixed
    return chunk_settings(cfg, "separate_chunk_seconds", max(fixed, 0))


def with_model_settings(cfg, model_fn):
    """`cfg` with the sample rate, C and L that an ONNX model carries (its `settings`), which
    override the configuration's: the file knows what it was trained for."""
    settings = getattr(model_fn, "settings", None)
    if not settings:
        return cfg
    cfg = copy.copy(cfg)
    for key in ("sample_rate", "n_src", "L"):
        setattr(cfg, key, settings[key])
    return cfg


def run_separation(cfg, log=print):
    """separate.py: check the settings, load the model, separate every input.

    Raises UserError when any input failed (after all were attempted)."""
    from src.deploy.inference import load_model

    for key in ("model_path", "input"):
        if not getattr(cfg, key):
            raise UserError(f"{key}: expected a path (--{key}=...)")
    check_output_settings(cfg)
    files = list_inputs(cfg.input)
    model_fn = load_model(cfg, cfg.model_path)
    cfg = with_model_settings(cfg, model_fn)
    chunk, overlap, align = chunking(cfg, model_fn)
    written, failed = separate_inputs(model_fn, cfg, chunk, overlap, align, log)
    if failed:
        raise UserError(f"{len(failed)} of {len(files)} inputs failed: "
                        f"{', '.join(os.path.basename(f) for f in failed)}")
    return written
