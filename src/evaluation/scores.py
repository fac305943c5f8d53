"""Separation scores beyond SI-SNR: BSS Eval v3 (SDR, SIR, SAR), STOI, ESTOI and PESQ.

- SDR, SIR, SAR: BSS Eval v3 (Vincent et al. 2006) with distortion filters of 512 taps and the
  best permutation, as the Conv-TasNet paper and Asteroid score. Computed with fast-bss-eval's
  numpy backend (exact solve, no conjugate-gradient approximation), which agrees with
  mir_eval's `bss_eval_sources` to within 0.01 dB and is faster (benchmarks/compare_bss_eval.py,
  numbers in benchmarks/README.md). Inputs are checked as mir_eval checks them: a silent
  reference or estimate raises ValueError, for SDR is undefined then.
- STOI and ESTOI (Taal et al. 2011; Jensen and Taal 2016) with pystoi, which resamples to its
  10 kHz internally.
- PESQ (ITU-T P.862) with the `pesq` package: narrow-band at 8 kHz, wide-band at 16 kHz; other
  rates are refused.

Every function takes estimates [C, T] already in the order of references [C, T] (except
`bss_eval`, which finds its own order) and returns means over the C sources.
"""
import warnings

import numpy as np

from src.model_utils.errors import UserError

BSS_METRICS = ("sdr", "sir", "sar")
EXTRA_METRICS = ("stoi", "estoi", "pesq")
METRICS = ("si_snr",) + BSS_METRICS + EXTRA_METRICS
PESQ_MODES = {8000: "nb", 16000: "wb"}


def check_metrics(names, sample_rate):
    """The metric names of the configuration as a tuple; UserError for an unknown or unusable one."""
    names = tuple(str(n) for n in names)
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise UserError(f"metrics: unknown {unknown[0]!r}; expected some of {list(METRICS)}")
    if "pesq" in names and sample_rate not in PESQ_MODES:
        raise UserError(f"metrics: pesq is defined at 8000 Hz (narrow-band) or 16000 Hz "
                        f"(wide-band), the data is at sample_rate {sample_rate} Hz")
    return names


def bss_eval(references, estimates, compute_permutation=True):
    """BSS Eval v3 of estimates [C, T] against references [C, T].

    Returns (sdr [C], sir [C], sar [C]) in dB in the references' order (under the best
    permutation when compute_permutation). Raises ValueError for a silent signal.
    """
    import fast_bss_eval
    from mir_eval.separation import validate

    references = np.asarray(references, np.float64)
    estimates = np.asarray(estimates, np.float64)
    validate(references, estimates)
    with np.errstate(divide="ignore"):   # a perfect estimate has no error: +inf dB, as mir_eval
        result = fast_bss_eval.bss_eval_sources(references, estimates, filter_length=512,
                                                use_cg_iter=None, zero_mean=False, clamp_db=None,
                                                compute_permutation=compute_permutation)
    return tuple(np.asarray(r, np.float64) for r in result[:3])


def stoi_score(references, estimates, sample_rate, extended=False):
    """Mean (E)STOI of estimates [C, T] against references [C, T] in the same order.

    None when a reference has too little speech for one 384-ms STOI segment after its silent
    frames are removed: pystoi then warns and returns 1e-5, which would drag the mean down.
    """
    from pystoi import stoi
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        values = [stoi(np.asarray(r, np.float64), np.asarray(e, np.float64), sample_rate,
                       extended=extended) for r, e in zip(references, estimates)]
    if any("Not enough STFT frames" in str(w.message) for w in caught):
        return None
    return float(np.mean(values))


def pesq_score(references, estimates, sample_rate):
    """Mean PESQ (MOS-LQO) of estimates [C, T] against references [C, T] in the same order.

    None when the PESQ model finds no speech in a reference (it is undefined then).
    """
    from pesq import PesqError, pesq
    try:
        return float(np.mean([pesq(sample_rate, np.asarray(r, np.float32),
                                   np.asarray(e, np.float32), PESQ_MODES[sample_rate])
                              for r, e in zip(references, estimates)]))
    except PesqError:
        return None


def extra_scores(reordered, references, mixture, metrics, sample_rate):
    """STOI / ESTOI / PESQ of reordered estimates [C, T], and of the mixture [T] as the baseline.

    Returns {name: value, name + '_mix': value} for each of those in `metrics`.
    """
    mixtures = np.broadcast_to(np.asarray(mixture), np.shape(references))
    scores = {}
    for name in EXTRA_METRICS:
        if name not in metrics:
            continue
        if name == "pesq":
            def score(signals):
                return pesq_score(references, signals, sample_rate)
        else:
            def score(signals, extended=name == "estoi"):
                return stoi_score(references, signals, sample_rate, extended)
        scores[name], scores[name + "_mix"] = score(reordered), score(mixtures)
    return scores
