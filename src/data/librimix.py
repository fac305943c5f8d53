"""LibriMix on disk: finding the split folders, pairing files by mixture_ID, checking them, and the
index that preprocess.py writes and the data pipelines read.

Input (what the LibriMix generator writes, C = n_src, `<type>` = mix_type):
```
<root>/Libri<C>Mix/wav8k|wav16k/min|max/
    <split>/<type>/<mixture_ID>.wav   <split>/s1/<mixture_ID>.wav ... <split>/s<C>/<mixture_ID>.wav
    metadata/mixture_<split>_<type>.csv   (mixture_ID, mixture_path, source_1_path, ..., length)
```
`in_dir` may be `<root>`, a `Libri<C>Mix` folder, a `wav8k/min` folder, or any folder holding
`<split>/{<type>,s1,...}`. Mixtures are listed by the metadata CSV when it exists (its paths are of
the machine that generated the data and are not used: only its mixture_ID and length), else by the
file names in `<split>/<type>/`; every source is looked up by the mixture's ID, never by position.
wsj0-2mix/3mix, WHAM! and WHAMR! are listed the same way from their own folders: see
src/data/layouts.py.

Output of preprocess.py, one folder per split, complete once `info.json` exists (the folder is
built under a temporary name and renamed into place):
```
<out_dir>/<split>/
    ids.json                  [mixture_ID, ...]: the order of every list below
    mix.json                  [[absolute path of the mixture WAV, n_samples], ...]
    s1.json ... s<C>.json     the same for each source, same order
    <split>.mindrecord        MindRecord (with data_format=mindrecord): <split>.mindrecord + .db,
                              or <split>.mindrecord0 ... <split>.mindrecordK-1 for K shards
    skipped.txt               mixtures left out by --skip_bad, "path: reason" per line
    info.json                 settings, sample encoding, summary, MindRecord row order
```
`train_name`, `valid_name` and `test_name` name these folders (and so their MindRecord files).
"""
import csv
import json
import os
import re

import numpy as np

from src.data.audio import probe_audio, read_audio
from src.model_utils.errors import UserError

INFO_FILE = "info.json"
FORMAT_VERSION = 1
# LibriMix's smaller training split, used where the larger one was not generated (it saves 50 GB
# of Libri2Mix) and no split was named on the command line.
SMALLER_SPLIT = {"train-360": "train-100"}


def stream_names(n_src):
    """["mix", "s1", ..., "s<C>"]: the JSON list files of a split, without '.json'."""
    return ["mix"] + [f"s{i + 1}" for i in range(n_src)]


# ---------------------------------------------------------------- input: LibriMix's metadata

def existing_splits(root, splits, mix_type):
    """(found, absent): `splits` whose `<split>/<mix_type>/` folder exists under `root`, with the
    smaller training split in place of an absent larger one (SMALLER_SPLIT), and those absent."""
    def exists(split):
        return os.path.isdir(os.path.join(root, split, mix_type))
    found, absent = [], []
    for split in splits:
        smaller = SMALLER_SPLIT.get(split)
        if exists(split):
            found.append(split)
        else:
            absent.append(split)
            if smaller and smaller not in splits and exists(smaller):
                found.append(smaller)
    return found, absent


def read_metadata(csv_path, n_src):
    """(mixture_IDs [M], lengths [M]) of a LibriMix metadata CSV, checked against n_src."""
    try:
        with open(csv_path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise UserError(f"{csv_path}: not a readable CSV ({err})") from None
    n_cols = sum(1 for h in header if re.fullmatch(r"source_\d+_path", h))
    if "mixture_ID" not in header or "length" not in header:
        raise UserError(f"{csv_path}: expected the columns mixture_ID and length, got {header}")
    if n_cols != n_src:
        raise UserError(f"{csv_path}: has {n_cols} source columns, n_src is {n_src}")
    ids, lengths = [], []
    for line, row in enumerate(rows, start=2):
        try:
            lengths.append(int(float(row["length"])))
        except (TypeError, ValueError):
            raise UserError(f"{csv_path}: line {line}: length {row['length']!r} is not a number") from None
        ids.append(row["mixture_ID"])
    if len(set(ids)) != len(ids):
        raise UserError(f"{csv_path}: mixture_ID values are not unique")
    return ids, lengths


# ---------------------------------------------------------------- input: checking one mixture

def check_mixture(paths, sample_rate, resample, csv_length=None):
    """Check the files of one mixture (mixture first, then the sources) without reading samples.

    Returns:
        (n_samples at sample_rate, pcm16): pcm16 is True when every file is 16-bit PCM at
        sample_rate, so that its samples can be stored as int16 without loss.
    """
    facts = [probe_audio(p) for p in paths]
    frames, rate = facts[0][:2]
    for path, (n, r, _, channels) in zip(paths, facts):
        if channels != 1:
            raise UserError(f"{path}: {channels} channels, expected mono")
        if r != rate:
            raise UserError(f"{path}: sample rate {r} Hz, expected {rate} Hz like {paths[0]}")
        if n != frames:
            raise UserError(f"{path}: {n} samples, expected {frames} like {paths[0]}")
    if rate != sample_rate and not resample:
        raise UserError(f"{paths[0]}: sample rate {rate} Hz, expected {sample_rate} Hz "
                        "(pass --resample=true to convert)")
    if csv_length is not None and rate == sample_rate and csv_length != frames:
        raise UserError(f"{paths[0]}: {frames} samples, the metadata CSV says {csv_length}")
    if rate != sample_rate:
        frames = int(np.ceil(frames * sample_rate / rate))
    pcm16 = rate == sample_rate and all(f[2] == "PCM_16" for f in facts)
    return frames, pcm16


def read_mixture(paths, sample_rate, resample, encoding):
    """Samples of one mixture: (mixture [T], sources [C, T]) as int16 or float32 per `encoding`.

    int16 is soundfile's integer read of 16-bit PCM (float = int16 / 32768 exactly); float32 is
    soundfile's float read, resampled to sample_rate when asked.
    """
    dtype = "int16" if encoding == "int16" else "float32"
    signals = [read_audio(p, sample_rate, resample=resample, dtype=dtype)[0] for p in paths]
    lengths = {len(s) for s in signals}
    if len(lengths) != 1:
        raise UserError(f"{paths[0]}: its sources have other lengths {sorted(lengths)}")
    return signals[0], np.stack(signals[1:])


# ---------------------------------------------------------------- output: the index of a split

def read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: not readable JSON ({err})") from None


def read_info(split_dir):
    """The info.json of a finished split folder, or None when it is absent."""
    path = os.path.join(split_dir, INFO_FILE)
    return read_json(path) if os.path.isfile(path) else None


class SplitIndex:
    """A preprocessed split as the pipelines see it.

    Attributes:
        ids: [M] mixture_IDs; lengths: int64 [M] samples; paths: dict stream -> [M] WAV paths;
        info: the split's info.json; mindrecord_files: absolute paths of its MindRecord files
        (empty without MindRecord); mindrecord_order: int64 [M], position in `ids` of each row as
        MindDataset reads the files.
    """

    def __init__(self, split_dir, info, ids, lengths, paths):
        self.split_dir = split_dir
        self.info = info
        self.ids = ids
        self.lengths = lengths
        self.paths = paths
        self.mindrecord_files = [os.path.join(split_dir, f) for f in info.get("mindrecord_files", [])]
        self.mindrecord_order = np.asarray(info.get("mindrecord_order", []), np.int64)


def training_split(cfg):
    """(name, note): the split to train on, cfg.train_name or, when that is the larger training
    split, not given as a flag, and not preprocessed in cfg.data_dir while the smaller one is,
    the smaller one (SMALLER_SPLIT) with a note saying so (note None otherwise)."""
    name = cfg.train_name
    smaller = SMALLER_SPLIT.get(name)
    if smaller is None or cfg.on_command_line("train_name") or \
            os.path.isfile(os.path.join(cfg.data_dir, name, INFO_FILE)) or \
            not os.path.isfile(os.path.join(cfg.data_dir, smaller, INFO_FILE)):
        return name, None
    return smaller, (f"train_name: no preprocessed '{name}' in {cfg.data_dir}: training on "
                     f"'{smaller}' (give --train_name to choose)")


def load_split(data_dir, split, n_src, sample_rate):
    """Read the index of a preprocessed split; UserError when it is missing or does not fit."""
    split_dir = os.path.join(data_dir, split)
    info = read_info(split_dir)
    if info is None:
        raise UserError(f"{split_dir}: no preprocessed split '{split}' here (expected {INFO_FILE}; "
                        f"run preprocess.py with --out_dir={data_dir} and '{split}' in --splits)")
    for key, want in (("n_src", n_src), ("sample_rate", sample_rate)):
        if info.get(key) != want:
            raise UserError(f"{split_dir}: preprocessed with {key}={info.get(key)}, "
                            f"the configuration has {key}={want}")
    ids = read_json(os.path.join(split_dir, "ids.json"))
    paths, lengths = {}, None
    for name in stream_names(n_src):
        entries = read_json(os.path.join(split_dir, f"{name}.json"))
        if len(entries) != len(ids):
            raise UserError(f"{split_dir}/{name}.json: {len(entries)} entries, ids.json has {len(ids)}")
        paths[name] = [e[0] for e in entries]
        if lengths is None:
            lengths = np.array([e[1] for e in entries], np.int64)
    return SplitIndex(split_dir, info, ids, lengths, paths)
