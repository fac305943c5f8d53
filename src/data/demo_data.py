"""A small synthetic LibriMix: the real folder layout and metadata CSVs, with speech-like voices.

Layout written (C = n_src, min mode, 16-bit PCM WAV like LibriMix; mix_clean, and with `noisy`
also noise/, mix_both/ and mix_single/ with their CSVs):
```
<root>/Libri<C>Mix/wav<k>k/min/
    train-360/ dev/ test/        each with mix_clean/ s1/ ... s<C>/  holding <mixture_ID>.wav
    metadata/mixture_<split>_mix_clean.csv   mixture_ID,mixture_path,source_1_path,...,length
    metadata/metrics_<split>_mix_clean.csv   mixture_ID,source_1_SNR,...
    demo_librimix.json           the generator's parameters (marks a finished set)
```
A voice is a harmonic source (all harmonics of a moving fundamental) shaped by three moving
formants, spoken in syllables (attack and decay at 3-6 syllables per second) with unvoiced bursts
and pauses. Each "speaker" has its own pitch range, vocal-tract length (formant scale), speaking
rate, intonation and breathiness; the splits have disjoint speakers. Mixtures follow LibriMix: each
utterance is scaled to a random loudness in [-33, -25] dB (RMS here, LUFS in LibriMix), the
utterances are cut to the shortest (min mode) and summed, and all are scaled down together when
the mixture would clip. Everything is drawn from numpy generators seeded by `seed`.

With `noisy`, every mixture also gets a noise (coloured noise with spectral bumps and a slow level
drift, standing in for WHAM!) at a random level in [-38, -30] dB, written to noise/, and the noisy
mixtures mix_both/ (sources + noise) and mix_single/ (s1 + noise), with their metadata CSVs.

Command line (make_demo_data.py): python make_demo_data.py --out_dir DIR [--seed 0] [--n_src 2] [--sizes 200,30,30]
    [--min_seconds 2] [--max_seconds 6] [--noisy]
"""
import csv
import json
import os
import shutil

import numpy as np

from src.data.audio import write_audio
from src.model_utils.errors import UserError

SPLITS = ("train-360", "dev", "test")
DEFAULT_SIZES = {"train-360": 200, "dev": 30, "test": 30}
SPEAKERS_PER_SPLIT = {"train-360": 16, "dev": 6, "test": 6}
MARKER = "demo_librimix.json"
HOP = 32  # control-grid step of pitch and formants, samples
# (F1, F2, F3) in Hz of an adult male voice, and relative formant amplitudes
VOWELS = np.array([[730, 1090, 2440], [270, 2290, 3010], [300, 870, 2240], [530, 1840, 2480],
                   [570, 840, 2410], [660, 1720, 2410], [490, 1350, 1690], [440, 1020, 2240]],
                  np.float64)
FORMANT_GAINS = np.array([1.0, 0.5, 0.25])
FORMANT_WIDTHS = np.array([90.0, 120.0, 170.0])
SPECTRAL_FLOOR = 0.02  # between formants, relative to the first formant's peak


class Speaker:
    """The fixed traits of one synthetic speaker."""

    def __init__(self, speaker_id, rng):
        self.id = speaker_id
        self.female = bool(rng.random() < 0.5)
        self.f0 = rng.uniform(165, 255) if self.female else rng.uniform(85, 150)
        self.tract = rng.uniform(1.08, 1.22) if self.female else rng.uniform(0.9, 1.05)
        self.rate = rng.uniform(3.0, 6.0)                 # syllables per second
        self.intonation = rng.uniform(0.1, 0.3)           # pitch-accent depth (fraction of f0)
        self.breath = rng.uniform(0.005, 0.03)            # aspiration noise relative to voicing
        self.tilt = rng.uniform(-1.6, -0.8)               # harmonic roll-off exponent
        self.chapters = rng.integers(1000, 99999, size=2)


def synthesize(speaker, seconds, sample_rate, rng):
    """One utterance of `speaker`, float64 [round(seconds * sample_rate)], peak 1.

    Pitch and formants are computed on a control grid of `HOP` samples and interpolated.
    """
    n = int(round(seconds * sample_rate))
    t_syll, f0_knots, formant_knots, envelope, bursts = _prosody(speaker, n, sample_rate, rng)
    ctrl = np.arange(0, n + 2 * HOP, HOP)
    f0_c = np.exp(np.interp(ctrl, t_syll, np.log(f0_knots)))
    f0_c *= 1.0 + 0.01 * rng.standard_normal(len(ctrl))                   # jitter
    formants_c = np.stack([np.interp(ctrl, t_syll, formant_knots[:, i]) for i in range(3)])
    pos, frac = np.divmod(np.arange(n), HOP)
    frac = (frac / HOP).astype(np.float32)

    def upsample(values):  # [..., len(ctrl)] -> [..., n], linear
        return values[..., pos] * (1 - frac) + values[..., pos + 1] * frac

    f0 = upsample(f0_c)
    phase = np.mod(2 * np.pi * np.cumsum(f0) / sample_rate, 2 * np.pi).astype(np.float32)
    harmonics = np.arange(1, int(0.47 * sample_rate / f0.min()) + 1)[:, None]       # [K, 1]
    freq_c = harmonics * f0_c[None]                                                  # [K, m]
    resonance = (FORMANT_GAINS[:, None, None] / (1.0 + ((freq_c[None] - formants_c[:, None]) /
                 (FORMANT_WIDTHS[:, None, None] * speaker.tract)) ** 2)).sum(axis=0) + SPECTRAL_FLOOR
    amp_c = harmonics.astype(float) ** speaker.tilt * resonance * (freq_c < 0.47 * sample_rate)
    offsets = rng.uniform(0, 2 * np.pi, size=(len(harmonics), 1)).astype(np.float32)
    waves = np.sin(harmonics.astype(np.float32) * phase[None] + offsets)            # [K, n]
    voiced = (upsample(amp_c.astype(np.float32)) * waves).sum(axis=0, dtype=np.float64)
    voiced /= np.abs(voiced).max() + 1e-9
    aspiration = np.convolve(rng.standard_normal(n), [1.0, -0.9])[:n] * speaker.breath  # tilted up
    hiss = np.convolve(rng.standard_normal(n), [1.0, -1.0])[:n] * bursts * 0.35          # high-pass
    signal = (voiced + aspiration) * envelope + hiss
    return signal / (np.abs(signal).max() + 1e-9)


def _prosody(speaker, n, sample_rate, rng):
    """Syllable timing: knot times, f0 and formants at the knots, amplitude envelope, burst gate."""
    envelope, bursts = np.zeros(n), np.zeros(n)
    times, f0s, formants = [0.0], [speaker.f0], [VOWELS[rng.integers(len(VOWELS))] * speaker.tract]
    pos = int(rng.uniform(0.0, 0.3) * sample_rate)
    while pos < n:
        length = int(sample_rate / speaker.rate * rng.uniform(0.6, 1.5))
        end = min(n, pos + length)
        rise = np.linspace(0, 1, end - pos, endpoint=False)
        shape = np.sin(np.pi * rise) ** 0.5 * (1.0 - 0.5 * rise)   # fast attack, decaying nucleus
        envelope[pos:end] = shape * rng.uniform(0.4, 1.0)
        if rng.random() < 0.5:  # an unvoiced consonant before the vowel
            burst = min(int(rng.uniform(0.03, 0.08) * sample_rate), end - pos)
            bursts[pos:pos + burst] = np.hanning(burst) * rng.uniform(0.3, 1.0)
        progress = pos / n
        accent = 1.0 + speaker.intonation * rng.uniform(-1.0, 1.0)
        times.append(pos + 0.5 * (end - pos))
        f0s.append(speaker.f0 * accent * (1.1 - 0.2 * progress))   # declination over the utterance
        formants.append(VOWELS[rng.integers(len(VOWELS))] * speaker.tract * rng.uniform(0.95, 1.05))
        pos = end
        if rng.random() < 0.25:  # a pause between words
            pos += int(rng.uniform(0.1, 0.45) * sample_rate)
    times.append(n)
    f0s.append(speaker.f0 * 0.9)
    formants.append(formants[-1])
    return np.array(times), np.array(f0s), np.array(formants), envelope, bursts


def _rms_db(x):
    return 20 * np.log10(np.sqrt(np.mean(x ** 2)) + 1e-12)


def _snr_db(signal, rest):
    return float(10 * np.log10(np.sum(signal ** 2) / (np.sum(rest ** 2) + 1e-12) + 1e-12))


def synthesize_noise(n, sample_rate, rng):
    """Ambient noise [n] (a stand-in for WHAM!): coloured noise with a few broad spectral bumps and
    a slow level drift, peak 1."""
    freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)
    shape = (1.0 + freqs / rng.uniform(100, 400)) ** -rng.uniform(0.5, 1.2)
    for _ in range(3):
        centre, width = rng.uniform(100, 0.45 * sample_rate), rng.uniform(100, 600)
        shape *= 1.0 + rng.uniform(0.5, 3.0) * np.exp(-0.5 * ((freqs - centre) / width) ** 2)
    spectrum = (rng.standard_normal(len(freqs)) + 1j * rng.standard_normal(len(freqs))) * shape
    noise = np.fft.irfft(spectrum, n)
    drift = 1.0 + 0.3 * np.sin(2 * np.pi * rng.uniform(0.1, 0.8) * np.arange(n) / sample_rate
                               + rng.uniform(0, 2 * np.pi))
    noise *= drift
    return noise / (np.abs(noise).max() + 1e-9)


def set_levels(utterances, rng, noise=None):
    """LibriMix levels: each whole utterance at a random loudness in [-33, -25] dB and the noise in
    [-38, -30] dB (RMS here, LUFS in LibriMix), all cut to the shortest utterance, and all scaled
    down together to a peak of 0.9 when the noisiest mixture or a source would clip.

    Args:
        utterances: C float arrays of any lengths; noise: None or an array at least as long.
    Returns:
        (sources [C, T], noise [T] or None), float64.
    """
    length = min(len(u) for u in utterances)
    sources = np.stack([u[:length] * 10 ** ((rng.uniform(-33, -25) - _rms_db(u)) / 20)
                        for u in utterances])
    loudest = sources.sum(axis=0)
    if noise is not None:
        noise = noise[:length] * 10 ** ((rng.uniform(-38, -30) - _rms_db(noise[:length])) / 20)
        loudest = loudest + noise
    peak = max(np.abs(loudest).max(), np.abs(sources).max())
    if peak >= 1.0:
        sources *= 0.9 / peak
        noise = None if noise is None else noise * (0.9 / peak)
    return sources, noise


def mix_sources(utterances, rng):
    """LibriMix's clean mixing (see set_levels): (mixture [T], sources [C, T]) float64."""
    sources, _ = set_levels(utterances, rng)
    return sources.sum(axis=0), sources


def make_demo_librimix(root, seed=0, n_src=2, sample_rate=8000, sizes=None,
                       min_seconds=2.0, max_seconds=6.0, noisy=False, cross_gender=False):
    """Write a synthetic LibriMix under `root`; return its `Libri<C>Mix/wav<k>k/min` folder.

    Args:
        sizes: mixtures per split, {"train-360": 200, "dev": 30, "test": 30} by default.
        min_seconds, max_seconds: range of the utterance durations (mixtures get the shorter).
        cross_gender: every mixture draws its speakers from both sexes in turn (a female and a
            male voice for C=2), an easier task that small models learn in minutes.
        noisy: also write noise/, mix_both/ and mix_single/ (sep_noisy, enhancement), with their
            metadata, like LibriMix generated with WHAM! noise.
    A finished set with the same parameters is reused; another folder at that place is refused.
    """
    sizes = dict(DEFAULT_SIZES if sizes is None else sizes)
    if n_src < 1 or not 0 < min_seconds <= max_seconds or min(sizes.values()) < 1:
        raise UserError(f"demo set: expected n_src >= 1, 0 < min_seconds <= max_seconds and at least "
                        f"one mixture per split, got n_src={n_src}, {min_seconds}-{max_seconds} s, {sizes}")
    params = {"seed": seed, "n_src": n_src, "sample_rate": sample_rate, "sizes": sizes,
              "min_seconds": min_seconds, "max_seconds": max_seconds, "noisy": bool(noisy),
              "version": 1}
    if cross_gender:
        params["cross_gender"] = True
    parent = os.path.join(os.path.abspath(root), f"Libri{n_src}Mix", f"wav{sample_rate // 1000}k")
    final = os.path.join(parent, "min")
    if os.path.exists(final):
        marker = os.path.join(final, MARKER)
        if os.path.isfile(marker):
            with open(marker, encoding="utf-8") as f:
                if json.load(f) == params:
                    return final
        raise UserError(f"{final}: exists and is not a demo set made with these parameters "
                        "(choose another folder)")
    tmp = os.path.join(parent, f".tmp-min-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    speakers = _speakers(seed, sizes)
    for s, split in enumerate(sizes):
        _write_split(tmp, final, split, sizes[split], speakers[split], n_src, sample_rate,
                     (min_seconds, max_seconds), noisy, np.random.default_rng([seed, 1, s]),
                     cross_gender)
    with open(os.path.join(tmp, MARKER), "w", encoding="utf-8") as f:
        json.dump(params, f)
    os.replace(tmp, final)
    return final


def _speakers(seed, sizes):
    """Disjoint speakers per split, with LibriSpeech-like ids."""
    rng = np.random.default_rng([seed, 0])
    wanted = {split: SPEAKERS_PER_SPLIT.get(split, 6) for split in sizes}
    ids = rng.choice(np.arange(100, 9000), size=sum(wanted.values()), replace=False)
    out, used = {}, 0
    for split, count in wanted.items():
        out[split] = [Speaker(int(i), np.random.default_rng([seed, 2, int(i)]))
                      for i in ids[used:used + count]]
        used += count
    return out


def _write_split(tmp, final, split, count, speakers, n_src, sample_rate, seconds, noisy, rng,
                 cross_gender=False):
    """Synthesize and write one split; CSV paths name the final folder, as LibriMix's do."""
    if len(speakers) < n_src:
        raise UserError(f"demo set: split {split} has {len(speakers)} speakers, fewer than n_src")
    kinds = ["mix_clean"] + (["mix_both", "mix_single"] if noisy else [])
    rows = {kind: ([], []) for kind in kinds}                # per kind: mixture rows, metric rows
    next_utt = {}
    for _ in range(count):
        chosen = (_cross_gender_choice(speakers, n_src, rng) if cross_gender
                  else rng.choice(len(speakers), size=n_src, replace=False))
        utterances, names = [], []
        for j in chosen:
            spk = speakers[j]
            next_utt[spk.id] = next_utt.get(spk.id, -1) + 1
            chapter = spk.chapters[next_utt[spk.id] % len(spk.chapters)]
            names.append(f"{spk.id}-{chapter}-{next_utt[spk.id]:04d}")
            utterances.append(synthesize(spk, rng.uniform(*seconds), sample_rate, rng))
        noise = (synthesize_noise(min(map(len, utterances)), sample_rate, rng) if noisy else None)
        sources, noise = set_levels(utterances, rng, noise)
        mixture_id = "_".join(names)

        def path(folder):
            return os.path.join(final, split, folder, f"{mixture_id}.wav")

        signals = {f"s{c + 1}": sources[c] for c in range(n_src)}
        signals["mix_clean"] = sources.sum(axis=0)
        if noisy:
            signals.update(noise=noise, mix_both=signals["mix_clean"] + noise,
                           mix_single=sources[0] + noise)
        for folder, signal in signals.items():
            write_audio(os.path.join(tmp, split, folder, f"{mixture_id}.wav"),
                        signal.astype(np.float32), sample_rate, subtype="PCM_16")
        for kind in kinds:
            parts = [f"s{c + 1}" for c in range(1 if kind == "mix_single" else n_src)]
            parts += ["noise"] if kind != "mix_clean" else []
            rows[kind][0].append([mixture_id, path(kind)] + [path(p) for p in parts]
                                 + [sources.shape[1]])
            rows[kind][1].append([mixture_id] + [_snr_db(signals[p], signals[kind] - signals[p])
                                                 for p in parts])
    for kind in kinds:
        n_cols = 1 if kind == "mix_single" else n_src
        names = [f"source_{c + 1}" for c in range(n_cols)] + (["noise"] if kind != "mix_clean" else [])
        _write_csv(os.path.join(tmp, "metadata", f"mixture_{split}_{kind}.csv"),
                   ["mixture_ID", "mixture_path"] + [f"{n}_path" for n in names] + ["length"],
                   rows[kind][0])
        _write_csv(os.path.join(tmp, "metadata", f"metrics_{split}_{kind}.csv"),
                   ["mixture_ID"] + [f"{n}_SNR" for n in names], rows[kind][1])


def _cross_gender_choice(speakers, n_src, rng):
    """n_src speaker indices, alternately female and male, starting with a random sex."""
    groups = [[i for i, spk in enumerate(speakers) if spk.female == female]
              for female in (True, False)]
    if not all(groups):
        raise UserError("demo set: cross_gender needs female and male speakers in every split")
    first = rng.integers(2)
    picks = [groups[(first + c) % 2] for c in range(n_src)]
    chosen = []
    for group in picks:
        free = [i for i in group if i not in chosen]
        if not free:
            raise UserError("demo set: too few speakers of one sex for cross_gender")
        chosen.append(free[rng.integers(len(free))])
    return np.array(chosen)


def _write_csv(path, header, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
