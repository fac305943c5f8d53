"""Inference on signals of any length: overlapping chunks, cross-fading, consistent speaker order.

A separation model is used through a `model_fn` that maps a float32 numpy mixture [1, t] to
estimates [1, C, t]. Long signals are cut into chunks of `chunk_samples` that overlap by
`overlap_samples`; each chunk is separated on its own, and in the overlap the two estimates are
cross-faded with windows that sum to one. A separation model returns the speakers in an arbitrary
order, and the order may change from one chunk to the next; every chunk's sources are therefore
permuted to match the previous chunk's on the overlap (the permutation with the highest summed
normalized correlation), so that `s1` is the same speaker across the whole file.

`stream_separate` works on a stream of input blocks and yields finished output blocks, so that
memory stays bounded by the chunk size whatever the length of the signal; `separate_in_chunks`
is the same on an array in memory.

The hop between chunk starts is a multiple of `align` (the encoder stride L/2 for Conv-TasNet):
then every chunk sees the encoder frames of the whole signal at the same positions, and a model
with a finite receptive field (BN, or any model away from global normalization effects) gives
the whole-signal result away from the chunk borders.
"""
import itertools
import os

import numpy as np

from src.model_utils.errors import UserError

EPS = 1e-8


def chunk_geometry(chunk_samples, overlap_samples, align=1):
    """(chunk, overlap, hop) in samples, with hop = chunk - overlap a positive multiple of `align`.

    chunk_samples <= 0 means one pass over the whole signal: returns (0, 0, 0).
    """
    chunk_samples, overlap_samples, align = int(chunk_samples), int(overlap_samples), int(align)
    if chunk_samples <= 0:
        return 0, 0, 0
    if align < 1:
        raise ValueError(f"align: expected a positive number of samples, got {align}")
    overlap = min(max(overlap_samples, 0), chunk_samples - 1)
    hop = max(align, (chunk_samples - overlap) // align * align)
    chunk = max(chunk_samples, hop)
    return chunk, chunk - hop, hop


def chunk_settings(cfg, seconds_key, fixed_length=0):
    """(chunk_samples, overlap_samples, align) at the model's rate, from the configuration.

    Chunks of `cfg.<seconds_key>` seconds (0: the whole signal at once), or of `fixed_length`
    samples for a model that takes exactly that many; consecutive chunks overlap by
    cfg.chunk_overlap seconds; chunk starts are aligned to the encoder stride L/2. Raises
    UserError naming the key for a negative length, a chunk shorter than two encoder kernels,
    or an overlap that is not shorter than a chunk.
    """
    seconds = getattr(cfg, seconds_key)
    if seconds < 0:
        raise UserError(f"{seconds_key}: expected seconds >= 0 (0: whole signals), got {seconds}")
    chunk = fixed_length if fixed_length > 0 else int(round(seconds * cfg.sample_rate))
    key = "input_length" if fixed_length > 0 else seconds_key
    if 0 < chunk < 2 * cfg.L:
        raise UserError(f"{key}: chunks of {chunk} samples are shorter than two encoder kernels "
                        f"(2 L = {2 * cfg.L} samples at {cfg.sample_rate} Hz)")
    overlap = int(round(cfg.chunk_overlap * cfg.sample_rate))
    if overlap < 0 or (chunk > 0 and overlap >= chunk):
        raise UserError(f"chunk_overlap: expected seconds >= 0 and shorter than a chunk "
                        f"({chunk} samples), got {cfg.chunk_overlap}")
    return chunk, overlap, cfg.L // 2


def crossfade_windows(overlap):
    """Fade-out and fade-in windows [overlap] (raised cosine) that sum to one at every sample."""
    fade_in = 0.5 - 0.5 * np.cos(np.pi * (np.arange(overlap) + 0.5) / overlap)
    return (1.0 - fade_in).astype(np.float32), fade_in.astype(np.float32)


def match_order(previous, current):
    """The permutation of `current` [C, O] that best matches `previous` [C, O].

    Returns perm [C] such that current[perm] lines up with previous: it maximizes the summed
    normalized correlation (cosine similarity) over the C! orders, found exactly (every order,
    or a linear assignment for more than 5 speakers). Silent overlaps (all similarities zero) keep the order.
    """
    prev = previous - previous.mean(axis=-1, keepdims=True)
    cur = current - current.mean(axis=-1, keepdims=True)
    prev = prev / (np.linalg.norm(prev, axis=-1, keepdims=True) + EPS)
    cur = cur / (np.linalg.norm(cur, axis=-1, keepdims=True) + EPS)
    similarity = prev.astype(np.float64) @ cur.astype(np.float64).T        # [C prev, C cur]
    C = len(similarity)
    if C > 5:
        from scipy.optimize import linear_sum_assignment
        return linear_sum_assignment(similarity, maximize=True)[1]
    # Few speakers: every order tried, so that separating needs no scipy (onnxruntime path).
    orders = np.array(list(itertools.permutations(range(C))))
    return orders[similarity[np.arange(C), orders].sum(axis=1).argmax()]


def _run_model(model_fn, segment):
    """model_fn on segment [t] -> estimates [C, t] float32."""
    estimates = np.asarray(model_fn(np.ascontiguousarray(segment, np.float32)[None]))
    if estimates.ndim != 3 or estimates.shape[0] != 1 or estimates.shape[-1] != len(segment):
        raise ValueError(f"model_fn: expected estimates [1, C, {len(segment)}], "
                         f"got {list(estimates.shape)}")
    return estimates[0].astype(np.float32, copy=False)


def stream_separate(model_fn, blocks, chunk_samples, overlap_samples, align=1, join_tail=True):
    """Separate a stream of mixture blocks chunk by chunk.

    Args:
        model_fn: numpy [1, t] float32 -> [1, C, t].
        blocks: iterable of mixture blocks [n] (any sizes); their concatenation is the mixture [T].
        chunk_samples: chunk length in samples; <= 0 means one pass over the whole mixture.
        overlap_samples: overlap of consecutive chunks in samples.
        align: the hop between chunk starts is a multiple of this (the model's encoder stride).
        join_tail: join a short final remainder to the chunk before it (see below); False keeps
            every chunk at most chunk_samples long (for a model of fixed input length).
    Yields:
        estimates [C, n] blocks whose concatenation is the estimates [C, T]. Apart from the
        output, at most about 1.5 chunks of input and one chunk of estimates are held.

    With join_tail, a final remainder shorter than half a hop beyond the overlap is joined to the
    chunk before it, so that no chunk is much shorter than the overlap.
    """
    chunk, overlap, hop = chunk_geometry(chunk_samples, overlap_samples, align)
    if chunk == 0:
        parts = [np.asarray(b, np.float32).reshape(-1) for b in blocks]
        mixture = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        if len(mixture):
            yield _run_model(model_fn, mixture)
        return
    fade_out, fade_in = crossfade_windows(overlap) if overlap else (None, None)
    # A chunk is run as soon as it is certain that it is not the last one, i.e. once the buffer
    # holds chunk + hop // 2 samples; the final chunk runs when the stream ends.
    enough = chunk + hop // 2 if join_tail else chunk
    buffer = np.zeros(0, np.float32)      # mixture from the start of the next chunk on
    tail = None                           # previous chunk's estimates on the overlap [C, overlap]

    def process(segment, final):
        nonlocal tail
        estimates = _run_model(model_fn, segment)
        if tail is not None:
            estimates = estimates[match_order(tail, estimates[:, :overlap])]
            head = tail * fade_out + estimates[:, :overlap] * fade_in
            estimates = np.concatenate([head, estimates[:, overlap:]], axis=1)
        if final:
            tail = None
            return estimates
        tail = estimates[:, len(segment) - overlap:].copy() if overlap else None
        return estimates[:, :len(segment) - overlap]

    for block in blocks:
        block = np.asarray(block, np.float32).reshape(-1)
        buffer = np.concatenate([buffer, block]) if len(buffer) else block
        while len(buffer) >= enough:
            yield process(buffer[:chunk], final=False)
            buffer = buffer[hop:]
    if len(buffer) > overlap or (tail is None and len(buffer)):
        yield process(buffer, final=True)
    elif tail is not None:
        # Only reachable when the stream ends exactly inside the overlap of the previous chunk.
        yield tail[:, :len(buffer)]


def separate_in_chunks(model_fn, mixture, chunk_samples, overlap_samples, align=1):
    """Separate mixture [T] (or [1, T]) in overlapping chunks -> estimates [C, T] float32.

    See `stream_separate` for the arguments; chunk_samples <= 0 or T <= chunk_samples is one pass.
    """
    mixture = np.asarray(mixture, np.float32).reshape(-1)
    if chunk_samples <= 0 or len(mixture) <= chunk_samples:
        return _run_model(model_fn, mixture)
    parts = list(stream_separate(model_fn, [mixture], chunk_samples, overlap_samples, align))
    return np.concatenate(parts, axis=1)


def model_function(net):
    """A model_fn (numpy [1, t] -> numpy [1, C, t]) around a MindSpore cell or GraphCell (its
    `cell`)."""
    import mindspore as ms

    def model_fn(mixture):
        return net(ms.Tensor(np.ascontiguousarray(mixture, np.float32))).asnumpy()
    model_fn.cell = net
    return model_fn


def dynamic_model_function(net):
    """A model_fn (numpy [1, t] -> [1, C, t]) for a cell, compiled once for all lengths.

    In graph mode a cell compiles one graph per input shape (seconds each, and each kept in
    memory); utterances and recordings all differ in length. A graph with a dynamic time axis is
    also leaner for long inputs (one speaker's mask at a time, src/model/cpu_engine.py).
    The cell is wrapped in a cell with a dynamic time axis (set_inputs), so that `net` itself,
    which training may be running with other shapes, keeps its inputs and parameter names.
    """
    import mindspore as ms
    from mindspore import nn

    if isinstance(net, nn.GraphCell) or not isinstance(net, nn.Cell):
        return model_function(net) if isinstance(net, nn.Cell) else net

    class _AnyLength(nn.Cell):
        def __init__(self, inner):
            super().__init__(auto_prefix=False)
            self.inner = inner

        def construct(self, mixture):
            return self.inner(mixture)

    wrapper = _AnyLength(net)
    wrapper.set_inputs(ms.Tensor(shape=[1, None], dtype=ms.float32))
    return model_function(wrapper)


def load_model(cfg, path):
    """A model_fn for the checkpoint (.ckpt), exported MINDIR (.mindir) or ONNX model (.onnx,
    run by onnxruntime: src/deploy/onnx_runtime.load_onnx) at `path`.

    A checkpoint is loaded into a ConvTasNet built from `cfg` (src.model.checkpoint.load_network) and
    run through one graph for all lengths (dynamic_model_function); a MINDIR is loaded with
    mindspore.load and run through nn.GraphCell. A MINDIR exported with a fixed input length
    (cfg.input_length > 0) gets every chunk zero-padded to that length; its model_fn has
    `max_samples` set to that length.
    """
    if not os.path.isfile(path):
        raise UserError(f"{path}: model file not found")
    if path.lower().endswith(".onnx"):
        from src.deploy.onnx_runtime import load_onnx
        return load_onnx(path)
    from src.deploy.export import load_mindir
    from src.model.checkpoint import load_network

    if path.lower().endswith(".mindir"):
        graph_fn = model_function(load_mindir(path))

        def run(mixture):
            try:
                estimates = graph_fn(mixture)
                problem = None if estimates.shape[-1] == mixture.shape[-1] else \
                    f"it returned {estimates.shape[-1]} samples"
            except (RuntimeError, ValueError) as err:
                problem = str(err).splitlines()[0][:100]
            if problem:
                raise UserError(f"{path}: the MINDIR refused an input of {mixture.shape[-1]} "
                                "samples; if it was exported with a fixed length, pass that "
                                f"--input_length ({problem})")
            return estimates
        fixed = int(getattr(cfg, "input_length", 0) or 0)
        if fixed <= 0:
            return run

        def padded_fn(mixture):
            t = mixture.shape[-1]
            if t > fixed:
                raise UserError(f"{path}: the MINDIR takes {fixed} samples (--input_length), "
                                f"got {t}")
            padded = np.zeros((1, fixed), np.float32)
            padded[:, :t] = mixture
            return run(padded)[..., :t]
        padded_fn.max_samples = fixed
        return padded_fn
    return dynamic_model_function(load_network(cfg, path))
