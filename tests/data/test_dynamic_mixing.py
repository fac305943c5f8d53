import glob
import os

import numpy as np
import pytest
import mindspore as ms
import soundfile as sf

from src.data.dataset import create_eval_dataset, create_train_dataset
from src.data.dynamic_mixing import UtterancePool, render_mixture, speaker_of, speed_perturb
from src.model_utils.errors import UserError
from src.data.librimix import SplitIndex, load_split
from src.training.loss import PITLoss
from src.data.preparation import prepare_dataset
from helpers import config, make_tiny_librimix, read_float

SIZES = {"train-360": 12, "dev": 3, "test": 3}
SEGMENT = 0.5
S = 4000               # SEGMENT at 8 kHz; the utterances are 0.3-1.0 s


@pytest.fixture(scope="module")
def in_dir(tmp_path_factory):
    return make_tiny_librimix(tmp_path_factory.mktemp("librimix"), sizes=SIZES,
                              min_seconds=0.3, max_seconds=1.0)


@pytest.fixture(scope="module")
def data_dir(in_dir, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("data"))
    prepare_dataset(config(in_dir=in_dir, out_dir=out, preprocess_workers=1), log=lambda *_: None)
    return out


def dm_cfg(data_dir, **values):
    values = {"data_dir": data_dir, "segment": SEGMENT, "batch_size": 2, "dataset_workers": 1,
              "dynamic_mixing": True, **values}
    return config(**values)


def rows(dataset, epochs=1):
    """[[(mixture [S], sources [C, S], length), ...] per epoch]."""
    iterator = dataset.create_tuple_iterator(output_numpy=True, num_epochs=epochs)
    return [[(m, s, int(n)) for mix, src, lens in iterator for m, s, n in zip(mix, src, lens)]
            for _ in range(epochs)]


def same(a, b):
    return np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


@pytest.mark.slow
@pytest.mark.parametrize("fmt, workers", [("mindrecord", 1), ("json", 2)])
def test_mixture_is_exactly_the_sum_of_the_returned_sources(data_dir, fmt, workers):
    cfg = dm_cfg(data_dir, data_format=fmt, dataset_workers=workers,
                 speed_perturb="[0.9,1.0,1.1]", gain_db="[-5.0,5.0]")
    dataset = create_train_dataset(cfg)
    assert dataset.get_dataset_size() == SIZES["train-360"] // 2
    epochs = rows(dataset, 2)
    assert len(epochs[0]) == SIZES["train-360"]
    for mixture, sources, length in epochs[0] + epochs[1]:
        assert mixture.shape == (S,) and sources.shape == (2, S) and mixture.dtype == np.float32
        assert 0 < length <= S
        np.testing.assert_allclose(mixture, sources.sum(axis=0), rtol=0, atol=1e-7)
        assert not mixture[length:].any() and not sources[:, length:].any()
        assert np.all(np.abs(sources[:, :length]).max(axis=1) > 0)
    assert any(length < S for _, _, length in epochs[0])          # short utterances padded
    # the examples do not depend on the storage format or the number of worker processes
    other = rows(create_train_dataset(dm_cfg(data_dir, data_format="json", dataset_workers=1,
                                             speed_perturb="[0.9,1.0,1.1]", gain_db="[-5.0,5.0]")))
    assert all(same(a, b) for a, b in zip(epochs[0], other[0]))


def train_sources(data_dir):
    """{(mixture_ID, k): samples} of every source of the training split."""
    index = load_split(data_dir, "train-360", 2, 8000)
    return {(mid, k): read_float(index.paths[f"s{k + 1}"][i])
            for i, mid in enumerate(index.ids) for k in range(2)}


def origin(crop, sources):
    """The (mixture_ID, k) of the training source that `crop` is an exact piece of."""
    for key, full in sources.items():
        for start in np.flatnonzero(full[:len(full) - len(crop) + 1] == crop[0]):
            if np.array_equal(full[start:start + len(crop)], crop):
                return key
    raise AssertionError("a returned source is not a piece of any training source")


def test_sources_are_training_utterances_of_different_speakers(data_dir, in_dir):
    sources = train_sources(data_dir)
    held_out = {speaker_of(u) for split in ("dev", "test")
                for path in glob.glob(os.path.join(in_dir, split, "s1", "*.wav"))
                for u in os.path.basename(path)[:-4].split("_")}
    pairs = set()
    for mixture, src, length in rows(create_train_dataset(dm_cfg(data_dir)), 2)[1]:
        found = [origin(src[k, :length], sources) for k in range(2)]
        speakers = [speaker_of(mid.split("_")[k]) for mid, k in found]
        assert speakers[0] != speakers[1]
        assert not held_out & set(speakers)
        pairs.add(tuple(speakers))
    stored = {tuple(speaker_of(u) for u in mid.split("_")) for mid, _ in sources}
    assert pairs - stored                                  # new pairs of speakers


def test_same_seed_same_examples_new_ones_each_epoch(data_dir):
    first = rows(create_train_dataset(dm_cfg(data_dir, seed=3)), 2)
    again = rows(create_train_dataset(dm_cfg(data_dir, seed=3)), 2)
    other = rows(create_train_dataset(dm_cfg(data_dir, seed=4)), 1)
    assert all(same(a, b) for e in range(2) for a, b in zip(first[e], again[e]))
    assert not any(same(a, b) for a in first[0] for b in first[1])
    assert not any(same(a, b) for a in first[0] for b in other[0])


def test_ranks_draw_different_examples(data_dir):
    shares = [create_train_dataset(dm_cfg(data_dir), rank_id=r, rank_size=2) for r in range(2)]
    assert [d.get_dataset_size() for d in shares] == [SIZES["train-360"] // 2 // 2] * 2
    rank0, rank1 = (rows(d)[0] for d in shares)
    assert not any(same(a, b) for a in rank0 for b in rank1)


def test_resumed_pipeline_repeats_the_same_examples(data_dir):
    cfg = dm_cfg(data_dir, speed_perturb="[0.9,1.1]")
    steps = create_train_dataset(cfg).get_dataset_size()
    reference = [r for epoch in rows(create_train_dataset(cfg), 2) for r in epoch]
    resumed = create_train_dataset(cfg)
    resumed.set_init_step(steps + 1)
    iterator = resumed.create_tuple_iterator(output_numpy=True, num_epochs=2)
    rest = [(m, s, int(n)) for mix, src, lens in iterator for m, s, n in zip(mix, src, lens)]
    assert len(rest) == 2 * (steps - 1)
    assert all(same(a, b) for a, b in zip(rest, reference[2 * (steps + 1):]))


def test_speed_perturbation_changes_length_and_pitch():
    t = np.arange(8000) / 8000
    tone = np.sin(2 * np.pi * 200 * t).astype(np.float32)
    assert speed_perturb(tone, 1.0, 8000) is tone
    for factor in (0.9, 1.1):
        fast = speed_perturb(tone, factor, 8000)
        assert len(fast) == int(np.ceil(8000 * 8000 / round(8000 * factor)))
        spectrum = np.abs(np.fft.rfft(fast[200:-200] * np.hanning(len(fast) - 400), 1 << 16))
        assert abs(np.argmax(spectrum) * 8000 / (1 << 16) - 200 * factor) < 1.0


def test_gains_set_relative_levels_and_loud_mixtures_are_scaled_together():
    rng = np.random.default_rng(0)
    quiet, loud = rng.standard_normal((2, 3000)) * [[0.01], [0.1]]
    mixture, sources, length = render_mixture([quiet, loud], S, rng, gains_db=[3.0, -3.0])
    assert length == 3000 and mixture.shape == (S,)
    level = 10 * np.log10(np.mean(sources[:, :length].astype(np.float64) ** 2, axis=1))
    assert level[0] - level[1] == pytest.approx(6.0, abs=1e-3)
    assert np.mean(level) == pytest.approx(10 * np.log10(0.01 * 0.1), abs=0.1)
    mixture, sources, _ = render_mixture([quiet * 400, loud * 400], S, rng, gains_db=[3.0, -3.0])
    assert max(np.abs(mixture).max(), np.abs(sources).max()) == pytest.approx(0.9, abs=1e-6)
    np.testing.assert_allclose(mixture, sources.sum(axis=0), rtol=0, atol=1e-7)
    level = 10 * np.log10(np.mean(sources.astype(np.float64) ** 2, axis=1))
    assert level[0] - level[1] == pytest.approx(6.0, abs=1e-3)


def test_noise_at_the_drawn_snr():
    rng = np.random.default_rng(1)
    speech = list(rng.standard_normal((2, 5000)) * 0.05)
    noise = rng.standard_normal(1500) * 0.3              # shorter than the mixture: repeated
    mixture, sources, length = render_mixture(speech, S, rng, noise=noise, snr_db=5.0)
    residual = (mixture - sources.sum(axis=0)).astype(np.float64)
    assert length == S and residual.std() > 0
    snr = 10 * np.log10(np.sum(sources.sum(axis=0).astype(np.float64) ** 2) / np.sum(residual ** 2))
    assert snr == pytest.approx(5.0, abs=1e-3)


def test_mix_both_adds_training_noise(data_dir, in_dir, tmp_path):
    # a mix_both set: the demo mixtures plus white noise of RMS 0.01, as LibriMix writes it
    root = os.path.dirname(os.path.dirname(load_split(data_dir, "train-360", 2, 8000).paths["s1"][0]))
    rng = np.random.default_rng(2)
    noisy = tmp_path / "noisy" / "train-360"
    for stream in ("s1", "s2"):
        os.makedirs(noisy / stream)
        for path in glob.glob(os.path.join(root, stream, "*.wav")):
            os.symlink(path, noisy / stream / os.path.basename(path))
    os.makedirs(noisy / "mix_both")
    os.makedirs(noisy / "noise")
    for path in glob.glob(os.path.join(root, "mix_clean", "*.wav")):
        mix = read_float(path)
        noise = 0.01 * rng.standard_normal(len(mix))
        sf.write(noisy / "noise" / os.path.basename(path), noise, 8000, subtype="PCM_16")
        sf.write(noisy / "mix_both" / os.path.basename(path), mix + noise, 8000, subtype="PCM_16")
    out = str(tmp_path / "data")
    prepare_dataset(config(in_dir=str(tmp_path / "noisy"), out_dir=out, mix_type="mix_both",
                      splits="[train-360]", preprocess_workers=1), log=lambda *_: None)
    for snr, fmt in (("[]", "mindrecord"), ("[5.0,5.0]", "json")):
        examples = rows(create_train_dataset(dm_cfg(out, mix_type="mix_both", data_format=fmt,
                                                    noise_snr_db=snr)))[0]
        for mixture, sources, length in examples:
            speech = sources.sum(axis=0)[:length].astype(np.float64)
            residual = mixture[:length] - speech
            if snr == "[]":
                assert np.sqrt(np.mean(residual ** 2)) == pytest.approx(0.01, rel=0.15)
            else:
                assert 10 * np.log10(np.sum(speech ** 2) / np.sum(residual ** 2)) == \
                    pytest.approx(5.0, abs=1e-3)
    os.remove(noisy / "noise" / f"{load_split(out, 'train-360', 2, 8000).ids[0]}.wav")
    with pytest.raises(UserError, match=r"noise/\S+\.wav: file not found .*noise/ folder"):
        create_train_dataset(dm_cfg(out, mix_type="mix_both"))


def test_swapped_sources_give_the_same_pit_loss(data_dir):
    plain = rows(create_train_dataset(config(data_dir=data_dir, segment=SEGMENT, batch_size=2)))[0]
    swapped = rows(create_train_dataset(config(data_dir=data_dir, segment=SEGMENT, batch_size=2,
                                               swap_sources=True)))[0]
    flips = []
    for (mix_a, src_a, n_a), (mix_b, src_b, n_b) in zip(plain, swapped):
        assert np.array_equal(mix_a, mix_b) and n_a == n_b
        flips.append(not np.array_equal(src_a, src_b))
        if flips[-1]:
            assert np.array_equal(src_a, src_b[::-1])
    assert any(flips) and not all(flips)
    src_a = np.stack([r[1] for r in plain])
    src_b = np.stack([r[1] for r in swapped])
    lengths = ms.Tensor(np.array([r[2] for r in plain], np.int32))
    estimates = ms.Tensor(src_a + 0.01 * np.random.default_rng(0).standard_normal(src_a.shape)
                          .astype(np.float32))
    loss = PITLoss(2)
    assert float(loss(estimates, ms.Tensor(src_a), lengths).asnumpy()) == pytest.approx(
        float(loss(estimates, ms.Tensor(src_b), lengths).asnumpy()), abs=1e-5)


def test_validation_never_mixed(data_dir):
    def batches(**values):
        dataset, ids = create_eval_dataset(config(data_dir=data_dir, **values), "dev")
        return ids, [b for b in dataset.create_tuple_iterator(output_numpy=True, num_epochs=1)]
    ids, plain = batches()
    ids_dm, mixed = batches(dynamic_mixing=True, swap_sources=True, speed_perturb="[0.9]")
    assert ids == ids_dm
    assert all(np.array_equal(x, y) for a, b in zip(plain, mixed) for x, y in zip(a, b))


def test_pool_counts_each_utterance_once_and_draws_different_speakers():
    ids = ["1-10-0001_2-20-0001", "1-10-0001_3-30-0001", "1-10-0002_3-30-0002"]
    split = SplitIndex("split", {}, ids, np.array([100, 300, 200]), {})
    pool = UtterancePool(split, 2)
    assert pool.speakers == ["1", "2", "3"]
    assert sorted(map(tuple, pool.entries.tolist())) == [(0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]
    rng = np.random.default_rng(0)
    for _ in range(50):
        drawn = pool.draw(rng, 3)
        assert sorted(speaker_of(ids[r].split("_")[k]) for r, k in drawn) == ["1", "2", "3"]
    assert len(UtterancePool(split, 2, min_length=250).speakers) == 2


def test_bad_settings_are_refused(data_dir):
    for values, message in ((dict(speed_perturb="[0.1]"), "speed_perturb: expected"),
                            (dict(gain_db="[5.0]"), r"gain_db: expected \[\] or \[low, high\]"),
                            (dict(noise_snr_db="[5.0,1.0]"), "noise_snr_db: expected"),
                            (dict(short_policy="drop", segment=2.0), "0 speakers.*n_src = 2"),
                            (dict(batch_size=13), "need at least batch_size x ranks = 13")):
        with pytest.raises(UserError, match=message):
            create_train_dataset(dm_cfg(data_dir, **values))
