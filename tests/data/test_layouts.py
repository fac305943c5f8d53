"""preprocess.py on the folder layouts of wsj0-2mix/3mix, WHAM! and WHAMR!, generated here in
tiny form with soundfile (the generators' names: `<C>speakers/wav8k/min/{tr,cv,tt}/{mix,s1,s2}`
and `wav8k/min/{tr,cv,tt}/{mix_both,s1,s2,noise}`, `.../{mix_both_reverb,s1_anechoic,...}`)."""
import os
import re

import numpy as np
import pytest
import soundfile as sf

from src.data.librimix import load_split
from src.data.preparation import prepare_dataset
from src.model_utils.config import load_config
from src.model_utils.errors import UserError
from helpers import ROOT, config, read_float

SIZES = {"tr": 3, "cv": 2, "tt": 2}
WSJ_SPLITS = dict(splits="[tr,cv,tt]", train_name="tr", valid_name="cv", test_name="tt")


def write_layout(base, mix_folders, source_folders, noise, seed=0):
    """Mixtures of random lengths in `base/<split>/`: every mix folder holds the sum of the sources
    of the first source-folder group (plus `noise/` for folders named mix_both/mix_single).

    Args:
        mix_folders: mixture folder names; source_folders: lists of folder names per source, the
            first of each list being the one the mixtures are made of (e.g. [["s1_anechoic",
            "s1_reverb"], ...]).
    Returns:
        {split: [file names]}: wsj0-mix style names, utt1_gain1_utt2_gain2.wav.
    """
    rng = np.random.default_rng(seed)
    names = {}
    for split, count in SIZES.items():
        names[split] = []
        for i in range(count):
            # WSJ0 utterance ids: 3 characters of speaker, 5 of utterance; speakers differ
            first, second = f"{split[0]}{2 * i:02d}c0101", f"{split[0]}{2 * i + 1:02d}c0102"
            name = f"{first}_{rng.uniform(0, 2):.5f}_{second}_{-rng.uniform(0, 2):.5f}.wav"
            n = int(rng.integers(600, 1500))
            group = {folder: (0.1 * rng.standard_normal(n)).astype(np.float32)
                     for folders in source_folders for folder in folders}
            background = (0.03 * rng.standard_normal(n)).astype(np.float32)
            files = dict(group, **({"noise": background} if noise else {}))
            for mix in mix_folders:
                total = sum(group[folders[0]] for folders in source_folders)
                if mix.startswith(("mix_both", "mix_single")):
                    total = (group[source_folders[0][0]] if mix.startswith("mix_single") else total)
                    total = total + background
                files[mix] = total
            for folder, signal in files.items():
                os.makedirs(os.path.join(base, split, folder), exist_ok=True)
                sf.write(os.path.join(base, split, folder, name), signal, 8000, subtype="PCM_16")
            names[split].append(name)
    return names


@pytest.fixture(scope="module")
def wsj0mix(tmp_path_factory):
    """A wsj0-mix root as its generation scripts write it: 2speakers/ and 3speakers/."""
    root = str(tmp_path_factory.mktemp("wsj0-mix"))
    write_layout(os.path.join(root, "2speakers", "wav8k", "min"), ["mix"], [["s1"], ["s2"]], False)
    write_layout(os.path.join(root, "3speakers", "wav8k", "min"), ["mix"], [["s1"], ["s2"], ["s3"]],
                 False, seed=1)
    return root


@pytest.fixture(scope="module")
def whamr(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("whamr"))
    mixes = [f"mix_{k}_{r}" for k in ("clean", "both", "single") for r in ("anechoic", "reverb")]
    write_layout(os.path.join(root, "wav8k", "min"), mixes,
                 [["s1_reverb", "s1_anechoic"], ["s2_reverb", "s2_anechoic"]], True, seed=2)
    return root


def run(in_dir, out_dir, **values):
    values = {"preprocess_workers": 1, "data_format": "mindrecord", **WSJ_SPLITS, **values}
    return prepare_dataset(config(in_dir=in_dir, out_dir=out_dir, **values), log=lambda *_: None)


def rows_of(index):
    """(mixture [T], sources [C, T]) per id, read back from the split's MindRecord."""
    import mindspore.dataset as ds
    from src.data.mindrecord_io import COLUMNS, decode
    data = ds.MindDataset(index.mindrecord_files, columns_list=COLUMNS, shuffle=False)
    c = len(index.paths) - 1
    encoding = index.info["encoding"]
    return {str(mid): (decode(mix, encoding), decode(src, encoding).reshape(c, -1))
            for mid, mix, src in data.create_tuple_iterator(output_numpy=True, num_epochs=1)}


@pytest.mark.parametrize("n_src", [2, 3])
def test_wsj0mix_is_listed_from_the_mix_folder_and_round_trips(wsj0mix, tmp_path, n_src):
    out = str(tmp_path / "out")
    results = run(wsj0mix, out, dataset="wsj0mix", mix_type="mix", n_src=n_src)
    assert {s: r["mixtures"] for s, r in results.items()} == SIZES
    base = os.path.join(wsj0mix, f"{n_src}speakers", "wav8k", "min")
    for split in SIZES:
        index = load_split(out, split, n_src, 8000)
        assert index.info["dataset"] == "wsj0mix"
        assert index.ids == sorted(n[:-4] for n in os.listdir(os.path.join(base, split, "mix")))
        rows = rows_of(index)
        for i, mid in enumerate(index.ids):
            assert index.paths["mix"][i] == os.path.join(base, split, "mix", f"{mid}.wav")
            sources = [read_float(index.paths[f"s{k}"][i]) for k in range(1, n_src + 1)]
            mix = read_float(index.paths["mix"][i])
            assert len(mix) == index.lengths[i]
            assert np.abs(mix - sum(sources)).max() < 4 / 32768   # the files were paired by name
            np.testing.assert_array_equal(rows[mid][0], mix)
            np.testing.assert_array_equal(rows[mid][1], np.stack(sources))


def test_wham_noisy_mixtures_with_the_noise_beside(tmp_path):
    base = str(tmp_path / "wham" / "wav8k" / "min")
    write_layout(base, ["mix_clean", "mix_both", "mix_single"], [["s1"], ["s2"]], True, seed=3)
    run(str(tmp_path / "wham"), str(tmp_path / "both"), dataset="wham", mix_type="mix_both")
    index = load_split(str(tmp_path / "both"), "tt", 2, 8000)
    for i in range(len(index.ids)):
        name = os.path.basename(index.paths["mix"][i])
        noise = read_float(os.path.join(base, "tt", "noise", name))
        mix = read_float(index.paths["mix"][i])
        assert "/mix_both/" in index.paths["mix"][i].replace(os.sep, "/")
        assert np.abs(mix - read_float(index.paths["s1"][i]) - read_float(index.paths["s2"][i])
                      - noise).max() < 6 / 32768
    run(str(tmp_path / "wham"), str(tmp_path / "single"), dataset="wham", mix_type="mix_single",
        n_src=1)
    assert set(load_split(str(tmp_path / "single"), "tt", 1, 8000).paths) == {"mix", "s1"}


@pytest.mark.parametrize("targets", ["anechoic", "reverb"])
def test_whamr_targets_name_the_source_folders(whamr, tmp_path, targets):
    out = str(tmp_path / "out")
    run(whamr, out, dataset="whamr", mix_type="mix_both_reverb", whamr_targets=targets,
        data_format="json")
    index = load_split(out, "cv", 2, 8000)
    assert index.info["source_folders"] == [f"s1_{targets}", f"s2_{targets}"]
    for k in (1, 2):
        for path in index.paths[f"s{k}"]:
            assert os.path.basename(os.path.dirname(path)) == f"s{k}_{targets}"
    # the same folders with the other targets are other data: not taken for the finished output
    other = "reverb" if targets == "anechoic" else "anechoic"
    with pytest.raises(UserError, match="other settings"):
        run(whamr, out, dataset="whamr", mix_type="mix_both_reverb", whamr_targets=other,
            data_format="json")


def test_missing_source_and_length_mismatch_name_the_file(tmp_path):
    base = str(tmp_path / "wsj" / "2speakers" / "wav8k" / "min")
    names = write_layout(base, ["mix"], [["s1"], ["s2"]], False, seed=4)
    flags = dict(dataset="wsj0mix", mix_type="mix", splits="[tr]")
    gone = os.path.join(base, "tr", "s2", names["tr"][1])
    os.remove(gone)
    with pytest.raises(UserError, match=re.escape(f"{gone}: file not found")):
        run(str(tmp_path / "wsj"), str(tmp_path / "a"), **flags)
    short = os.path.join(base, "tr", "s1", names["tr"][0])
    sf.write(short, np.zeros(100, np.float32), 8000, subtype="PCM_16")
    with pytest.raises(UserError, match=re.escape(f"{short}: 100 samples, expected")):
        run(str(tmp_path / "wsj"), str(tmp_path / "b"), **flags)
    results = run(str(tmp_path / "wsj"), str(tmp_path / "c"), skip_bad="true", **flags)
    assert results["tr"]["mixtures"] == SIZES["tr"] - 2 and results["tr"]["skipped"] == 2


def test_settings_that_do_not_fit_the_dataset_are_refused(wsj0mix, tmp_path):
    with pytest.raises(UserError, match="mix_type: wsj0-2mix / wsj0-3mix has mix, got 'mix_clean'"):
        run(wsj0mix, str(tmp_path / "o"), dataset="wsj0mix")
    with pytest.raises(UserError, match="n_src: WHAM! has 2 speakers, got 3"):
        run(wsj0mix, str(tmp_path / "o"), dataset="wham", mix_type="mix_clean", n_src=3)
    with pytest.raises(UserError, match="splits are named tr, cv, tt"):
        run(wsj0mix, str(tmp_path / "o"), dataset="wsj0mix", mix_type="mix",
            splits="[train-360,dev,test]")
    assert not os.path.exists(tmp_path / "o")


def test_wsj0_2mix_recipe_reads_the_generated_layout(wsj0mix, tmp_path):
    cfg = load_config([f"--config_path={os.path.join(ROOT, 'configs', 'wsj0_2mix_8k.yaml')}",
                       f"--in_dir={wsj0mix}", f"--out_dir={tmp_path / 'out'}",
                       "--data_format=json", "--preprocess_workers=1"])
    results = prepare_dataset(cfg, log=lambda *_: None)
    assert set(results) == {cfg.train_name, cfg.valid_name, cfg.test_name} == set(SIZES)
    paper = (512, 16, 128, 512, 128, 3, 8, 3)   # Luo & Mesgarani 2019, Table 3, best row
    assert (cfg.N, cfg.L, cfg.B, cfg.H, cfg.Sc, cfg.P, cfg.X, cfg.R) == paper


def test_dynamic_mixing_adds_noise_only_to_noisy_mixture_types():
    from src.data.dynamic_mixing import mixing_settings
    noisy = {m: mixing_settings(config(mix_type=m))["noise"]
             for m in ("mix", "mix_clean", "mix_clean_anechoic", "mix_clean_reverb",
                       "mix_both", "mix_both_reverb", "mix_single_anechoic")}
    assert noisy == {"mix": False, "mix_clean": False, "mix_clean_anechoic": False,
                     "mix_clean_reverb": False, "mix_both": True, "mix_both_reverb": True,
                     "mix_single_anechoic": True}


def test_dynamic_mixing_reads_speakers_from_wsj0_utterance_ids(wsj0mix, tmp_path):
    from src.data.dynamic_mixing import UtterancePool, create_dynamic_mixing_dataset
    out = str(tmp_path / "out")
    run(wsj0mix, out, dataset="wsj0mix", mix_type="mix", splits="[tr]", data_format="json")
    split = load_split(out, "tr", 2, 8000)
    pool = UtterancePool(split, 2)
    assert pool.speakers == [f"t{k:02d}" for k in range(2 * SIZES["tr"])]
    for speaker, entries in zip(pool.speakers, pool.by_speaker):
        for row, k in pool.entries[entries]:   # source k of mixture row is this speaker's
            assert split.ids[row].split("_")[2 * k][:3] == speaker
    cfg = config(data_dir=out, dataset="wsj0mix", mix_type="mix", train_name="tr", segment=0.05,
                 batch_size=1, dataset_workers=1, dynamic_mixing="true")
    data = create_dynamic_mixing_dataset(cfg)
    for mixture, sources, lengths in data.create_tuple_iterator(output_numpy=True, num_epochs=1):
        assert mixture.shape == (1, 400) and sources.shape == (1, 2, 400)
        np.testing.assert_allclose(mixture[0], sources[0].sum(0), atol=1e-6)
