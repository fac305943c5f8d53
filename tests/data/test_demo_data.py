import csv
import os
import subprocess
import sys

import librosa
import numpy as np
import pytest
import soundfile as sf

from make_demo_data import main
from src.data.demo_data import make_demo_librimix
from src.model_utils.errors import UserError
from helpers import ROOT, TINY_SIZES, make_tiny_librimix, read_float, wav_files



@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return make_tiny_librimix(tmp_path_factory.mktemp("demo"), seed=3, max_seconds=2.0)


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def speakers(mixture_id):
    return [utterance.split("-")[0] for utterance in mixture_id.split("_")]


def test_layout_and_metadata_like_librimix(demo):
    assert demo.endswith(os.path.join("Libri2Mix", "wav8k", "min"))
    for split, count in TINY_SIZES.items():
        header, rows = read_csv(os.path.join(demo, "metadata", f"mixture_{split}_mix_clean.csv"))
        assert header == ["mixture_ID", "mixture_path", "source_1_path", "source_2_path", "length"]
        assert len(rows) == count
        metrics_header, metrics = read_csv(os.path.join(demo, "metadata",
                                                        f"metrics_{split}_mix_clean.csv"))
        assert metrics_header == ["mixture_ID", "source_1_SNR", "source_2_SNR"]
        assert [r[0] for r in metrics] == [r[0] for r in rows]
        for mixture_id, mix_path, s1_path, s2_path, length in rows:
            assert len(set(speakers(mixture_id))) == 2               # two different speakers
            for folder, path in (("mix_clean", mix_path), ("s1", s1_path), ("s2", s2_path)):
                assert path == os.path.join(demo, split, folder, f"{mixture_id}.wav")
                info = sf.info(path)
                assert (info.samplerate, info.channels, info.subtype) == (8000, 1, "PCM_16")
                assert info.frames == int(length)
        assert sorted(os.listdir(os.path.join(demo, split))) == ["mix_clean", "s1", "s2"]
        assert len(wav_files(os.path.join(demo, split, "s2"))) == count


def test_mixture_is_the_sum_of_its_sources_at_random_levels(demo):
    _, rows = read_csv(os.path.join(demo, "metadata", "mixture_train-360_mix_clean.csv"))
    _, metrics = read_csv(os.path.join(demo, "metadata", "metrics_train-360_mix_clean.csv"))
    for (_, mix_path, s1_path, s2_path, _), (_, snr1, _) in zip(rows, metrics):
        mix, s1, s2 = read_float(mix_path), read_float(s1_path), read_float(s2_path)
        assert np.abs(mix - s1 - s2).max() <= 3 / 32768              # three roundings to 16 bits
        assert np.abs(mix).max() < 1.0
        measured = 10 * np.log10(np.sum(s1.astype(float) ** 2) / np.sum((mix - s1).astype(float) ** 2))
        assert measured == pytest.approx(float(snr1), abs=0.05)
    snrs = np.array([float(r[1]) for r in metrics])
    assert snrs.std() > 1.0 and np.abs(snrs).max() < 12          # LibriMix-like spread of levels


def test_splits_have_distinct_speakers(demo):
    found = {}
    for split in TINY_SIZES:
        _, rows = read_csv(os.path.join(demo, "metadata", f"mixture_{split}_mix_clean.csv"))
        found[split] = {spk for row in rows for spk in speakers(row[0])}
    assert len(found["train-360"]) >= 6
    assert not found["train-360"] & found["dev"] and not found["train-360"] & found["test"]
    assert not found["dev"] & found["test"]


def test_sources_are_speech_like_not_tones(demo):
    """Moving pitch, harmonics, syllable-rate loudness changes and pauses, different voices."""
    medians, onsets, seconds = [], 0, 0.0
    for path in wav_files(os.path.join(demo, "train-360", "s1")):
        x = read_float(path)
        frames = librosa.util.frame(x, frame_length=160, hop_length=80)      # 20 ms
        energy = (frames ** 2).mean(axis=0)
        loud = energy > 0.05 * energy.max()
        assert 0.05 < 1 - loud.mean() < 0.8                              # pauses and decays
        onsets += np.count_nonzero(np.diff(loud.astype(int)) == 1) + int(loud[0])
        seconds += len(x) / 8000
        f0 = librosa.yin(x, fmin=60, fmax=400, sr=8000, frame_length=400, hop_length=80)
        voiced = f0[:len(loud)][loud[:len(f0)]]
        assert np.percentile(voiced, 90) / np.percentile(voiced, 10) > 1.05   # pitch moves
        spectrum = np.abs(np.fft.rfft(x)) ** 2
        assert spectrum.max() < 0.2 * spectrum.sum()                       # not one tone
        medians.append(np.median(voiced))
    assert max(medians) / min(medians) > 1.3                               # different voices
    assert 1.5 < onsets / seconds < 8                                      # syllable rate


def test_deterministic_for_a_seed(demo, tmp_path):
    again = make_tiny_librimix(tmp_path / "a", seed=3, max_seconds=2.0)
    other = make_tiny_librimix(tmp_path / "b", seed=4, max_seconds=2.0)
    first = wav_files(os.path.join(demo, "test", "mix_clean"))
    assert [os.path.basename(p) for p in wav_files(os.path.join(again, "test", "mix_clean"))] == \
           [os.path.basename(p) for p in first]
    for path in first:
        with open(path, "rb") as f, open(path.replace(demo, again), "rb") as g:
            assert f.read() == g.read()
    assert wav_files(os.path.join(other, "test", "mix_clean")) != \
           [p.replace(demo, other) for p in first]


def test_libri3mix_layout(tmp_path):
    root = make_tiny_librimix(tmp_path, n_src=3, sizes={"train-360": 2, "dev": 1, "test": 1})
    assert root == os.path.join(str(tmp_path), "Libri3Mix", "wav8k", "min")
    header, rows = read_csv(os.path.join(root, "metadata", "mixture_dev_mix_clean.csv"))
    assert header[2:5] == ["source_1_path", "source_2_path", "source_3_path"]
    mix, *sources = [read_float(p) for p in rows[0][1:5]]
    assert np.abs(mix - sum(sources)).max() <= 4 / 32768


def test_finished_set_is_reused_and_other_folders_refused(demo, tmp_path):
    marker = os.path.join(demo, "demo_librimix.json")
    before = os.path.getmtime(marker)
    assert make_tiny_librimix(os.path.dirname(os.path.dirname(os.path.dirname(demo))), seed=3,
                              max_seconds=2.0) == demo
    assert os.path.getmtime(marker) == before
    with pytest.raises(UserError, match="not a demo set made with these parameters"):
        make_tiny_librimix(os.path.dirname(os.path.dirname(os.path.dirname(demo))), seed=5)
    os.makedirs(tmp_path / "Libri2Mix" / "wav8k" / "min" / "test")
    with pytest.raises(UserError, match="not a demo set"):
        make_demo_librimix(str(tmp_path))
    assert os.listdir(tmp_path / "Libri2Mix" / "wav8k" / "min") == ["test"]


def test_command_line(tmp_path):
    proc = subprocess.run([sys.executable, "make_demo_data.py", "--out_dir", str(tmp_path),
                           "--seed", "1", "--sizes", "2,1,1", "--min_seconds", "0.3",
                           "--max_seconds", "0.5"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": ROOT})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == os.path.join(str(tmp_path), "Libri2Mix", "wav8k", "min")
    assert len(wav_files(os.path.join(proc.stdout.strip(), "dev", "s1"))) == 1
    with pytest.raises(UserError, match=r"--sizes: expected three integers like 200,30,30, got '2,1'"):
        main(["--out_dir", str(tmp_path / "x"), "--sizes", "2,1"])


def test_noisy_set_like_librimix_with_wham(tmp_path):
    root = make_tiny_librimix(tmp_path, sizes={"train-360": 2, "dev": 1, "test": 2}, noisy=True)
    header, rows = read_csv(os.path.join(root, "metadata", "mixture_test_mix_both.csv"))
    assert header == ["mixture_ID", "mixture_path", "source_1_path", "source_2_path", "noise_path",
                      "length"]
    single_header, single = read_csv(os.path.join(root, "metadata", "mixture_test_mix_single.csv"))
    assert single_header == ["mixture_ID", "mixture_path", "source_1_path", "noise_path", "length"]
    metrics_header, metrics = read_csv(os.path.join(root, "metadata", "metrics_test_mix_both.csv"))
    assert metrics_header == ["mixture_ID", "source_1_SNR", "source_2_SNR", "noise_SNR"]
    for (mixture_id, mix_path, s1_path, s2_path, noise_path, _), row_single, row_metrics in zip(
            rows, single, metrics):
        mix, s1, s2, noise = (read_float(p) for p in (mix_path, s1_path, s2_path, noise_path))
        assert np.abs(mix - s1 - s2 - noise).max() <= 4 / 32768
        assert np.abs(read_float(row_single[1]) - s1 - noise).max() <= 3 / 32768
        clean = read_float(os.path.join(root, "test", "mix_clean", f"{mixture_id}.wav"))
        assert np.abs(clean - s1 - s2).max() <= 3 / 32768           # same sources in both mixtures
        noise_snr = 10 * np.log10(np.sum(noise.astype(float) ** 2) /
                                  np.sum((mix - noise).astype(float) ** 2))
        assert noise_snr == pytest.approx(float(row_metrics[3]), abs=0.05)
        assert -20 < noise_snr < 0                                   # quieter than the speech


def mixture_sexes(root, seed, sizes):
    """For every mixture of every split: the sexes (True = female) of its speakers."""
    from src.data.demo_data import _speakers
    female = {str(spk.id): spk.female for split in _speakers(seed, sizes).values() for spk in split}
    out = []
    for split in sizes:
        _, rows = read_csv(os.path.join(root, "metadata", f"mixture_{split}_mix_clean.csv"))
        out += [[female[spk] for spk in speakers(row[0])] for row in rows]
    return out


def test_cross_gender_mixes_a_female_and_a_male_voice(tmp_path):
    sizes = {"train-360": 12, "dev": 4, "test": 4}
    crossed = make_demo_librimix(tmp_path / "x", seed=5, sizes=sizes, min_seconds=0.5,
                                 max_seconds=0.6, cross_gender=True)
    assert all(sorted(sexes) == [False, True] for sexes in mixture_sexes(crossed, 5, sizes))
    plain = make_demo_librimix(tmp_path / "p", seed=5, sizes=sizes, min_seconds=0.5,
                               max_seconds=0.6)
    assert any(len(set(sexes)) == 1 for sexes in mixture_sexes(plain, 5, sizes))
