"""Bringing separated signals to the level of their mixture, and writing them as audio.

A network trained with SI-SNR leaves the scale of each estimate free: its outputs can be tens of
times louder than the input, and a player clips them. Every separated signal a user gets is
therefore rescaled (unless `output_scale: raw`):

1. one gain per source, g [C], chosen by least squares so that the sum of the estimates best
   matches the mixture: min_g || m - sum_c g_c s_c ||^2, i.e. the normal equations G g = b with
   G = S S^T [C, C] and b = S m [C];
2. a guard: where the largest sample of the rescaled sources would exceed full scale (1.0), all
   sources are scaled down together by the same factor, so their relative levels are kept.

Degenerate cases fall back to one common gain for all sources (the network's relative levels are
then kept): estimates that are (nearly) collinear, such as two copies of the mixture, make G
singular and the per-source gains meaningless. A (near-)silent estimate takes no part in the
solve and gets the common gain, so that it stays (near-)silent instead of being blown up; a silent
mixture gives silent outputs.

Separation scores are not changed by this: SI-SNR is invariant to any gain, and BSS Eval v3's
SDR, SIR and SAR (whose 512-tap distortion filter absorbs any per-source gain) too, as are STOI
and ESTOI (tested in tests/deploy/test_output_level.py).

The statistics are sums over samples, so `LevelMatcher` accumulates them block by block for
signals streamed from a file, and `match_mixture_level` is the one-shot form for arrays in memory.
"""
import numpy as np

from src.model_utils.errors import UserError

FULL_SCALE = 1.0
# A source with less than this fraction of the loudest estimate's energy counts as silent.
SILENT_ENERGY = 1e-10
# Smallest eigenvalue of the estimates' correlation matrix below which they count as collinear:
# the per-source gains would then amplify the small differences between the estimates.
COLLINEAR = 1e-6
SUBTYPES = {"pcm16": "PCM_16", "float32": "FLOAT"}


class LevelMatcher:
    """Least-squares mixture-level gains from statistics accumulated block by block.

    update(mixture [n], estimates [C, n]) for consecutive blocks, then gains() -> g [C].
    """

    def __init__(self, n_src):
        self.gram = np.zeros((n_src, n_src))       # G = S S^T
        self.cross = np.zeros(n_src)               # b = S m
        self.peaks = np.zeros(n_src)               # max_t |s_c(t)|

    def update(self, mixture, estimates):
        """Add a block: mixture [n] and estimates [C, n] covering the same samples."""
        s = np.asarray(estimates, np.float64)
        m = np.asarray(mixture, np.float64)
        if s.ndim != 2 or s.shape[0] != len(self.cross) or m.shape != s.shape[1:]:
            raise ValueError(f"expected mixture [n] and estimates [{len(self.cross)}, n], got "
                             f"{list(m.shape)} and {list(s.shape)}")
        if m.size == 0:
            return
        self.gram += s @ s.T
        self.cross += s @ m
        self.peaks = np.maximum(self.peaks, np.abs(s).max(axis=1))

    def gains(self, limit=FULL_SCALE):
        """Per-source gains g [C]: least squares to the mixture, then the clipping guard.

        limit: the largest absolute sample value allowed after the gains (None: no guard).
        """
        gains = _least_squares_gains(self.gram, self.cross)
        if limit is not None:
            peak = float(np.max(np.abs(gains) * self.peaks, initial=0.0))
            if peak > limit:
                gains = gains * (limit / peak)
        return gains


def _least_squares_gains(gram, cross):
    energy = np.diag(gram)
    gains = np.zeros(len(cross))
    if energy.max(initial=0.0) <= 0.0:
        return gains                                  # every estimate is silent: nothing to scale
    total = gram.sum()                                # || sum_c s_c ||^2
    # the common gain: the best single factor for the sum of all estimates
    common = cross.sum() / total if total > 0 else 0.0
    active = energy > SILENT_ENERGY * energy.max()
    gains[:] = common
    if active.sum() == 0:
        return gains
    g_act = gram[np.ix_(active, active)]
    norms = np.sqrt(np.diag(g_act))
    correlation = g_act / np.outer(norms, norms)
    if np.linalg.eigvalsh(correlation).min() < COLLINEAR:
        return gains                                  # collinear estimates: the common gain
    gains[active] = np.linalg.solve(g_act, cross[active])
    return gains


def match_mixture_level(estimates, mixture, limit=FULL_SCALE):
    """Estimates [C, T] brought to the level of mixture [T] (float32 [C, T]). See the module doc."""
    estimates = np.asarray(estimates)
    matcher = LevelMatcher(estimates.shape[0])
    matcher.update(mixture, estimates)
    return (estimates * matcher.gains(limit)[:, None]).astype(np.float32)


def check_output_settings(cfg):
    """Refuse an output_scale / output_format pair that would damage the written audio."""
    if cfg.output_scale == "raw" and cfg.output_format == "pcm16":
        raise UserError("output_scale: raw keeps the network's own level, which can exceed full "
                        "scale and would clip in 16-bit PCM; pass --output_format=float32 too")


def output_subtype(cfg):
    """The soundfile subtype of written WAVs for cfg.output_format."""
    return SUBTYPES[cfg.output_format]
