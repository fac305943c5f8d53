import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import mindspore.dataset as ds

from src.model_utils.errors import UserError
from src.data.librimix import load_split
from src.data.mindrecord_io import COLUMNS, decode
from src.data.preparation import prepare_dataset
from helpers import ROOT, TINY_SIZES, config, make_tiny_librimix, read_float, wav_files



@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_librimix(tmp_path_factory.mktemp("librimix"))


def run(in_dir, out_dir, **values):
    values.setdefault("preprocess_workers", 1)
    return prepare_dataset(config(in_dir=in_dir, out_dir=out_dir, **values), log=lambda *_: None)


def copy_set(src, dst, splits=("test",)):
    """A writable copy of some splits of a set (the broken-input tests damage it)."""
    for split in splits:
        shutil.copytree(os.path.join(src, split), os.path.join(dst, split))
    shutil.copytree(os.path.join(src, "metadata"), os.path.join(dst, "metadata"))
    return str(dst)


def read_mindrecord_rows(split):
    """{mixture_id: (mixture [T], sources [C, T])} read back with MindDataset."""
    data = ds.MindDataset(split.mindrecord_files, columns_list=COLUMNS, shuffle=False)
    rows = {}
    for mid, mix, src in data.create_tuple_iterator(output_numpy=True, num_epochs=1):
        rows[str(mid)] = (decode(mix, split.info["encoding"]),
                          decode(src, split.info["encoding"]).reshape(len(split.paths) - 1, -1))
    return rows


def test_generated_set_json_pairing_and_summary(tiny, tmp_path):
    results = run(tiny, tmp_path / "out", data_format="json")
    assert set(results) == set(TINY_SIZES)
    for split, count in TINY_SIZES.items():
        index = load_split(str(tmp_path / "out"), split, 2, 8000)
        assert len(index.ids) == count == results[split]["mixtures"]
        assert not index.mindrecord_files
        for i, mid in enumerate(index.ids):
            for stream, folder in (("mix", "mix_clean"), ("s1", "s1"), ("s2", "s2")):
                path = index.paths[stream][i]
                assert os.path.isabs(path)
                assert path == os.path.join(tiny, split, folder, f"{mid}.wav")
                assert sf.info(path).frames == index.lengths[i]
            # paired by id, not by position: the mixture is the sum of these very sources
            mix = read_float(index.paths["mix"][i])
            total = read_float(index.paths["s1"][i]) + read_float(index.paths["s2"][i])
            assert np.abs(mix - total).max() < 4 / 32768
        seconds = index.lengths / 8000
        assert results[split]["min_seconds"] == pytest.approx(seconds.min())
        assert results[split]["max_seconds"] == pytest.approx(seconds.max())
        assert results[split]["hours"] == pytest.approx(seconds.sum() / 3600)


def test_order_follows_metadata_csv_else_file_names(tiny, tmp_path):
    data = copy_set(tiny, tmp_path / "in")
    csv_path = os.path.join(data, "metadata", "mixture_test_mix_clean.csv")
    with open(csv_path, encoding="utf-8") as f:
        header, *lines = f.read().splitlines()
    lines = lines[::-1]
    with open(csv_path, "w", encoding="utf-8") as f:
        f.write("\n".join([header] + lines) + "\n")
    run(data, tmp_path / "out1", splits="[test]", data_format="json")
    assert load_split(str(tmp_path / "out1"), "test", 2, 8000).ids == [l.split(",")[0] for l in lines]
    os.remove(csv_path)
    run(data, tmp_path / "out2", splits="[test]", data_format="json")
    names = [os.path.basename(p)[:-4] for p in wav_files(os.path.join(data, "test", "mix_clean"))]
    assert load_split(str(tmp_path / "out2"), "test", 2, 8000).ids == names


@pytest.mark.parametrize("shards", [1, 3])
def test_mindrecord_round_trip_is_bit_exact(tiny, tmp_path, shards):
    run(tiny, tmp_path, splits="[train-360]", mindrecord_shards=shards)
    index = load_split(str(tmp_path), "train-360", 2, 8000)
    assert index.info["encoding"] == "int16"
    assert len(index.mindrecord_files) == shards
    rows = read_mindrecord_rows(index)
    assert sorted(rows) == sorted(index.ids)
    for i, mid in enumerate(index.ids):
        mix, src = rows[mid]
        assert mix.dtype == np.float32 and src.shape == (2, index.lengths[i])
        assert np.array_equal(mix, read_float(index.paths["mix"][i]))
        for c in range(2):
            assert np.array_equal(src[c], read_float(index.paths[f"s{c + 1}"][i]))


def test_float_wavs_are_stored_as_soundfiles_float(tiny, tmp_path):
    data = copy_set(tiny, tmp_path / "in")
    for path in wav_files(os.path.join(data, "test", "s1"))[:2]:
        signal, rate = sf.read(path, dtype="float32")
        sf.write(path, signal * 0.7, rate, subtype="FLOAT")   # not a 16-bit grid any more
    run(data, tmp_path / "out", splits="[test]")
    index = load_split(str(tmp_path / "out"), "test", 2, 8000)
    assert index.info["encoding"] == "float32"
    rows = read_mindrecord_rows(index)
    for i, mid in enumerate(index.ids):
        assert np.array_equal(rows[mid][0], read_float(index.paths["mix"][i]))
        assert np.array_equal(rows[mid][1][0], read_float(index.paths["s1"][i]))


def test_libri3mix(tmp_path):
    data = make_tiny_librimix(tmp_path / "in", n_src=3, sizes={"train-360": 3, "dev": 2, "test": 2})
    run(tmp_path / "in", tmp_path / "out", n_src=3)        # a LibriMix root: Libri3Mix/ is found
    index = load_split(str(tmp_path / "out"), "dev", 3, 8000)
    assert sorted(index.paths) == ["mix", "s1", "s2", "s3"]
    assert index.paths["s3"][0] == os.path.join(data, "dev", "s3", f"{index.ids[0]}.wav")
    rows = read_mindrecord_rows(index)
    assert np.array_equal(rows[index.ids[1]][1][2], read_float(index.paths["s3"][1]))
    with pytest.raises(UserError, match="source columns, n_src is 2"):
        run(data, tmp_path / "out2", n_src=2)


def test_noisy_mixture_types(tmp_path):
    data = make_tiny_librimix(tmp_path / "in", sizes={"train-360": 2, "dev": 1, "test": 2},
                              noisy=True)
    run(data, tmp_path / "both", splits="[test]", mix_type="mix_both")
    index = load_split(str(tmp_path / "both"), "test", 2, 8000)
    assert index.paths["mix"][0] == os.path.join(data, "test", "mix_both", f"{index.ids[0]}.wav")
    assert np.array_equal(read_mindrecord_rows(index)[index.ids[1]][0],
                          read_float(index.paths["mix"][1]))
    run(data, tmp_path / "single", splits="[test]", mix_type="mix_single", n_src=1)
    index = load_split(str(tmp_path / "single"), "test", 1, 8000)
    assert sorted(index.paths) == ["mix", "s1"]
    assert index.paths["mix"][1] == os.path.join(data, "test", "mix_single", f"{index.ids[1]}.wav")


# ------------------------------------------------------------------------- broken input

def damage(data, kind):
    """Break the first test mixture of the copy `data`; returns the path the error must name."""
    ids = [os.path.basename(p)[:-4] for p in wav_files(os.path.join(data, "test", "mix_clean"))]
    s2 = os.path.join(data, "test", "s2", f"{ids[0]}.wav")
    if kind == "missing s2":
        os.remove(s2)
    elif kind == "corrupt":
        with open(s2, "wb") as f:
            f.write(b"RIFF\x00\x00 this is not audio" * 20)
    elif kind == "truncated":
        with open(s2, "rb") as f:
            raw = f.read()
        with open(s2, "wb") as f:
            f.write(raw[:len(raw) // 2])
    elif kind == "zero-length":
        signal, rate = sf.read(s2)
        sf.write(s2, signal[:0], rate, subtype="PCM_16")
    elif kind == "length mismatch":
        signal, rate = sf.read(s2, dtype="int16")
        sf.write(s2, signal[:-10], rate, subtype="PCM_16")
    elif kind == "other rate":
        for stream in ("mix_clean", "s1", "s2"):
            path = os.path.join(data, "test", stream, f"{ids[0]}.wav")
            signal, rate = sf.read(path, dtype="int16")
            sf.write(path, signal, 16000, subtype="PCM_16")
        return os.path.join(data, "test", "mix_clean", f"{ids[0]}.wav")
    return s2


BROKEN = {"missing s2": "file not found", "corrupt": "not readable audio",
          "truncated": "truncated", "zero-length": "no samples",
          "length mismatch": "samples, expected", "other rate": "16000 Hz, expected 8000 Hz"}


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_broken_mixture_is_an_error_naming_the_file(tiny, tmp_path, kind):
    data = copy_set(tiny, tmp_path / "in")
    bad_path = damage(data, kind)
    with pytest.raises(UserError) as err:
        run(data, tmp_path / "out", splits="[test]")
    assert bad_path in str(err.value) and BROKEN[kind] in str(err.value)
    assert not os.path.exists(tmp_path / "out" / "test")


def test_skip_bad_keeps_the_rest_and_lists_the_bad(tiny, tmp_path, capsys):
    data = copy_set(tiny, tmp_path / "in")
    bad_path = damage(data, "corrupt")
    cfg = config(in_dir=data, out_dir=tmp_path / "out", splits="[test]", skip_bad="true",
                 preprocess_workers=1)
    info = prepare_dataset(cfg)["test"]
    assert info["mixtures"] == TINY_SIZES["test"] - 1 and info["skipped"] == 1
    printed = capsys.readouterr().out
    assert bad_path in printed and "skipped.txt" in printed
    with open(tmp_path / "out" / "test" / "skipped.txt", encoding="utf-8") as f:
        assert bad_path in f.read()
    index = load_split(str(tmp_path / "out"), "test", 2, 8000)
    assert os.path.basename(bad_path)[:-4] not in index.ids
    assert sorted(read_mindrecord_rows(index)) == sorted(index.ids)


def test_other_rate_is_resampled_only_when_asked(tiny, tmp_path):
    data = copy_set(tiny, tmp_path / "in")
    path = damage(data, "other rate")
    run(data, tmp_path / "out", splits="[test]", resample="true")
    index = load_split(str(tmp_path / "out"), "test", 2, 8000)
    i = index.ids.index(os.path.basename(path)[:-4])
    mix, src = read_mindrecord_rows(index)[index.ids[i]]
    assert index.info["encoding"] == "float32"
    assert len(mix) == index.lengths[i] == int(np.ceil(sf.info(path).frames / 2)) == src.shape[1]


def test_missing_folder_and_empty_split(tiny, tmp_path):
    with pytest.raises(UserError, match="folder not found"):
        run(tmp_path / "nowhere", tmp_path / "out")
    data = copy_set(tiny, tmp_path / "in", splits=("test", "dev"))
    shutil.rmtree(os.path.join(data, "dev", "s2"))
    with pytest.raises(UserError, match=r"dev/s2: folder not found"):
        run(data, tmp_path / "out", splits="[dev]")
    os.remove(os.path.join(data, "metadata", "mixture_test_mix_clean.csv"))
    for path in wav_files(os.path.join(data, "test", "mix_clean")):
        os.remove(path)
    with pytest.raises(UserError, match="split 'test' is empty"):
        run(data, tmp_path / "out", splits="[test]")


def test_user_error_is_one_line_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, "preprocess.py", f"--in_dir={tmp_path / 'nowhere'}",
                           f"--out_dir={tmp_path / 'out'}"], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": ROOT}, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'nowhere'}: folder not found (in_dir, expected a LibriMix folder)"]


# ------------------------------------------------------------------------- output safety

def test_finished_output_is_refused_unless_overwrite(tiny, tmp_path):
    run(tiny, tmp_path, splits="[dev]")
    before = os.path.getmtime(tmp_path / "dev" / "info.json")
    with pytest.raises(UserError, match="already preprocessed.*--overwrite"):
        run(tiny, tmp_path, splits="[dev]")
    with pytest.raises(UserError, match="other settings"):
        run(tiny, tmp_path, splits="[dev]", resample="true")
    assert os.path.getmtime(tmp_path / "dev" / "info.json") == before
    run(tiny, tmp_path, splits="[dev]", overwrite="true", data_format="json")
    assert not load_split(str(tmp_path), "dev", 2, 8000).mindrecord_files
    assert sorted(os.listdir(tmp_path)) == ["dev"]


def test_foreign_folder_is_never_replaced(tiny, tmp_path):
    os.makedirs(tmp_path / "test")
    (tmp_path / "test" / "mine.txt").write_text("keep")
    with pytest.raises(UserError, match="not written by preprocess.py"):
        run(tiny, tmp_path, splits="[test]", overwrite="true")
    assert (tmp_path / "test" / "mine.txt").read_text() == "keep"


def test_interrupted_run_leaves_no_output_and_resumes(tiny, tmp_path, monkeypatch):
    import src.data.preparation as preprocessing
    real = preprocessing.read_order

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(preprocessing, "read_order", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(tiny, tmp_path, splits="[dev,test]")
    assert os.listdir(tmp_path) == []                     # nothing that looks like output
    monkeypatch.setattr(preprocessing, "read_order", real)
    run(tiny, tmp_path, splits="[dev]")
    os.makedirs(tmp_path / ".tmp-test")                   # what a killed (SIGKILL) run leaves
    (tmp_path / ".tmp-test" / "test.mindrecord").write_bytes(b"half")
    done = run(tiny, tmp_path, splits="[dev,test]")       # resumes: dev is kept, test is written
    assert list(done) == ["test"]
    assert sorted(os.listdir(tmp_path)) == ["dev", "test"]
    index = load_split(str(tmp_path), "test", 2, 8000)
    assert index.info["mixtures"] == TINY_SIZES["test"]
    assert sorted(read_mindrecord_rows(index)) == sorted(index.ids)


def test_worker_processes_give_the_same_output(tiny, tmp_path):
    run(tiny, tmp_path / "one", splits="[train-360]", preprocess_workers=1)
    run(tiny, tmp_path / "two", splits="[train-360]", preprocess_workers=2)
    for name in ("ids.json", "mix.json", "s1.json", "s2.json"):
        assert (tmp_path / "one" / "train-360" / name).read_text() == \
               (tmp_path / "two" / "train-360" / name).read_text()
    one = read_mindrecord_rows(load_split(str(tmp_path / "one"), "train-360", 2, 8000))
    two = read_mindrecord_rows(load_split(str(tmp_path / "two"), "train-360", 2, 8000))
    assert all(np.array_equal(one[k][1], two[k][1]) for k in one) and sorted(one) == sorted(two)
