import random

import numpy as np
import pytest

from src.data import mindrecord_io
from src.data.dataset import create_eval_dataset, create_train_dataset
from src.model_utils.errors import UserError
from src.data.librimix import load_split
from src.data.preparation import prepare_dataset
from helpers import config, make_tiny_librimix, read_float

SIZES = {"train-360": 10, "dev": 3, "test": 4}
SEGMENT = 0.5          # seconds; the utterances are 0.3-1.0 s, so some are shorter
S = 4000               # SEGMENT at 8 kHz


@pytest.fixture(scope="module")
def in_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("librimix")
    return make_tiny_librimix(root, sizes=SIZES, min_seconds=0.3, max_seconds=1.0)


@pytest.fixture(scope="module")
def data_dir(in_dir, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("data"))
    prepare_dataset(config(in_dir=in_dir, out_dir=out, preprocess_workers=1), log=lambda *_: None)
    return out


@pytest.fixture(scope="module")
def train_audio(data_dir):
    """ids, lengths and the WAV contents of the training split: the reference for every batch."""
    index = load_split(data_dir, "train-360", 2, 8000)
    mixtures = [read_float(p) for p in index.paths["mix"]]
    sources = [np.stack([read_float(index.paths[s][i]) for s in ("s1", "s2")])
               for i in range(len(index.ids))]
    return index, mixtures, sources


def train_cfg(data_dir, fmt="mindrecord", **values):
    values = {"data_dir": data_dir, "data_format": fmt, "segment": SEGMENT, "batch_size": 1,
              "dataset_workers": 2, **values}
    return config(**values)


def locate(row_mix, row_src, length, mixtures, sources):
    """(mixture index, crop start) of a training row, checked against the WAVs; AssertionError
    when the row is not a crop of one mixture with its own sources at the same place."""
    assert not row_mix[length:].any() and not row_src[:, length:].any()   # padding is zeros
    for i, full in enumerate(mixtures):
        if len(full) < length:
            continue
        for start in np.flatnonzero(full[:len(full) - length + 1] == row_mix[0]):
            if np.array_equal(full[start:start + length], row_mix[:length]):
                assert np.array_equal(sources[i][:, start:start + length], row_src[:, :length])
                return i, int(start)
    raise AssertionError("row is not a crop of any training mixture")


def epochs_of(dataset, epochs, train_audio):
    """[(mixture index, start, length) per row] per epoch."""
    index, mixtures, sources = train_audio
    seen = []
    iterator = dataset.create_tuple_iterator(output_numpy=True, num_epochs=epochs)
    for _ in range(epochs):
        rows = []
        for mix, src, lengths in iterator:
            for b in range(mix.shape[0]):
                i, start = locate(mix[b], src[b], int(lengths[b]), mixtures, sources)
                assert lengths[b] == min(S, index.lengths[i])
                rows.append((i, start, int(lengths[b])))
        seen.append(rows)
    return seen


@pytest.mark.parametrize("fmt", ["mindrecord", "json"])
def test_train_batches_are_aligned_crops_new_each_epoch(data_dir, train_audio, fmt):
    index = train_audio[0]
    dataset = create_train_dataset(train_cfg(data_dir, fmt, batch_size=3))
    assert dataset.get_col_names() == ["mixture", "sources", "lengths"]
    assert dataset.get_dataset_size() == len(index.ids) // 3
    batch = next(dataset.create_tuple_iterator(output_numpy=True, num_epochs=1))
    assert [(a.shape, a.dtype) for a in batch] == [((3, S), np.float32), ((3, 2, S), np.float32),
                                                   ((3,), np.int32)]
    first, second = epochs_of(dataset, 2, train_audio)
    starts = [{i: start for i, start, _ in epoch} for epoch in (first, second)]
    room = {i for i in starts[0].keys() & starts[1].keys() if index.lengths[i] - S > 200}
    assert room                                            # some mixtures have room to move
    assert all(starts[0][i] != starts[1][i] for i in room)
    assert [i for i, _, _ in first] != [i for i, _, _ in second]      # reshuffled


@pytest.mark.parametrize("policy", ["pad", "drop"])
def test_no_utterance_dropped_except_short_ones_on_request(data_dir, train_audio, policy):
    index = train_audio[0]
    long_enough = {i for i, n in enumerate(index.lengths) if n >= S}
    assert 0 < len(long_enough) < len(index.ids)           # the set has both kinds
    (epoch,) = epochs_of(create_train_dataset(train_cfg(data_dir, short_policy=policy)), 1,
                         train_audio)
    seen = sorted(i for i, _, _ in epoch)
    if policy == "pad":
        assert seen == list(range(len(index.ids)))
        assert {n for i, _, n in epoch if i not in long_enough} == \
               {index.lengths[i] for i in range(len(index.ids)) if i not in long_enough}
    else:
        assert seen == sorted(long_enough)


@pytest.mark.parametrize("ranks", [2, 3])
def test_ranks_get_disjoint_shares_of_the_whole(data_dir, train_audio, ranks):
    n = len(train_audio[0].ids)
    shares = []
    for rank in range(ranks):
        dataset = create_train_dataset(train_cfg(data_dir), rank_id=rank, rank_size=ranks)
        assert dataset.get_dataset_size() == -(-n // ranks)      # equal steps on every rank
        shares.append(epochs_of(dataset, 2, train_audio))
    for epoch in range(2):
        ids = [[i for i, _, _ in share[epoch]] for share in shares]
        assert sorted(set().union(*map(set, ids))) == list(range(n))
        assert sum(map(len, ids)) - n == (-n) % ranks          # only the padding repeats
        if n % ranks == 0:
            assert all(not set(a) & set(b) for j, a in enumerate(ids) for b in ids[j + 1:])


def test_same_seed_same_batches_other_seed_other_batches(data_dir):
    def batches(seed):
        dataset = create_train_dataset(train_cfg(data_dir, seed=seed, batch_size=2))
        return [m for m, _, _ in dataset.create_tuple_iterator(output_numpy=True, num_epochs=1)]
    a, b, c = batches(1), batches(1), batches(2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


@pytest.mark.parametrize("fmt", ["mindrecord", "json"])
def test_neighbouring_seeds_do_not_share_epoch_orders(data_dir, train_audio, fmt):
    # MindSpore shuffles epoch e with its global seed + e: were that seed the training seed,
    # seed 2 would train on seed 1's orders one epoch later.
    def orders(seed):
        dataset = create_train_dataset(train_cfg(data_dir, fmt, seed=seed))
        return [[i for i, _, _ in epoch] for epoch in epochs_of(dataset, 3, train_audio)]
    first, second = orders(1), orders(2)
    assert first == orders(1)
    for epoch in range(3):
        assert all(second[epoch] != first[other] for other in range(3)), epoch


def test_building_the_pipeline_leaves_the_global_generators_alone(data_dir):
    # The network's initialisers draw from numpy's global generator, and train.py builds the
    # pipeline first: its seed must not decide the initial weights.
    def draws(build):
        np.random.seed(5)
        random.seed(5)
        if build:
            create_train_dataset(train_cfg(data_dir, seed=3))
        return np.random.rand(3).tolist(), random.random()
    assert draws(True) == draws(False)


@pytest.mark.parametrize("fmt", ["mindrecord", "json"])
def test_resumed_pipeline_repeats_the_same_batches(data_dir, fmt):
    cfg = train_cfg(data_dir, fmt, batch_size=2)
    dataset = create_train_dataset(cfg)
    steps = dataset.get_dataset_size()
    iterator = dataset.create_tuple_iterator(output_numpy=True, num_epochs=3)
    reference = [b[0] for _ in range(3) for b in iterator]
    start = steps + 2                                      # third step of the second epoch
    resumed = create_train_dataset(cfg)
    resumed.set_init_step(start)
    rest = [b[0] for b in resumed.create_tuple_iterator(output_numpy=True, num_epochs=3)]
    assert len(rest) == steps - 2
    assert all(np.array_equal(x, y) for x, y in zip(rest, reference[start:]))


@pytest.mark.parametrize("fmt, shards", [("mindrecord", 1), ("mindrecord", 3), ("json", 1)])
def test_eval_gives_whole_utterances_in_id_order(data_dir, in_dir, tmp_path, monkeypatch, fmt,
                                                 shards):
    if shards > 1:   # FileWriter spreads the rows over the shards; MindDataset reads shard by shard
        monkeypatch.setattr(mindrecord_io, "ROWS_PER_WRITE", 3)
        data_dir = str(tmp_path)
        prepare_dataset(config(in_dir=in_dir, out_dir=data_dir, splits="[train-360]",
                          preprocess_workers=1, mindrecord_shards=shards), log=lambda *_: None)
        order = load_split(data_dir, "train-360", 2, 8000).mindrecord_order.tolist()
        assert order != sorted(order)
    cfg = train_cfg(data_dir, fmt)
    index = load_split(data_dir, "train-360", 2, 8000)
    dataset, ids = create_eval_dataset(cfg, "train-360")
    assert ids == index.ids
    rows = list(dataset.create_tuple_iterator(output_numpy=True, num_epochs=1))
    assert len(rows) == len(ids) == dataset.get_dataset_size()
    for i, (mix, src, lengths) in enumerate(rows):
        assert mix.shape == (1, index.lengths[i]) and src.shape == (1, 2, index.lengths[i])
        assert lengths.tolist() == [index.lengths[i]] and lengths.dtype == np.int32
        assert np.array_equal(mix[0], read_float(index.paths["mix"][i]))
        assert np.array_equal(src[0, 1], read_float(index.paths["s2"][i]))


def test_max_seconds_limits_validation_only_when_given(data_dir):
    cfg = train_cfg(data_dir)
    index = load_split(data_dir, "train-360", 2, 8000)
    limit = float(np.median(index.lengths)) / 8000
    dataset, ids = create_eval_dataset(cfg, "train-360", max_seconds=limit)
    expected = [m for m, n in zip(index.ids, index.lengths) if n <= limit * 8000]
    assert ids == expected and 0 < len(ids) < len(index.ids)
    lengths = [int(l[0]) for _, _, l in dataset.create_tuple_iterator(output_numpy=True, num_epochs=1)]
    assert lengths == [n for n in index.lengths if n <= limit * 8000]
    assert create_eval_dataset(cfg, "train-360")[1] == index.ids


def test_libri3mix_pipelines(tmp_path):
    in_dir = make_tiny_librimix(tmp_path / "in", n_src=3, sizes={"train-360": 4, "dev": 1, "test": 1})
    prepare_dataset(config(in_dir=in_dir, out_dir=tmp_path / "data", n_src=3, splits="[train-360,test]",
                      preprocess_workers=1), log=lambda *_: None)
    cfg = train_cfg(str(tmp_path / "data"), n_src=3, batch_size=2)
    mix, src, lengths = next(create_train_dataset(cfg).create_tuple_iterator(output_numpy=True,
                                                                              num_epochs=1))
    assert src.shape == (2, 3, S) and mix.shape == (2, S)
    index = load_split(str(tmp_path / "data"), "test", 3, 8000)
    mix, src, lengths = next(create_eval_dataset(cfg, "test")[0].create_tuple_iterator(
        output_numpy=True, num_epochs=1))
    assert np.array_equal(src[0, 2], read_float(index.paths["s3"][0]))


def test_configuration_errors(data_dir, tmp_path):
    with pytest.raises(UserError, match="no preprocessed split 'valid'.*preprocess.py"):
        create_eval_dataset(train_cfg(data_dir), "valid")
    with pytest.raises(UserError, match="n_src=2, the configuration has n_src=3"):
        create_train_dataset(train_cfg(data_dir, n_src=3))
    with pytest.raises(UserError, match="need at least batch_size x ranks = 20"):
        create_train_dataset(train_cfg(data_dir, batch_size=10), rank_id=0, rank_size=2)
    with pytest.raises(UserError, match="segment"):
        create_train_dataset(train_cfg(data_dir, segment=0.0))
    in_dir = make_tiny_librimix(tmp_path / "in", sizes={"train-360": 2, "dev": 1, "test": 1})
    prepare_dataset(config(in_dir=in_dir, out_dir=tmp_path / "json", data_format="json",
                      splits="[test]", preprocess_workers=1), log=lambda *_: None)
    with pytest.raises(UserError, match="has no MindRecord.*--data_format=json"):
        create_eval_dataset(train_cfg(str(tmp_path / "json")), "test")
