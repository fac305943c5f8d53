"""Audio I/O: reading with checks, resampling, and atomic writing.

Reading goes through soundfile (WAV, FLAC, OGG, and MP3 where libsndfile supports it). Resampling
is soxr at high quality, in this module only: a whole signal through librosa (`resample_audio`),
a stream block by block through soxr's own streaming resampler (`resample_stream`, which librosa
lacks). Every failure a user can cause is a UserError naming the file.
"""
import contextlib
import errno
import os
import re
import shutil

import numpy as np
import soundfile as sf

from src.model_utils.atomic import atomic_output
from src.model_utils.errors import UserError

# libsndfile logs "data : 32000 (should be 15978)" for a file cut short
_HEADER_MISMATCH = re.compile(r"^\s*data\s*:.*\(should be", re.MULTILINE)


def _reason(err):
    """libsndfile's whole reason, without its "Error opening '<path>': " prefix (the path is named
    once, by the caller; a long path must not push the reason out of the line)."""
    reason = getattr(err, "error_string", None) or str(err)
    return " ".join(reason.split())


def read_audio(path, sample_rate=None, mono=True, resample=False, dtype="float32"):
    """Read an audio file.

    Args:
        path: the file.
        sample_rate: the rate expected; None accepts any.
        mono: average the channels into one.
        resample: convert another rate to `sample_rate` instead of refusing it.
        dtype: numpy dtype soundfile returns ('float32', or 'int16' for bit-exact PCM).
    Returns:
        (signal, rate): signal [T] when mono, else [channels, T].
    """
    if not os.path.isfile(path):
        raise UserError(f"{path}: file not found")
    try:
        signal, rate = sf.read(path, dtype=dtype, always_2d=True)
    except (RuntimeError, sf.LibsndfileError, ValueError) as err:
        raise UserError(f"{path}: not readable audio ({_reason(err)})") from None
    if signal.shape[0] == 0:
        raise UserError(f"{path}: audio has no samples")
    signal = signal.T                                       # [channels, T]
    if mono:
        signal = signal.mean(axis=0).astype(signal.dtype) if signal.shape[0] > 1 else signal[0]
    if sample_rate and rate != sample_rate:
        if not resample:
            raise UserError(f"{path}: sample rate {rate} Hz, expected {sample_rate} Hz "
                            "(pass --resample=true to convert)")
        signal = resample_audio(signal, rate, sample_rate)
        rate = sample_rate
    return signal, rate


def probe_audio(path):
    """Header facts of an audio file without reading its samples: (frames, rate, subtype, channels).

    Raises UserError naming the file when it is missing, unreadable, empty, or truncated.
    """
    if not os.path.isfile(path):
        raise UserError(f"{path}: file not found")
    try:
        info = sf.info(path)
    except (RuntimeError, sf.LibsndfileError, ValueError) as err:
        raise UserError(f"{path}: not readable audio ({_reason(err)})") from None
    if info.frames == 0:
        raise UserError(f"{path}: audio has no samples (zero-length file)")
    if _HEADER_MISMATCH.search(info.extra_info or ""):
        raise UserError(f"{path}: truncated audio file (its header announces more data than it holds)")
    return info.frames, info.samplerate, info.subtype, info.channels


def resample_audio(signal, orig_rate, target_rate):
    """Resample along the last axis with librosa (soxr, high quality). Returns float32."""
    import librosa  # imported here: it takes a second to load and most paths never resample
    if orig_rate == target_rate:
        return np.asarray(signal, np.float32)
    return librosa.resample(np.asarray(signal, np.float32), orig_sr=orig_rate,
                            target_sr=target_rate, res_type="soxr_hq").astype(np.float32)


def resample_stream(blocks, in_rate, out_rate, channels=1):
    """Blocks ([n] or [channels, n]) resampled from in_rate to out_rate as a stream, with the
    filter state carried across blocks (the same quality as `resample_audio`)."""
    if in_rate == out_rate:
        yield from blocks
        return
    import soxr
    stream = soxr.ResampleStream(in_rate, out_rate, channels, dtype="float32", quality="HQ")
    pending = None   # one block of look-ahead, so that the last one is flushed with last=True
    for block in blocks:
        if pending is not None:
            yield _resample_block(stream, pending, False)
        pending = block
    if pending is not None:
        yield _resample_block(stream, pending, True)


def _resample_block(stream, block, last):
    block = np.ascontiguousarray(block, np.float32)
    if block.ndim == 1:
        return stream.resample_chunk(block, last=last)
    return stream.resample_chunk(np.ascontiguousarray(block.T), last=last).T


# Below this much free space a failed write is taken for a full disk (libsndfile does not say).
_NEARLY_FULL = 1 << 20


@contextlib.contextmanager
def audio_writing(path):
    """soundfile's write errors inside the block as an OSError naming `path`.

    libsndfile reports a full disk as "System error." only: the error is ENOSPC when the disk
    holding `path` has (almost) no free space left, else EIO, with libsndfile's words.
    """
    try:
        yield
    except (RuntimeError, sf.LibsndfileError) as err:
        folder = os.path.dirname(os.path.abspath(path))
        full = os.path.isdir(folder) and shutil.disk_usage(folder).free < _NEARLY_FULL
        code = errno.ENOSPC if full else errno.EIO
        raise OSError(code, f"{os.strerror(code)} (libsndfile: {err})", path) from None


def write_audio(path, signal, sample_rate, subtype=None):
    """Write signal [T] or [channels, T] to `path` atomically (temporary file, then rename)."""
    signal = np.asarray(signal)
    data = signal.T if signal.ndim == 2 else signal
    fmt = os.path.splitext(path)[1].lstrip(".").upper() or "WAV"
    with atomic_output(path) as tmp, audio_writing(path):
        sf.write(tmp, data, sample_rate, subtype=subtype, format=fmt)
