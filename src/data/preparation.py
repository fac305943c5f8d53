"""preprocess.py's work: dataset split folders -> JSON lists (+ MindRecord) under out_dir.

Per split: pair the files by mixture_ID (LibriMix, wsj0-mix, WHAM!, WHAMR!: src/data/layouts.py),
check every mixture in worker processes (pass 1, headers only), then, for MindRecord, read the
samples in worker processes and write them in mixture order (pass 2). The split is built in
`<out_dir>/.tmp-<split>` and renamed to `<out_dir>/<split>` when it is complete; `info.json`,
written last, marks it finished. Output layout: see src/data/librimix.py.

A finished split is never replaced without `overwrite`: re-running over finished output is refused,
a run that was interrupted resumes with the splits it had not finished, and a folder that
preprocess.py did not write is never replaced or deleted.
"""
import multiprocessing
import os
import shutil

import numpy as np

from src.model_utils.config import Config
from src.model_utils.errors import UserError
from src.model_utils.atomic import write_json
from src.model_utils.progress import progress_bar
from src.data.layouts import find_split_root, list_mixtures, source_settings
from src.data.librimix import (FORMAT_VERSION, INFO_FILE, SMALLER_SPLIT, check_mixture,
                               existing_splits, read_info, read_mixture, stream_names)
from src.data.mindrecord_io import SplitWriter, read_order

BLOCK = 256  # mixtures handed to the workers at a time (bounds the memory of pass 2)


def _guarded(task):
    """Run `func(*args)` of task (func, args) in a worker: (result, None) or (None, error text)."""
    func, args = task
    try:
        return func(*args), None
    except UserError as err:
        return None, str(err)


def _settings(cfg, root):
    return {"source_dir": root, "sample_rate": cfg.sample_rate, "n_src": cfg.n_src,
            "mix_type": cfg.mix_type, "resample": bool(cfg.resample), **source_settings(cfg)}


def _recorded_settings(info, n_src):
    """The settings an info.json records (one written before other datasets were read: LibriMix)."""
    earlier = {"dataset": "librimix", "source_folders": [f"s{k}" for k in range(1, n_src + 1)]}
    return {**earlier, **info}


def _check_config(cfg):
    if not cfg.splits:
        raise UserError("splits: expected at least one split name, e.g. [train-360,dev,test] "
                        "(LibriMix) or [tr,cv,tt] (wsj0-mix, WHAM!, WHAMR!)")
    if len(set(cfg.splits)) != len(cfg.splits):
        raise UserError(f"splits: names repeat in {cfg.splits}")
    for split in cfg.splits:
        if not isinstance(split, str) or not split or os.sep in split or split.startswith("."):
            raise UserError(f"splits: {split!r} is not a split folder name")


def plan_splits(cfg, root, formats):
    """The splits to (re)write; UserError for finished or foreign output that may not be replaced."""
    todo = []
    for split in cfg.splits:
        final = os.path.join(cfg.out_dir, split)
        if not os.path.exists(final):
            todo.append(split)
            continue
        info = read_info(final)
        if info is None:
            raise UserError(f"{final}: exists and was not written by preprocess.py (no {INFO_FILE}); "
                            "choose another out_dir")
        recorded = _recorded_settings(info, cfg.n_src)
        same = {k: recorded.get(k) for k in _settings(cfg, root)} == _settings(cfg, root)
        if cfg.overwrite or (same and not set(formats) <= set(info.get("formats", []))):
            todo.append(split)
        elif not same:
            raise UserError(f"{final}: already preprocessed with other settings "
                            f"(pass --overwrite=true to replace it)")
    if not todo:
        raise UserError(f"{cfg.out_dir}: splits {list(cfg.splits)} are already preprocessed "
                        "(pass --overwrite=true to redo them)")
    return todo


def prepare_dataset(cfg, log=print):
    """Convert the splits `cfg.splits` of the `cfg.dataset` at `cfg.in_dir` into `cfg.out_dir`.

    Returns:
        {split: info dict} for the splits written by this call.
    """
    _check_config(cfg)
    formats = ["json"] + (["mindrecord"] if cfg.data_format == "mindrecord" else [])
    chosen = cfg.on_command_line("splits")
    search = list(cfg.splits) + ([] if chosen else [SMALLER_SPLIT[s] for s in cfg.splits
                                                    if s in SMALLER_SPLIT])
    root = find_split_root(cfg, search)
    if not chosen:
        # Without --splits, the split folders that were generated: many users have only some.
        found, absent = existing_splits(root, cfg.splits, cfg.mix_type)
        log(f"splits found in {root}: {', '.join(found)}"
            + (f"; absent: {', '.join(absent)}" if absent else "") + " (--splits chooses them)")
        cfg = Config({**cfg.to_dict(), "splits": found})
    todo = plan_splits(cfg, root, formats)
    done = [s for s in cfg.splits if s not in todo]
    if done:
        log(f"already finished, kept: {', '.join(done)}")
    os.makedirs(cfg.out_dir, exist_ok=True)
    workers = cfg.preprocess_workers
    pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 1 else None
    try:
        results = {}
        for split in todo:
            results[split] = _SplitJob(cfg, root, split, formats, pool).run()
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    _print_summary(results, cfg.out_dir, log)
    return results


def _imap(pool, tasks, desc):
    """Results of `_guarded(task)` in task order, BLOCK tasks at a time, with a progress bar."""
    bar = progress_bar(total=len(tasks), desc=desc, unit="mix")
    try:
        for start in range(0, len(tasks), BLOCK):
            block = tasks[start:start + BLOCK]
            chunk = max(1, len(block) // 32)
            for result in (pool.imap(_guarded, block, chunk) if pool else map(_guarded, block)):
                bar.update(1)
                yield result
    finally:
        bar.close()


class _SplitJob:
    """One split: pass 1 (check), then the output folder built under a temporary name."""

    def __init__(self, cfg, root, split, formats, pool):
        self.cfg, self.root, self.split, self.formats, self.pool = cfg, root, split, formats, pool
        self.ids, paths, self.csv_lengths = list_mixtures(root, split, cfg)
        self.files = [[paths[s][i] for s in stream_names(cfg.n_src)] for i in range(len(self.ids))]
        self.good, self.lengths, self.bad = [], [], []   # positions in ids, their lengths, errors

    def run(self):
        self.check()
        tmp = os.path.join(self.cfg.out_dir, f".tmp-{self.split}")
        shutil.rmtree(tmp, ignore_errors=True)  # left by a run that was killed
        os.makedirs(tmp)
        try:
            info = self.write(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _move_into_place(tmp, os.path.join(self.cfg.out_dir, self.split))
        return info

    def _failed(self, error):
        if not self.cfg.skip_bad:
            raise UserError(f"{error} (pass --skip_bad=true to leave such mixtures out)")
        self.bad.append(error)

    def _require_some(self):
        if not self.good:
            raise UserError(f"{os.path.join(self.root, self.split)}: no usable mixture in split "
                            f"'{self.split}'")

    def check(self):
        """Pass 1: headers of every file; sets good, lengths, bad and the sample encoding."""
        cfg = self.cfg
        tasks = [(check_mixture, (files, cfg.sample_rate, cfg.resample,
                                  self.csv_lengths[i] if self.csv_lengths else None))
                 for i, files in enumerate(self.files)]
        pcm16 = True
        for i, (result, error) in enumerate(_imap(self.pool, tasks, f"{self.split}: checking")):
            if error:
                self._failed(error)
                continue
            self.good.append(i)
            self.lengths.append(result[0])
            pcm16 = pcm16 and result[1]
        self._require_some()
        self.encoding = "int16" if pcm16 else "float32"

    def write(self, tmp):
        """Everything of the split into the folder `tmp`, info.json last. Returns the info."""
        cfg = self.cfg
        info = {"format_version": FORMAT_VERSION, "split": self.split, **_settings(cfg, self.root),
                "formats": self.formats, "encoding": self.encoding}
        if "mindrecord" in self.formats:
            info.update(self.write_mindrecord(tmp))
        lengths = np.asarray(self.lengths, np.int64)
        write_json(os.path.join(tmp, "ids.json"), [self.ids[i] for i in self.good], indent=None)
        for j, name in enumerate(stream_names(cfg.n_src)):
            write_json(os.path.join(tmp, f"{name}.json"),
                       [[self.files[i][j], int(n)] for i, n in zip(self.good, lengths)],
                       indent=None)
        with open(os.path.join(tmp, "skipped.txt"), "w", encoding="utf-8") as f:
            f.writelines(line + "\n" for line in self.bad)
        info.update(mixtures=len(self.good), skipped=len(self.bad),
                    hours=float(lengths.sum() / cfg.sample_rate / 3600),
                    min_seconds=float(lengths.min() / cfg.sample_rate),
                    max_seconds=float(lengths.max() / cfg.sample_rate), skipped_list=self.bad[:20])
        write_json(os.path.join(tmp, INFO_FILE), info, indent=None)
        return info

    def write_mindrecord(self, tmp):
        """Pass 2: samples into `<tmp>/<split>.mindrecord*` in mixture order; returns info entries."""
        cfg = self.cfg
        itemsize = 2 if self.encoding == "int16" else 4
        row_bytes = np.asarray(self.lengths, np.int64) * (1 + cfg.n_src) * itemsize
        writer = SplitWriter(tmp, f"{self.split}.mindrecord", cfg.mindrecord_shards, self.encoding,
                             int(row_bytes.max()), int(row_bytes.sum()))
        tasks = [(read_mixture, (self.files[i], cfg.sample_rate, cfg.resample, self.encoding))
                 for i in self.good]
        kept, kept_lengths = [], []
        for i, (result, error) in zip(self.good, _imap(self.pool, tasks, f"{self.split}: writing")):
            if error:
                self._failed(error)
                continue
            mixture, sources = result
            writer.add(self.ids[i], mixture, sources)
            kept.append(i)
            kept_lengths.append(mixture.shape[0])
        self.good, self.lengths = kept, kept_lengths
        self._require_some()
        writer.commit()
        order = read_order([os.path.join(tmp, f) for f in writer.files], [self.ids[i] for i in kept])
        return {"mindrecord_files": writer.files, "mindrecord_order": order}


def _move_into_place(tmp, final):
    """Rename the finished folder `tmp` to `final`, replacing an earlier output of ours."""
    if os.path.exists(final):
        old = os.path.join(os.path.dirname(final), ".old-" + os.path.basename(final))
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def _print_summary(results, out_dir, log):
    log("split        mixtures    hours   min s   max s  skipped")
    for split, info in results.items():
        log(f"{split:<12} {info['mixtures']:>8} {info['hours']:>8.2f} {info['min_seconds']:>7.2f} "
            f"{info['max_seconds']:>7.2f} {info['skipped']:>8}")
        for line in info["skipped_list"]:
            log(f"  skipped: {line}")
        if info["skipped"] > len(info["skipped_list"]):
            log(f"  ... {info['skipped'] - len(info['skipped_list'])} more")
        if info["skipped"]:
            log(f"  list of skipped mixtures: {os.path.join(out_dir, split, 'skipped.txt')}")
