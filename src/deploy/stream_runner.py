"""stream.py: separate a file or standard input hop by hop with a causal model, writing as it goes.

Input: an audio file (any format libsndfile reads, any rate: resampled to the model's), or `-`:
raw PCM from standard input, signed 16-bit little-endian, mono, at the model's sample rate (what
`arecord -t raw -f S16_LE -c 1 -r 8000` or `sox ... -t raw -e signed -b 16 -c 1 -r 8000 -`
write). Output: `<name>_s1.wav` ... in output_dir (32-bit float WAV at the input's rate;
`stdin_s1.wav` ... for standard input), or, with output_dir `-`, raw PCM on standard output,
s16le with the C speakers interleaved, at the model's rate, flushed after every hop. WAV files are
written under temporary names and renamed when the stream ends; an interrupt (Ctrl-C) ends the
stream and keeps what was separated. A summary goes to standard error.
"""
import contextlib
import os
import sys
import time

import numpy as np
import soundfile as sf

from src.data.audio import resample_stream
from src.deploy.separation import _mono_blocks, _open_input
from src.deploy.streaming import check_causal, load_streaming_separator
from src.model_utils.atomic import atomic_output
from src.model_utils.errors import UserError

STDIO = "-"


def hop_samples(cfg):
    """The hop in samples at the model's rate: stream_hop_ms as a whole number of strides."""
    stride = cfg.L // 2
    samples = cfg.stream_hop_ms * cfg.sample_rate / 1000
    strides = round(samples / stride)
    if strides < 1 or abs(strides * stride - samples) > 1e-6:
        raise UserError(f"stream_hop_ms: expected a whole number of encoder strides (L/2 = "
                        f"{stride} samples = {1000 * stride / cfg.sample_rate:g} ms at "
                        f"{cfg.sample_rate} Hz), got {cfg.stream_hop_ms}")
    return strides * stride


def _stdin_hops(hop, stream=None):
    """Mono float32 hops [hop] (the last one shorter) of s16le PCM from standard input."""
    stream = stream or sys.stdin.buffer
    while True:
        data = stream.read(2 * hop)
        if not data:
            return
        if len(data) % 2:
            raise UserError("standard input: ended inside a sample (expected raw PCM, signed "
                            "16-bit little-endian, 2 bytes a sample)")
        yield np.frombuffer(data, "<i2").astype(np.float32) / 32768
        if len(data) < 2 * hop:
            return


def _rehop(blocks, hop):
    """Blocks of any sizes -> blocks of `hop` samples (the last one shorter)."""
    pending = np.zeros(0, np.float32)
    for block in blocks:
        pending = np.concatenate([pending, block])
        while len(pending) >= hop:
            yield pending[:hop]
            pending = pending[hop:]
    if len(pending):
        yield pending


class _WavSinks:
    """One WAV per speaker, written under temporary names, renamed on a clean exit."""

    def __init__(self, stack, stem, n_src, rate):
        self.paths = [f"{stem}_s{c + 1}.wav" for c in range(n_src)]
        self.files = []
        for path in self.paths:
            self.files.append(sf.SoundFile(stack.enter_context(atomic_output(path)), "w",
                                           samplerate=rate, channels=1, format="WAV",
                                           subtype="FLOAT"))
            stack.callback(self.files[-1].close)     # closed before its file is renamed

    def write(self, block):
        for sink, source in zip(self.files, block):
            sink.write(source)


class _PcmSink:
    """Interleaved s16le PCM on standard output."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout.buffer
        self.paths = []

    def write(self, block):
        pcm = np.clip(np.round(block.T * 32768), -32768, 32767).astype("<i2")
        try:
            self.stream.write(pcm.tobytes())
            self.stream.flush()
        except BrokenPipeError:
            raise UserError("standard output: the reader closed the pipe") from None


def summary(cfg, hop, seconds, hop_times):
    """The latency / compute summary lines."""
    hop_ms = 1000 * hop / cfg.sample_rate
    times = np.asarray(hop_times) * 1000
    if cfg.causal_lookahead:
        stride_ms = 1000 * (cfg.L // 2) / cfg.sample_rate
        lines = [f"algorithmic latency {hop_ms + stride_ms:g} ms (one hop of {hop} samples and "
                 f"the look-ahead of one stride; each output sample uses input up to the next "
                 f"stride boundary after it, at most {cfg.L // 2} samples later)"]
    else:
        lines = [f"algorithmic latency {hop_ms:g} ms (one hop of {hop} samples; each output "
                 f"sample uses input up to the last whole stride of {cfg.L // 2} samples before "
                 f"it)"]
    if len(times):
        lines.append(f"compute per hop: mean {times.mean():.3f} ms, p99 "
                     f"{np.percentile(times, 99):.3f} ms over {len(times)} hops; real-time "
                     f"factor {times.sum() / 1000 / max(seconds, 1e-9):.3f} "
                     f"({seconds:.2f} s of audio)")
    return lines


def run_streaming(cfg, log=None, stdin=None, stdout=None):
    """stream.py: check the settings, load the model, stream `cfg.input` through it.

    Returns the written paths (none for standard output)."""
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    for key in ("model_path", "input"):
        if not getattr(cfg, key):
            raise UserError(f"{key}: expected a path (--{key}=...)")
    if cfg.model_path.lower().endswith(".mindir"):
        raise UserError(f"{cfg.model_path}: stream.py runs a checkpoint (.ckpt) with its "
                        "--config_path, not an exported graph")
    check_causal(cfg, cfg.config_path)
    hop = hop_samples(cfg)
    if cfg.input != STDIO and not os.path.isfile(cfg.input):
        raise UserError(f"{cfg.input}: file not found")
    separator = load_streaming_separator(cfg, cfg.model_path)
    with contextlib.ExitStack() as stack:
        if cfg.input == STDIO:
            rate, hops = cfg.sample_rate, _stdin_hops(hop, stdin)
            stem = "stdin"
        else:
            audio = stack.enter_context(_open_input(cfg.input))
            rate = audio.samplerate
            hops = _rehop(resample_stream(_mono_blocks(audio, cfg.input), rate, cfg.sample_rate),
                          hop)
            stem = os.path.splitext(os.path.basename(cfg.input))[0]
        if cfg.output_dir == STDIO:
            if rate != cfg.sample_rate:
                raise UserError(f"{cfg.input}: {rate} Hz; raw output (--output_dir=-) is at the "
                                f"model's rate, so the input must be at {cfg.sample_rate} Hz")
            sink = _PcmSink(stdout)
        else:
            stem = os.path.join(cfg.output_dir, stem)
            if cfg.input != STDIO and any(os.path.abspath(f"{stem}_s{c + 1}.wav")
                                          == os.path.abspath(cfg.input)
                                          for c in range(cfg.n_src)):
                raise UserError(f"{cfg.input}: an output would overwrite the input; choose "
                                "another --output_dir")
            sink = _WavSinks(stack, stem, cfg.n_src, rate)
        estimates, hop_times = _separate_hops(separator, hops)
        if rate == cfg.sample_rate:
            for block in estimates:
                sink.write(block)
        else:
            _write_resampled(sink, resample_stream(estimates, cfg.sample_rate, rate,
                                                  channels=cfg.n_src), cfg.n_src, audio.frames)
    for line in summary(cfg, hop, separator.received / cfg.sample_rate, hop_times):
        log(line)
    if sink.paths:
        log(f"{cfg.input} -> {', '.join(sink.paths)}")
    return sink.paths


def _separate_hops(separator, hops):
    """(a generator of the estimate blocks [C, n] of `hops`, the list of per-hop compute times
    in seconds that it fills as it runs)."""
    hop_times = []

    def blocks():
        try:
            for block in hops:
                start = time.perf_counter()
                out = separator.push(block)
                hop_times.append(time.perf_counter() - start)
                yield out
        except KeyboardInterrupt:
            pass                      # the end of a live stream: finish what was received
        yield separator.finish()
    return blocks(), hop_times


def _write_resampled(sink, blocks, n_src, frames):
    """Write resampled blocks, exactly `frames` samples in all (resampling may round one sample
    over or under)."""
    written = 0
    for block in blocks:
        block = block[:, :frames - written]
        sink.write(block)
        written += block.shape[1]
    if written < frames:
        sink.write(np.zeros((n_src, frames - written), np.float32))
