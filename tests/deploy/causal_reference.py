"""An independent float64 numpy Conv-TasNet over the whole signal, from a checkpoint's parameters.

Written from the paper and the model's documented alignment, not from the code under test: the
reference that the offline causal model and the streaming separator are both checked against.
Frames last throughout: [K, channels].
"""
import numpy as np


def _weight(params, name):
    """Parameter `name` as float64 [out, in*kernel] (the 1-D convolutions are stored 4-D)."""
    value = params[name]
    value = value.asnumpy() if hasattr(value, "asnumpy") else np.asarray(value)
    return value.astype(np.float64).reshape(value.shape[0], -1)


def _vector(params, name):
    value = params[name]
    value = value.asnumpy() if hasattr(value, "asnumpy") else np.asarray(value)
    return value.astype(np.float64).reshape(-1)


def _prelu(x, slope):
    return np.maximum(x, 0) + slope * np.minimum(x, 0)


def _cumulative_norm(x, gamma, beta, eps=1e-8):
    """cLN of x [K, channels]: frame k with the mean and variance of frames 0..k, all channels."""
    count = np.arange(1, len(x) + 1, dtype=np.float64)[:, None] * x.shape[1]
    mean = np.cumsum(x.sum(axis=1, keepdims=True), axis=0) / count
    power = np.cumsum((x * x).sum(axis=1, keepdims=True), axis=0) / count
    var = np.maximum(power - mean * mean, 0)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def causal_reference(params, mixture, L, X, R, C, mask_nonlinear="relu",
                     encoder_activation="linear", lookahead=0):
    """Separate mixture [T] with a causal cLN Conv-TasNet in float64 -> estimates [C, T].

    `params` maps the model's parameter names to arrays or Tensors. The mixture is padded with
    L-1 zeros in front, so that the last frame writing output sample t ends at input sample
    floor(t / (L/2)) * L/2, and with zeros at the end so that frames cover every sample. With
    `lookahead` 1 (strides) the frames end L/2 samples later: L/2-1 zeros in front.
    """
    S, T = L // 2, len(mixture)
    front = L - 1 - lookahead * S
    K = max(1, (T + front - 1) // S)
    padded = np.zeros((K + 1) * S)
    padded[front:front + T] = mixture
    frames = np.lib.stride_tricks.sliding_window_view(padded, L)[::S][:K]      # [K, L]
    w = frames @ _weight(params, "encoder.weight").T                              # [K, N]
    if encoder_activation == "relu":
        w = np.maximum(w, 0)
    p = "separator."
    y = _cumulative_norm(w, _vector(params, p + "layer_norm.gamma"),
                         _vector(params, p + "layer_norm.beta"))
    x = y @ _weight(params, p + "bottleneck.weight").T + _vector(params, p + "bottleneck.bias")
    skip_sum = 0
    for i in range(R * X):
        b = f"{p}blocks.{i}."
        u = x @ _weight(params, b + "conv1x1.weight").T + _vector(params, b + "conv1x1.bias")
        u = _cumulative_norm(_prelu(u, _vector(params, b + "prelu1.w")),
                             _vector(params, b + "norm1.gamma"), _vector(params, b + "norm1.beta"))
        taps = _weight(params, b + "dconv.weight")                                # [H, P]
        dilation, P = 2 ** (i % X), taps.shape[1]
        history = np.concatenate([np.zeros(((P - 1) * dilation, u.shape[1])), u])
        v = sum(taps[:, j] * history[j * dilation:j * dilation + K] for j in range(P))
        v = _cumulative_norm(_prelu(v + _vector(params, b + "dconv.bias"),
                                    _vector(params, b + "prelu2.w")),
                             _vector(params, b + "norm2.gamma"), _vector(params, b + "norm2.beta"))
        x = x + v @ _weight(params, b + "res_conv.weight").T + _vector(params, b + "res_conv.bias")
        if b + "skip_conv.weight" in params:
            skip_sum = skip_sum + (v @ _weight(params, b + "skip_conv.weight").T
                                   + _vector(params, b + "skip_conv.bias"))
    features = _prelu(skip_sum if p + "blocks.0.skip_conv.weight" in params else x,
                      _vector(params, p + "mask_prelu.w"))
    scores = (features @ _weight(params, p + "mask_conv.weight").T
              + _vector(params, p + "mask_conv.bias"))
    scores = scores.reshape(K, C, -1)                                             # [K, C, N]
    if mask_nonlinear == "relu":
        masks = np.maximum(scores, 0)
    elif mask_nonlinear == "sigmoid":
        masks = 1 / (1 + np.exp(-scores))
    else:
        e = np.exp(scores - scores.max(axis=1, keepdims=True))
        masks = e / e.sum(axis=1, keepdims=True)
    segments = (masks * w[:, None]) @ _weight(params, "decoder.weight")           # [K, C, L]
    out = np.zeros((C, (K + 1) * S))
    for half in range(2):
        out[:, half * S:(K + half) * S] += segments[:, :, half * S:(half + 1) * S] \
            .transpose(1, 0, 2).reshape(C, -1)
    return out[:, :T]
