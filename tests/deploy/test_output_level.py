import os

import numpy as np
import pytest
import soundfile as sf

from src.data.audio import resample_audio
from src.deploy.output_level import LevelMatcher, check_output_settings, match_mixture_level
from src.deploy.separation import run_separation
from src.evaluation.evaluate import score_utterance
from src.model_utils.config import load_config
from src.model_utils.errors import UserError
from helpers import RATE, run_net, separation_config, voices


def speech_like(n, seed):
    """Two independent amplitude-modulated noise 'sources' [2, n]."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / RATE
    envelopes = np.stack([1 + np.sin(2 * np.pi * 3 * t), 1 + np.cos(2 * np.pi * 2 * t)])
    return (0.1 * envelopes * rng.standard_normal((2, n))).astype(np.float32)


def test_gains_recover_the_scale_of_each_source():
    sources = speech_like(8000, 0)
    mixture = sources.sum(axis=0)
    # what an SI-SNR model may return: the right signals at arbitrary scales and signs
    estimates = np.stack([37.0 * sources[0], -0.02 * sources[1]])
    np.testing.assert_allclose(match_mixture_level(estimates, mixture), sources, rtol=1e-5,
                               atol=1e-7)
    # with errors in the estimates: the least-squares solution, checked against numpy's lstsq
    noisy = estimates + 0.3 * speech_like(8000, 1)
    expected = np.linalg.lstsq(noisy.T.astype(np.float64), mixture.astype(np.float64),
                               rcond=None)[0]
    level = LevelMatcher(2)
    level.update(mixture, noisy)
    np.testing.assert_allclose(level.gains(limit=None), expected, rtol=1e-6)


def test_blocks_give_the_gains_of_the_whole_signal():
    sources = speech_like(5000, 2)
    estimates = np.stack([5 * sources[0] + sources[1], 3 * sources[1]])
    mixture = sources.sum(axis=0)
    whole, blocks = LevelMatcher(2), LevelMatcher(2)
    whole.update(mixture, estimates)
    for start, stop in ((0, 1), (1, 1000), (1000, 1000), (1000, 5000)):
        blocks.update(mixture[start:stop], estimates[:, start:stop])
    np.testing.assert_allclose(blocks.gains(), whole.gains(), rtol=1e-10)


def test_clipping_guard_scales_all_sources_together():
    sources = speech_like(4000, 3)
    mixture = 30.0 * sources.sum(axis=0)          # the mixture itself exceeds full scale
    out = match_mixture_level(sources, mixture)
    assert np.abs(out).max() == pytest.approx(1.0, rel=1e-6)
    # the relative levels of the least-squares solution are kept
    np.testing.assert_allclose(out / np.abs(out).max(), sources / np.abs(sources).max(),
                               rtol=1e-5, atol=1e-6)
    unguarded = LevelMatcher(2)
    unguarded.update(mixture, sources)
    np.testing.assert_allclose(unguarded.gains(limit=None), [30.0, 30.0], rtol=1e-6)


def test_degenerate_estimates_fall_back_to_one_common_gain():
    sources = speech_like(4000, 4)
    mixture = sources.sum(axis=0)
    # two copies of the mixture at different scales (collinear): per-source gains are
    # undetermined; one gain for both makes their sum the mixture and keeps their ratio 4:1
    copies = np.stack([40 * mixture, 10 * mixture])
    out = match_mixture_level(copies, mixture)
    np.testing.assert_allclose(out, [0.8 * mixture, 0.2 * mixture], rtol=1e-5, atol=1e-7)
    # a silent estimate stays silent and the other is the projection of the mixture on it
    out = match_mixture_level(np.stack([20 * sources[0], np.zeros(4000, np.float32)]), mixture)
    assert np.all(out[1] == 0)
    s0 = sources[0].astype(np.float64)
    np.testing.assert_allclose(out[0], s0 @ mixture / (s0 @ s0) * s0, rtol=1e-4, atol=1e-7)
    # a near-silent estimate (numerical noise) is not blown up to the mixture's level
    whisper = 1e-9 * speech_like(4000, 5)[0]
    out = match_mixture_level(np.stack([20 * sources[0], whisper]), mixture)
    assert np.abs(out[1]).max() < 1e-6
    # a silent mixture gives silent outputs, every estimate silent stays silent
    assert np.all(match_mixture_level(20 * sources, np.zeros(4000)) == 0)
    assert np.all(match_mixture_level(np.zeros((2, 4000)), mixture) == 0)
    assert np.all(np.isfinite(match_mixture_level(np.zeros((2, 4000)), np.zeros(4000))))


def test_scores_do_not_change_with_the_output_level():
    # SI-SNR, BSS Eval v3 (512-tap distortion filter) and STOI are invariant to a gain per source
    sources = speech_like(16000, 6)
    mixture = sources.sum(axis=0)
    artifacts = 0.05 * speech_like(16000, 7)        # keeps SAR finite (not numerical noise)
    raw = np.stack([12.0 * (sources[0] + 0.2 * sources[1] + artifacts[0]),
                    -7.0 * (sources[1] + 0.3 * sources[0] + artifacts[1])])
    rescaled = match_mixture_level(raw, mixture)
    assert not np.allclose(rescaled, raw)
    metrics = ("sdr", "sir", "sar", "stoi", "estoi")
    before, _ = score_utterance(raw, sources, mixture, True, metrics, RATE)
    after, _ = score_utterance(rescaled, sources, mixture, True, metrics, RATE)
    assert set(before) == {"si_snr", "si_snri", "sdr", "sdri", "sir", "sar", "stoi", "stoi_mix",
                           "estoi", "estoi_mix"}
    for key in before:
        assert after[key] == pytest.approx(before[key], abs=1e-3), key


def test_raw_output_refused_in_16_bit():
    with pytest.raises(UserError, match="output_scale: raw .* --output_format=float32"):
        check_output_settings(load_config(["--output_scale=raw"]))
    with pytest.raises(UserError, match="output_format: expected one of"):
        load_config(["--output_format=pcm24"])


@pytest.mark.parametrize("rate,channels", [(RATE, 1), (16000, 2)])
def test_separate_writes_16_bit_at_the_mixture_level(models, tmp_path, rate, channels):
    path = tmp_path / "talk.wav"
    sf.write(path, voices(1.5, rate, channels), rate, subtype="PCM_16")
    written = run_separation(separation_config(models, "gln", path, tmp_path / "out"), log=lambda line: None)
    mixture, _ = sf.read(path, dtype="float32", always_2d=True)
    mixture = mixture.mean(axis=1)
    # reference: the whole file through the network in one piece, then the one-shot gains
    raw = resample_audio(run_net(models[1]["gln"], resample_audio(mixture, rate, RATE)), RATE, rate)
    raw = raw[:, :len(mixture)]
    expected = match_mixture_level(raw, mixture[:raw.shape[1]])
    # the random tiny model is quieter than its input: the level really changes
    assert np.abs(expected).max() > 1.3 * np.abs(raw).max()
    for c, out in enumerate(written):
        assert sf.info(out).subtype == "PCM_16"
        data, _ = sf.read(out, dtype="float32")
        assert len(data) == len(mixture) and np.abs(data).max() <= 1.0
        n = expected.shape[1]
        np.testing.assert_allclose(data[:n], expected[c], atol=1e-3 * np.abs(expected).max() + 1e-4)
    assert not [n for n in os.listdir(tmp_path / "out") if n.startswith(".tmp")]


def test_eval_summary_is_the_same_on_rescaled_outputs():
    from helpers import make_dataset
    from src.evaluation.evaluate import evaluate
    lengths = [8000, 9000]
    data, sources, _ = make_dataset(lengths, seed=7)
    rng = np.random.default_rng(3)
    noise = {n: 0.3 * rng.standard_normal((2, n)) for n in lengths}

    def raw(batch):                     # loud, swapped estimates with leakage and noise
        n = batch.shape[-1]
        src = sources[lengths.index(n), :, :n]
        est = np.stack([-25.0 * (src[1] + 0.2 * src[0]), 9.0 * src[0]]) + noise[n]
        return est[None].astype(np.float32)

    def rescaled(batch):
        return match_mixture_level(raw(batch)[0], batch[0])[None]

    metrics = ("si_snr", "sdr", "sir", "sar", "stoi", "estoi", "pesq")
    summaries = [evaluate(model, data, ["a", "b"], n_src=2, metrics=metrics,
                          sample_rate=RATE)[1] for model in (raw, rescaled)]
    assert set(summaries[0]) == set(summaries[1]) and summaries[0]["pesq"] is not None
    for key, value in summaries[0].items():
        assert summaries[1][key] == pytest.approx(value, abs=1e-3), key
