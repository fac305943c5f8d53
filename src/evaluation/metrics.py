"""Separation metrics in numpy: the reference that the MindSpore loss is checked against.

SI-SNR (Le Roux et al., "SDR - half-baked or well done?", 2019) with the same epsilon and the
same zero-mean convention as `src/training/loss.py`; SI-SNRi is the improvement over the mixture itself.
Arrays are [..., T] float; results are in dB with the leading axes kept.
"""
import itertools

import numpy as np

EPS = 1e-8


def si_snr(estimate, reference, eps=EPS):
    """Scale-invariant SNR in dB of estimate [..., T] against reference [..., T] -> [...]."""
    estimate = np.asarray(estimate, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    estimate = estimate - estimate.mean(axis=-1, keepdims=True)
    reference = reference - reference.mean(axis=-1, keepdims=True)
    dot = (estimate * reference).sum(axis=-1, keepdims=True)
    energy = (reference * reference).sum(axis=-1, keepdims=True)
    target = dot / (energy + eps) * reference
    noise = estimate - target
    ratio = (target ** 2).sum(axis=-1) / ((noise ** 2).sum(axis=-1) + eps)
    return 10.0 * np.log10(ratio + eps)


def best_permutation(estimates, references, eps=EPS):
    """The assignment of estimates [C, T] to references [C, T] with the highest mean SI-SNR.

    Returns (perm, si_snrs): `estimates[perm[j]]` goes with `references[j]`; si_snrs [C] in the
    references' order.
    """
    n_src = len(references)
    pairwise = si_snr(np.asarray(estimates)[:, None], np.asarray(references)[None], eps)  # [est, ref]
    perms = list(itertools.permutations(range(n_src)))
    scores = [np.mean([pairwise[p[j], j] for j in range(n_src)]) for p in perms]
    perm = perms[int(np.argmax(scores))]
    return np.array(perm), np.array([pairwise[perm[j], j] for j in range(n_src)])


def si_snri(estimates, references, mixture, eps=EPS):
    """Mean SI-SNR improvement (dB) of estimates [C, T] over mixture [T], under the best permutation.

    Returns (si_snr_mean, si_snri_mean, perm).
    """
    perm, scores = best_permutation(estimates, references, eps)
    baseline = si_snr(np.broadcast_to(mixture, np.shape(references)), references, eps)
    return float(scores.mean()), float((scores - baseline).mean()), perm
