"""Training and evaluation pipelines on mindspore.dataset, reading what preprocess.py wrote.

Every pipeline yields three columns (C = n_src, T = samples):
    mixture  float32 [batch, T]
    sources  float32 [batch, C, T]
    lengths  int32   [batch]       true length of each row; samples beyond it are zeros
Rows are read from disk one mixture at a time (MindDataset for data_format=mindrecord, soundfile
inside a GeneratorDataset for data_format=json); the corpus is never held in memory.

Training: every mixture longer than `segment` gives a random crop of `segment` seconds, a new one
at every epoch (drawn from seed, epoch and mixture_ID, so a run is reproducible whatever the worker
scheduling), the same for the mixture and its sources. Shorter mixtures are zero-padded (their true
length goes to `lengths`, for the loss mask) or left out, as `short_policy` says. Rows are shuffled
anew at every epoch and split between ranks with MindSpore's DistributedSampler: each rank gets a
disjoint share of every epoch (padded by repeats to equal shares, so every rank runs the same
number of steps). Batches are full (the remainder of an epoch's shuffled order waits for a later
epoch).

The shuffling follows mindspore.dataset's global seed, which create_train_dataset sets to a hash of
cfg.seed (order_seed).
With `dynamic_mixing` the training examples are made on the fly instead (src/data/dynamic_mixing.py);
with `swap_sources` the sources of each stored mixture come in a random order.

Evaluation: whole utterances, one per batch, in the order of the ids returned.
"""
import os
import random
import re
import zlib

import numpy as np
import mindspore.dataset as ds

from src.data.audio import read_audio
from src.data.dynamic_mixing import SourceOrderSwap, create_dynamic_mixing_dataset
from src.model_utils.errors import UserError
from src.data.librimix import load_split, stream_names
from src.data.mindrecord_io import COLUMNS, decode, pipeline_detail

_ORDER_TAG = 0x4F52    # separates the training order from the other uses of the seed


def create_train_dataset(cfg, rank_id=0, rank_size=1):
    """The training pipeline of split `cfg.train_name` for one rank.

    Returns:
        a batched mindspore.dataset.Dataset with columns mixture [B, S], sources [B, C, S],
        lengths [B] (B = cfg.batch_size, S = cfg.segment * cfg.sample_rate);
        get_dataset_size() is the number of batches per epoch.
    """
    segment = int(round(cfg.segment * cfg.sample_rate))
    if segment <= 0:
        raise UserError(f"segment: expected a positive number of seconds, got {cfg.segment}")
    if cfg.batch_size < 1:
        raise UserError(f"batch_size: expected a positive integer, got {cfg.batch_size}")
    if not 0 <= rank_id < rank_size:
        raise UserError(f"rank {rank_id} of {rank_size}: expected 0 <= rank < rank_size")
    if cfg.dynamic_mixing:
        return create_dynamic_mixing_dataset(cfg, rank_id, rank_size)
    split = load_split(cfg.data_dir, cfg.train_name, cfg.n_src, cfg.sample_rate)
    keep = np.ones(len(split.ids), bool)
    if cfg.short_policy == "drop":
        keep = split.lengths >= segment
    needed = rank_size * cfg.batch_size
    if keep.sum() < needed:
        raise UserError(f"{split.split_dir}: {int(keep.sum())} usable training mixtures "
                        f"(short_policy={cfg.short_policy}, segment={cfg.segment} s), need at least "
                        f"batch_size x ranks = {needed}")
    data = _rows_dataset(split, cfg, train_sampler(cfg, split, keep, rank_id, rank_size))
    batcher = _Batcher(split.info["encoding"], cfg.n_src, segment, cfg.seed)
    if cfg.swap_sources:
        batcher = SourceOrderSwap(batcher, cfg.seed)
    data = data.batch(cfg.batch_size, drop_remainder=True, per_batch_map=batcher,
                      input_columns=COLUMNS, output_columns=["mixture", "sources", "lengths"],
                      num_parallel_workers=_workers(cfg))
    data.data_files = _data_files(split, cfg)
    return data


def train_sampler(cfg, split, keep, rank_id=0, rank_size=1):
    """The sampler of the training rows `keep` (a mask over split.ids) for one rank: shuffled anew
    every epoch from the global seed, which this sets to order_seed(cfg.seed), and split between
    ranks. MindSpore's set_seed also reseeds numpy's and Python's global generators, which the
    network's initialisers draw from: their states are kept as they were."""
    numpy_state, python_state = np.random.get_state(), random.getstate()
    ds.config.set_seed(order_seed(cfg.seed))
    np.random.set_state(numpy_state)
    random.setstate(python_state)
    sampler = ds.DistributedSampler(rank_size, rank_id, shuffle=True)
    rows = _row_positions(split, cfg.data_format, np.flatnonzero(keep))
    if len(rows) < len(split.ids):
        sampler.add_child(ds.SubsetSampler(rows.tolist()))
    return sampler


def order_seed(seed):
    """MindSpore's global dataset seed for training seed `seed`: a hash of it.

    MindSpore's sampler shuffles epoch e with the global seed + e, so with the seed itself seed
    s + 1 would repeat the orders of seed s one epoch later (runs of neighbouring seeds would
    share 14 of 15 epoch orders); hashed, the seeds' sequences of orders are unrelated.
    Returns an int in [0, 2**31).
    """
    return int(np.random.SeedSequence([seed, _ORDER_TAG]).generate_state(1)[0] >> 1)


def create_eval_dataset(cfg, split, max_seconds=0.0):
    """Whole utterances of `split`, one per batch.

    Args:
        max_seconds: leave out mixtures longer than this (> 0; for validation during training).
    Returns:
        (dataset, ids): columns mixture [1, T], sources [1, C, T], lengths [1], in the order of
        `ids` (the mixture_IDs, a list of str).
    """
    index = load_split(cfg.data_dir, split, cfg.n_src, cfg.sample_rate)
    keep = np.ones(len(index.ids), bool)
    if max_seconds and max_seconds > 0:
        keep = index.lengths <= int(round(max_seconds * cfg.sample_rate))
    chosen = np.flatnonzero(keep)
    if len(chosen) == 0:
        raise UserError(f"{index.split_dir}: no mixture of at most {max_seconds} s")
    sampler = ds.SubsetSampler(_row_positions(index, cfg.data_format, chosen).tolist())
    data = _rows_dataset(index, cfg, sampler)
    batcher = _Batcher(index.info["encoding"], cfg.n_src, None, cfg.seed)
    data = data.batch(1, per_batch_map=batcher, input_columns=COLUMNS,
                      output_columns=["mixture", "sources", "lengths"])
    data.data_files = _data_files(index, cfg)
    return data, [index.ids[i] for i in chosen]


def _data_files(split, cfg):
    """What the rows are read from, for error messages: the MindRecord files or the split folder
    (whose lists name the WAVs)."""
    return list(split.mindrecord_files) if cfg.data_format == "mindrecord" else [split.split_dir]


def read_rows(dataset, **iterator_args):
    """The rows of `dataset.create_dict_iterator(**iterator_args)`, its reading errors UserErrors.

    MindSpore reports a failure inside the pipeline as a RuntimeError of many lines: a listed WAV
    deleted or damaged after preprocessing (the UserError of `read_audio` is quoted in it) or a
    truncated MindRecord file ("Failed to read file", without a name). Either becomes one line
    naming the file (or the split's MindRecord files) and what to do.

    Like MindSpore's iterator, the result ends each of `num_epochs` epochs with StopIteration and
    continues with the next epoch when it is iterated again (the trainer's loop over epochs).
    """
    return _Rows(dataset, dataset.create_dict_iterator(**iterator_args))


class _Rows:
    """An iterator over a MindSpore dict iterator that turns its reading errors into UserErrors."""

    def __init__(self, dataset, iterator):
        self.dataset, self.iterator = dataset, iterator

    def __iter__(self):
        return self

    def __next__(self):
        try:
            return next(self.iterator)
        except StopIteration:
            raise
        except (RuntimeError, UserError) as err:
            # MindSpore re-raises an exception of the source as RuntimeError, or as its own
            # type, with the whole traceback of the worker as the message
            raise reading_error(err, getattr(self.dataset, "data_files", ())) from None


_QUOTED_USER_ERROR = re.compile(r"^(?:\w+\.)*UserError: (.+)$", re.MULTILINE)
_QUOTED_OS_ERROR = re.compile(r"^(?:\w+Error): (\[Errno \d+\] .+)$", re.MULTILINE)


def reading_error(err, data_files):
    """A one-line UserError for the error `err` of a pipeline reading `data_files`; `err` itself
    when it is not a reading failure (a bug keeps its traceback)."""
    text = str(err)
    quoted = _QUOTED_USER_ERROR.findall(text)
    if quoted:
        return UserError(quoted[-1].strip())
    if isinstance(err, UserError):
        return err
    files = ", ".join(data_files) or "the data files"
    system = _QUOTED_OS_ERROR.search(text)
    if system:
        return UserError(f"{files}: reading failed ({system.group(1).strip()})")
    if "mindrecord" in text.lower() or "Failed to read file" in text:
        return UserError(f"{files}: MindRecord data unreadable ({pipeline_detail(err)}); the "
                         "files were truncated or changed after preprocessing: run preprocess.py "
                         "again with --overwrite=true")
    return err


def _workers(cfg):
    """dataset_workers, within what mindspore.dataset accepts (1 .. number of CPUs)."""
    return max(1, min(cfg.dataset_workers, os.cpu_count() or 1))


def _row_positions(split, data_format, chosen):
    """Sampler indices of the mixtures at positions `chosen` of split.ids, in that order."""
    if data_format != "mindrecord":
        return np.asarray(chosen, np.int64)
    row_of = np.empty(len(split.ids), np.int64)
    row_of[split.mindrecord_order] = np.arange(len(split.mindrecord_order))
    return row_of[np.asarray(chosen, np.int64)]


def _rows_dataset(split, cfg, sampler):
    """Unbatched rows: mixture_id, mixture (raw), sources (raw), in sampler order."""
    workers = _workers(cfg)
    if cfg.data_format == "mindrecord":
        if not split.mindrecord_files:
            raise UserError(f"{split.split_dir}: has no MindRecord (preprocessed with "
                            "data_format=json; run preprocess.py with --data_format=mindrecord "
                            "--overwrite=true, or train with --data_format=json)")
        return ds.MindDataset(split.mindrecord_files, columns_list=COLUMNS, sampler=sampler,
                              num_parallel_workers=workers)
    source = _WavRows(split, cfg.n_src, cfg.sample_rate)
    return ds.GeneratorDataset(source, column_names=COLUMNS, sampler=sampler,
                               num_parallel_workers=workers, python_multiprocessing=False)


class _WavRows:
    """Random-access rows read from the WAV files of the JSON lists: id, mixture [T], sources [C, T]."""

    def __init__(self, split, n_src, sample_rate):
        self.ids = split.ids
        self.paths = [split.paths[name] for name in stream_names(n_src)]
        self.sample_rate = sample_rate
        self.resample = bool(split.info.get("resample", False))

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        signals = [read_audio(paths[i], self.sample_rate, resample=self.resample)[0]
                   for paths in self.paths]
        if len({len(s) for s in signals}) != 1:
            raise UserError(f"{self.paths[0][i]}: its sources have other lengths "
                            f"{[len(s) for s in signals]}")
        return np.array(self.ids[i]), signals[0], np.stack(signals[1:])


def crop_start(seed, epoch, mixture_id, length, width):
    """Where the training crop of `width` samples of mixture `mixture_id` ([length] samples,
    length > width) starts at `epoch` (0 for the first): uniform, drawn from seed, epoch and the
    id only."""
    rng = np.random.default_rng([seed, epoch, zlib.crc32(str(mixture_id).encode())])
    return int(rng.integers(0, length - width + 1))


class _Batcher:
    """per_batch_map: decodes rows, crops them (segment) or keeps them whole (segment None), pads."""

    def __init__(self, encoding, n_src, segment, seed):
        self.encoding = encoding
        self.n_src = n_src
        self.segment = segment
        self.seed = seed

    def _samples(self, raw):
        if raw.dtype.kind == "S":  # a MindRecord bytes column
            return decode(raw, self.encoding)
        return np.asarray(raw, np.float32).reshape(-1)

    def __call__(self, ids, mixtures, sources, batch_info):
        epoch = batch_info.get_epoch_num()
        out_mix, out_src, out_len = [], [], []
        for mid, mix_raw, src_raw in zip(ids, mixtures, sources):
            mix = self._samples(mix_raw)
            src = self._samples(src_raw).reshape(self.n_src, -1)
            length = mix.shape[0]
            width = length if self.segment is None else self.segment
            if length > width:
                start = crop_start(self.seed, epoch, mid, length, width)
                mix, src, length = mix[start:start + width], src[:, start:start + width], width
            elif length < width:
                mix = np.pad(mix, (0, width - length))
                src = np.pad(src, ((0, 0), (0, width - length)))
            out_mix.append(np.ascontiguousarray(mix, np.float32))
            out_src.append(np.ascontiguousarray(src, np.float32))
            out_len.append(np.int32(length))
        return out_mix, out_src, out_len
