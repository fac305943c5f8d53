import csv
import os
import warnings

import numpy as np
import pytest
import soundfile as sf

from src.evaluation.evaluate import evaluate, summary_line, write_results
from src.evaluation.scores import bss_eval, check_metrics, pesq_score, stoi_score
from src.model_utils.errors import UserError
from helpers import FIXTURES, make_dataset, speech_like

PESQ_FIXTURES = os.path.join(FIXTURES, "pesq")


def mixed_case(T=4000, seed=0):
    """References [2, T] and estimates [2, T] with a filtered target, interference and noise."""
    rng = np.random.default_rng(seed)
    refs = np.stack([speech_like(rng, T), speech_like(rng, T)]).astype(np.float64)
    ests = np.stack([np.convolve(refs[0], [0.9, 0.3, -0.1])[:T] + 0.3 * refs[1],
                     -2.0 * refs[1] + 0.1 * refs[0] + 2.0 * rng.standard_normal(T)])
    return refs, ests


def test_bss_eval_sdr_sir_sar_agree_with_mir_eval():
    from mir_eval.separation import bss_eval_sources
    refs, ests = mixed_case()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        expected = bss_eval_sources(refs, ests[::-1])
    sdr, sir, sar = bss_eval(refs, ests[::-1])           # the order is found as mir_eval finds it
    np.testing.assert_allclose(sdr, expected[0], atol=0.01)
    np.testing.assert_allclose(sir, expected[1], atol=0.01)
    np.testing.assert_allclose(sar, expected[2], atol=0.01)
    # the case has distinct values: interference dominates source 1, noise source 2
    assert sir[0] < sar[0] and sar[1] < sir[1]
    with pytest.raises(ValueError):
        bss_eval(refs, np.stack([ests[0], np.zeros_like(ests[1])]))


def test_stoi_and_estoi():
    rng = np.random.default_rng(1)
    speech, rate = sf.read(os.path.join(PESQ_FIXTURES, "speech.wav"), dtype="float64")
    assert rate == 16000
    refs = speech[None]
    for extended in (False, True):
        assert stoi_score(refs, refs, rate, extended) == pytest.approx(1.0, abs=1e-6)
        # intelligibility falls as the noise rises (STOI's floor for noise alone is well above 0)
        noise = rng.standard_normal(len(speech)) * np.std(speech)
        scores = [stoi_score(refs, [speech + gain * noise], rate, extended)
                  for gain in (0.1, 1.0, 10.0)]
        assert scores[0] > scores[1] > scores[2]
        assert stoi_score(refs, [noise], rate, extended) < scores[1]
        # too short for one STOI segment: undefined, left out (pystoi would give 1e-5)
        assert stoi_score(refs[:, 8000:12000], refs[:, 8000:12000], rate, extended) is None
    # the mean over sources
    pair = np.stack([speech, np.roll(speech, 4000)])
    noisy = pair + 0.5 * np.std(speech) * rng.standard_normal(pair.shape)
    assert stoi_score(pair, noisy, rate) == pytest.approx(
        np.mean([stoi_score(pair[i:i + 1], noisy[i:i + 1], rate) for i in range(2)]))


def test_pesq_published_value_and_bounds():
    ref, rate = sf.read(os.path.join(PESQ_FIXTURES, "speech.wav"), dtype="float32")
    deg, _ = sf.read(os.path.join(PESQ_FIXTURES, "speech_bab_0dB.wav"), dtype="float32")
    # the value the pesq package documents for its example pair (wide-band, 16 kHz)
    assert pesq_score(ref[None], deg[None], 16000) == pytest.approx(1.0832337, abs=1e-6)
    # an identical signal reaches the top of the MOS-LQO scales (4.64 wide-band, 4.55 narrow-band)
    assert pesq_score(ref[None], ref[None], 16000) > 4.6
    import librosa
    ref8 = librosa.resample(ref, orig_sr=16000, target_sr=8000)
    deg8 = librosa.resample(deg, orig_sr=16000, target_sr=8000)
    assert pesq_score(ref8[None], ref8[None], 8000) > 4.5
    assert 1.0 < pesq_score(ref8[None], deg8[None], 8000) < 2.5
    # no speech in the reference: undefined, left out
    silent = np.zeros((1, 8000), np.float32)
    assert pesq_score(silent, np.random.default_rng(0).standard_normal((1, 8000)), 8000) is None


def test_metric_names_checked():
    assert check_metrics(["si_snr", "stoi", "pesq"], 8000) == ("si_snr", "stoi", "pesq")
    with pytest.raises(UserError, match="metrics: unknown 'stoi2'; expected some of"):
        check_metrics(["stoi2"], 8000)
    with pytest.raises(UserError, match="metrics: pesq .* sample_rate 44100 Hz"):
        check_metrics(["pesq"], 44100)


def test_evaluate_reports_every_metric_per_utterance_and_mean(tmp_path):
    lengths = [8000, 12000]
    data, sources, mixture = make_dataset(lengths, seed=4)
    rng = np.random.default_rng(2)

    def model(batch):                 # the sources, swapped, with noise
        n = batch.shape[-1]
        index = lengths.index(n)
        est = sources[index, ::-1, :n] + 0.3 * rng.standard_normal((2, n))
        return est[None].astype(np.float32)

    metrics = ("si_snr", "sdr", "sir", "sar", "stoi", "estoi", "pesq")
    rows, summary = evaluate(model, data, ["a", "b"], n_src=2, metrics=metrics, sample_rate=8000)
    for row, n, src, mix in zip(rows, lengths, sources, mixture):
        for key in ("sdr", "sdri", "sir", "sar"):
            assert np.isfinite(row[key])
        # the estimates beat the mixture on every metric that has a baseline
        for key in ("stoi", "estoi", "pesq"):
            assert row[key] > row[key + "_mix"], key
        assert 0 < row["stoi"] <= 1 and 1 <= row["pesq"] <= 4.6
    for key in ("sir", "sar", "stoi", "stoi_mix", "estoi", "estoi_mix", "pesq", "pesq_mix"):
        assert summary[key] == pytest.approx(np.mean([r[key] for r in rows])), key
    line = summary_line(summary)
    assert "SIR" in line and "ESTOI" in line and "PESQ" in line
    csv_path, _ = write_results(str(tmp_path), rows, summary)
    with open(csv_path, newline="") as f:
        header = next(csv.reader(f))
    assert header == ["id", "length", "si_snr", "si_snri", "sdr", "sdri", "sir", "sar", "stoi",
                      "stoi_mix", "estoi", "estoi_mix", "pesq", "pesq_mix"]
    # metrics switched off leave no column
    rows, summary = evaluate(model, data, ["a", "b"], n_src=2, with_sdr=False,
                             metrics=("si_snr", "stoi"), sample_rate=8000)
    assert set(rows[0]) == {"id", "length", "si_snr", "si_snri", "sdr", "sdri", "stoi",
                            "stoi_mix"}
    assert "sir" not in summary and "pesq" not in summary and rows[0]["sdr"] is None
