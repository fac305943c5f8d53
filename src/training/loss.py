"""SI-SNR loss with permutation-invariant training (PIT), for any number of sources C.

PIT is a wrapper over a pairwise score matrix, as in Asteroid: `pairwise_si_snr` scores every
estimate against every reference ([batch, C, C]); `PITLoss` evaluates all C! assignments as one
matrix product with a constant table of permutation matrices and keeps the best per utterance.
Padded samples (beyond each utterance's length) never count: signals are masked and made
zero-mean over their valid samples only. The epsilon keeps silent and all-zero signals finite.
"""
import itertools

import numpy as np
import mindspore as ms
from mindspore import nn, ops

EPS = 1e-8


def length_mask(lengths, n_samples):
    """[batch] int lengths -> [batch, 1, n_samples] float mask, 1 on valid samples."""
    positions = ops.arange(n_samples).reshape(1, -1)
    return (positions < lengths.reshape(-1, 1)).astype(ms.float32).expand_dims(1)


def pairwise_si_snr(estimates, references, lengths):
    """SI-SNR in dB of each estimate against each reference.

    Args:
        estimates: [batch, C, T] float32.
        references: [batch, C, T] float32.
        lengths: [batch] int32, valid samples of each utterance.
    Returns:
        [batch, C_est, C_ref] float32.
    """
    mask = length_mask(lengths, estimates.shape[-1])
    count = lengths.astype(ms.float32).reshape(-1, 1, 1)
    est = estimates * mask
    ref = references * mask
    est = (est - est.sum(axis=-1, keepdims=True) / count) * mask
    ref = (ref - ref.sum(axis=-1, keepdims=True) / count) * mask
    est = est.expand_dims(2)                                    # [batch, C_est, 1, T]
    ref = ref.expand_dims(1)                                    # [batch, 1, C_ref, T]
    dot = (est * ref).sum(axis=-1, keepdims=True)
    energy = (ref * ref).sum(axis=-1, keepdims=True)
    target = dot / (energy + EPS) * ref
    noise = est - target
    ratio = (target * target).sum(axis=-1) / ((noise * noise).sum(axis=-1) + EPS)
    return 10.0 * ops.log(ratio + EPS) / np.log(10.0)


def permutation_table(n_src):
    """All C! permutations as a tuple of tuples and as one-hot matrices [C!, C_est, C_ref].

    `perms[p][j]` is the estimate assigned to reference j under permutation p.
    """
    perms = list(itertools.permutations(range(n_src)))
    table = np.zeros((len(perms), n_src, n_src), np.float32)
    for p, perm in enumerate(perms):
        for j, i in enumerate(perm):
            table[p, i, j] = 1.0
    return perms, table


class PITLoss(nn.Cell):
    """Negative SI-SNR under the best permutation, averaged over sources and the batch.

    construct(estimates [batch, C, T], references [batch, C, T], lengths [batch]) -> scalar loss.
    """

    def __init__(self, n_src, pairwise=pairwise_si_snr):
        super().__init__()
        self.n_src = n_src
        self.pairwise = pairwise
        self.perms, table = permutation_table(n_src)
        self.table = ms.Tensor(table.reshape(len(self.perms), -1).T)    # [C*C, C!]

    def scores(self, estimates, references, lengths):
        """Mean SI-SNR of every permutation: [batch, C!], and the pairwise matrix."""
        pairwise = self.pairwise(estimates, references, lengths)
        flat = pairwise.reshape(pairwise.shape[0], -1)
        return ops.matmul(flat, self.table) / self.n_src, pairwise

    def construct(self, estimates, references, lengths):
        scores, _ = self.scores(estimates, references, lengths)
        return -scores.max(axis=1).mean()
