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


def stream_names(n_src):
    """["mix", "s1", ..., "s<C>"]: the JSON list files of a split, without '.json'."""
    return ["mix"] + [f"s{i + 1}" for i in range(n_src)]


# ---------------------------------------------------------------- input: locating and pairing

def find_split_root(in_dir, splits, n_src, mix_type, sample_rate, allow_other_rate=False):
    """The folder under `in_dir` that holds the split folders.

    Tries `in_dir`, then `<in_dir>/wav<k>k/<mode>` and `<in_dir>/Libri<C>Mix/wav<k>k/<mode>`, mode
    'min' before 'max', the rate of `sample_rate` first (other rates only if `allow_other_rate`).
    """
    if not in_dir:
        raise UserError("in_dir: not set (expected a LibriMix folder, e.g. --in_dir=/data/LibriMix)")
    if not os.path.isdir(in_dir):
        raise UserError(f"{in_dir}: folder not found (in_dir, expected a LibriMix folder)")
    rates = [sample_rate // 1000] + ([k for k in (8, 16) if k != sample_rate // 1000]
                                     if allow_other_rate else [])
    candidates = [in_dir]
    for prefix in ("", f"Libri{n_src}Mix"):
        for k in rates:
            for mode in ("min", "max"):
                candidates.append(os.path.join(in_dir, prefix, f"wav{k}k", mode))
    for root in candidates:
        if any(os.path.isdir(os.path.join(root, s, mix_type)) for s in splits):
            return os.path.abspath(root)
    raise UserError(f"{in_dir}: no LibriMix split folder found (expected <split>/{mix_type}/ for one "
                    f"of {list(splits)}, directly or under Libri{n_src}Mix/wav"
                    f"{sample_rate // 1000}k/min)")


def list_mixtures(root, split, n_src, mix_type):
    """Pair the files of one split by mixture_ID.

    Returns:
        (ids, paths, csv_lengths): ids [M]; paths: dict stream -> [M] absolute paths; csv_lengths:
        [M] lengths from the metadata CSV, or None without a CSV.
    """
    split_dir = os.path.join(root, split)
    folders = {"mix": os.path.join(split_dir, mix_type)}
    folders.update({f"s{i + 1}": os.path.join(split_dir, f"s{i + 1}") for i in range(n_src)})
    for folder in folders.values():
        if not os.path.isdir(folder):
            raise UserError(f"{folder}: folder not found (split '{split}' needs {mix_type}/ and "
                            f"s1/ ... s{n_src}/)")
    csv_path = os.path.join(root, "metadata", f"mixture_{split}_{mix_type}.csv")
    csv_lengths = None
    if os.path.isfile(csv_path):
        ids, csv_lengths = _read_metadata(csv_path, n_src)
    else:
        ids = sorted(name[:-4] for name in os.listdir(folders["mix"]) if name.endswith(".wav"))
    if not ids:
        raise UserError(f"{folders['mix']}: split '{split}' is empty (expected <mixture_ID>.wav files)")
    paths = {name: [os.path.join(folder, f"{mid}.wav") for mid in ids]
             for name, folder in folders.items()}
    return ids, paths, csv_lengths


def _read_metadata(csv_path, n_src):
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
