"""Dynamic mixing: training mixtures made anew for every example from single-speaker sources.

With `dynamic_mixing: true` the training pipeline never reads the stored mixtures. Every example
is made on the fly from the single-speaker WAVs of the training split (`s1/ ... s<C>/`, as its
JSON lists name them, whatever data_format says; see SplitReader), in worker processes:
  1. C different speakers are drawn uniformly, then one utterance of each (speaker ids are read
     from the utterance ids in mixture_ID: LibriSpeech's `<spk>-<chapter>-<utt>_<spk>-...`, or
     WSJ0's `<utt>_<gain>_<utt>_<gain>` in wsj0-mix, WHAM! and WHAMR!, see source_utterances; an
     utterance used in several mixtures counts once, its longest copy is kept);
  2. each utterance is sped up or slowed down by a factor drawn from `speed_perturb`
     (resampling from round(f * rate) Hz to rate Hz: f > 1 is faster and shorter);
  3. with `gain_db: [low, high]` each source is set to the mean level (RMS dB over the whole
     utterance) of the C sources plus its own draw from [low, high] dB; with `gain_db: []` the
     sources keep the levels LibriMix gave them (its own random loudness);
  4. each source gets its own random crop of `segment` seconds; when one is shorter, all are cut
     to the shortest (LibriMix's min mode) and zero-padded, the true length going to `lengths`
     (short_policy=drop leaves such utterances out of the draw instead);
  5. for mix_both / mix_single, the WHAM noise of a random training mixture (`noise/`, beside
     `s1/`) is cropped (repeated when shorter) and added at an SNR against the sum of the
     sources drawn from `noise_snr_db` dB (`[]`: at its stored level);
  6. when the mixture or a source would reach full scale, everything is scaled down together to a
     peak of 0.9 (as LibriMix does), and the mixture is computed last, in float32, as the sum of
     the float32 sources it returns (plus the noise): the targets are exactly the mixture's parts.
Speakers are drawn in random order, so the source order is random too (see `swap_sources` for
the stored mixtures).

Every draw comes from a numpy generator seeded with (seed, epoch, global slot), where the global
slot of example j of rank r of R is j * R + r: the examples do not depend on the worker scheduling
or on the number of workers, are new at every epoch and differ between ranks. An epoch has as
many examples as the training split has mixtures (split between the ranks, full batches only).
Validation and test sets never use any of this.
"""
import os
import zlib

import numpy as np
import mindspore.dataset as ds

from src.data.audio import read_audio, resample_audio
from src.model_utils.errors import UserError
from src.data.layouts import has_noise
from src.data.librimix import load_split

PEAK = 0.9            # everything is scaled to this peak when a signal would reach 1.0
_DRAW_TAG = 0x444D    # separates these draws from the other uses of the seed
_SWAP_TAG = 0x5357


def speaker_of(utterance_id):
    """'4077-13754-0001' -> '4077' (LibriSpeech: speaker-chapter-utterance)."""
    return utterance_id.split("-")[0]


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def source_utterances(mixture_id, n_src):
    """[(utterance id, speaker id)] of the C sources named by a mixture_ID, or None.

    LibriMix: '<spk>-<chapter>-<utt>_<spk>-...' (LibriSpeech ids). wsj0-mix, WHAM! and WHAMR!:
    '<utt1>_<gain1>_<utt2>_<gain2>[_...]' (WSJ0 utterance ids, whose first 3 characters name the
    speaker; with mix_single the first utterance is the one source).
    """
    names = mixture_id.split("_")
    if len(names) >= 2 * n_src and len(names) % 2 == 0 and all(map(_is_number, names[1::2])):
        return [(u, u[:3]) for u in names[0:2 * n_src:2]]
    if len(names) == n_src:
        return [(u, speaker_of(u)) for u in names]
    return None


def speed_perturb(signal, factor, sample_rate):
    """Play `signal` [T] `factor` times as fast: resampled from round(factor * rate) to rate Hz.

    Returns float32 [ceil(T * rate / round(factor * rate))]; the same array for factor 1.
    """
    orig_rate = int(round(factor * sample_rate))
    if orig_rate == sample_rate:
        return signal
    return resample_audio(signal, orig_rate, sample_rate)


def _power(x):
    return max(float(np.mean(np.square(x, dtype=np.float64))), 1e-10)


def render_mixture(utterances, segment, rng, gains_db=None, noise=None, snr_db=None):
    """Crop, level and sum C utterances (steps 3-6 of the module docstring).

    Args:
        utterances: C float arrays of any lengths (already speed-perturbed).
        segment: S, samples of the output.
        rng: numpy Generator (draws the crop starts, then the noise crop).
        gains_db: [C] levels relative to the mean level of the utterances, or None (keep levels).
        noise: float array of any length, or None; snr_db: its SNR against the sum of the
            sources, or None (keep its level).
    Returns:
        (mixture float32 [S], sources float32 [C, S], length): beyond `length` all are zeros,
        and mixture == sources.sum(0) (+ the noise) in float32.
    """
    length = min(segment, min(len(u) for u in utterances))
    crops = []
    for u in utterances:
        start = int(rng.integers(0, len(u) - length + 1))
        crops.append(np.asarray(u[start:start + length], np.float64))
    sources = np.stack(crops)
    if gains_db is not None:
        levels = np.array([10 * np.log10(_power(u)) for u in utterances])
        sources *= 10 ** ((levels.mean() + np.asarray(gains_db) - levels) / 20)[:, None]
    background = np.zeros(length)
    if noise is not None:
        start = int(rng.integers(0, max(len(noise) - length, 0) + 1))
        background = np.resize(np.asarray(noise[start:start + length], np.float64), length)
        if snr_db is not None:
            background *= np.sqrt(_power(sources.sum(0)) / _power(background) / 10 ** (snr_db / 10))
    peak = max(np.abs(sources).max(), np.abs(sources.sum(0) + background).max())
    if peak >= 1.0:
        sources *= PEAK / peak
        background *= PEAK / peak
    sources = sources.astype(np.float32)
    mixture = sources.sum(axis=0, dtype=np.float32)
    if noise is not None:
        mixture += background.astype(np.float32)
    pad = segment - length
    return np.pad(mixture, (0, pad)), np.pad(sources, ((0, 0), (0, pad))), length


class UtterancePool:
    """The utterances of a training split, grouped by speaker.

    Attributes:
        entries: int64 [U, 2], (row in split.ids, source index k) of each utterance;
        by_speaker: list of int64 arrays, the entries of each speaker; speakers: their ids.
    """

    def __init__(self, split, n_src, min_length=0):
        best, speaker = {}, {}
        for row, (mid, length) in enumerate(zip(split.ids, split.lengths)):
            utterances = source_utterances(mid, n_src)
            if utterances is None:
                raise UserError(f"{split.split_dir}: mixture_ID {mid!r} does not name {n_src} "
                                "utterances ('<spk>-<chapter>-<utt>_...' as LibriMix, or "
                                "'<utt>_<gain>_<utt>_<gain>' as wsj0-mix)")
            for k, (name, who) in enumerate(utterances):
                speaker[name] = who
                if length >= min_length and (name not in best or length > best[name][2]):
                    best[name] = (row, k, int(length))
        groups = {}
        for name in sorted(best):
            groups.setdefault(speaker[name], []).append(best[name][:2])
        self.speakers = sorted(groups)
        self.entries = np.array([e for s in self.speakers for e in groups[s]], np.int64).reshape(-1, 2)
        sizes = np.cumsum([0] + [len(groups[s]) for s in self.speakers])
        self.by_speaker = [np.arange(sizes[i], sizes[i + 1]) for i in range(len(self.speakers))]

    def draw(self, rng, n_src):
        """C entries of C different speakers, in random order: int64 [C, 2] (row, k)."""
        speakers = rng.choice(len(self.speakers), size=n_src, replace=False)
        return self.entries[[int(rng.choice(self.by_speaker[s])) for s in speakers]]


class SplitReader:
    """Reads single sources and noises of a preprocessed split from the WAVs its JSON lists name.

    Dynamic mixing needs random access to single utterances; MindRecord rows are not read for it
    (MindPage's lookup by mixture_id grows with the number of rows, benchmarks/README.md).
    """

    def __init__(self, split, n_src, sample_rate, noise):
        self.sources = [split.paths[f"s{k + 1}"] for k in range(n_src)]
        self.noises = [os.path.join(os.path.dirname(os.path.dirname(p)), "noise", os.path.basename(p))
                       for p in self.sources[0]] if noise else []
        self.sample_rate = sample_rate
        self.resample = bool(split.info.get("resample", False))
        for path in [self.sources[0][0]] + self.noises[:1]:
            if not os.path.isfile(path):
                raise UserError(f"{path}: file not found (dynamic mixing reads the single-speaker "
                                f"WAVs listed in {split.split_dir}/s1.json ... and, with noise, "
                                "the noise/ folder beside s1/)")

    def _read(self, path):
        return read_audio(path, self.sample_rate, resample=self.resample)[0]

    def source(self, row, k):
        """Source k of mixture `row`: float32 [T]."""
        return self._read(self.sources[k][row])

    def noise(self, row):
        """The WHAM noise of mixture `row` (LibriMix's noise/<mixture_ID>.wav): float32 [T]."""
        return self._read(self.noises[row])


def _range(cfg, key):
    value = getattr(cfg, key)
    if value == []:
        return None
    if len(value) != 2 or not all(isinstance(v, (int, float)) for v in value) or value[0] > value[1]:
        raise UserError(f"{key}: expected [] or [low, high] in dB with low <= high, got {value}")
    return float(value[0]), float(value[1])


def mixing_settings(cfg):
    """The checked dynamic-mixing settings of `cfg`: a dict (see DynamicMixer)."""
    factors = cfg.speed_perturb
    if not all(isinstance(f, (int, float)) and 0.5 <= f <= 2.0 for f in factors):
        raise UserError(f"speed_perturb: expected a list of factors in [0.5, 2], e.g. "
                        f"[0.95, 1.0, 1.05] ([] for none), got {factors}")
    return {"segment": int(round(cfg.segment * cfg.sample_rate)), "n_src": cfg.n_src,
            "sample_rate": cfg.sample_rate, "speed_perturb": [float(f) for f in factors],
            "gain_db": _range(cfg, "gain_db"), "noise_snr_db": _range(cfg, "noise_snr_db"),
            "noise": has_noise(cfg.mix_type), "seed": cfg.seed}


class DynamicMixer:
    """per_batch_map: slot numbers [batch] -> mixtures [batch, S], sources [batch, C, S], lengths."""

    def __init__(self, pool, reader, settings, n_rows, rank_id=0, rank_size=1):
        self.pool = pool
        self.reader = reader
        self.settings = settings
        self.n_rows = n_rows
        self.rank_id = rank_id
        self.rank_size = rank_size

    def example(self, epoch, slot):
        """Example `slot` of this rank at `epoch`: (mixture [S], sources [C, S], length)."""
        s = self.settings
        rng = np.random.default_rng([s["seed"], _DRAW_TAG, epoch,
                                     int(slot) * self.rank_size + self.rank_id])
        utterances = []
        for row, k in self.pool.draw(rng, s["n_src"]):
            signal = self.reader.source(row, k)
            if s["speed_perturb"]:
                signal = speed_perturb(signal, rng.choice(s["speed_perturb"]), s["sample_rate"])
            utterances.append(signal)
        gains = None if s["gain_db"] is None else rng.uniform(*s["gain_db"], size=s["n_src"])
        noise, snr = None, None
        if s["noise"]:
            noise = self.reader.noise(int(rng.integers(self.n_rows)))
            snr = None if s["noise_snr_db"] is None else rng.uniform(*s["noise_snr_db"])
        return render_mixture(utterances, s["segment"], rng, gains, noise, snr)

    def __call__(self, slots, batch_info):
        epoch = batch_info.get_epoch_num()
        rows = [self.example(epoch, slot) for slot in slots]
        return ([r[0] for r in rows], [r[1] for r in rows], [np.int32(r[2]) for r in rows])


def create_dynamic_mixing_dataset(cfg, rank_id=0, rank_size=1):
    """The dynamically mixed training pipeline of split `cfg.train_name` for one rank.

    Returns:
        a batched mindspore.dataset.Dataset with columns mixture [B, S], sources [B, C, S],
        lengths [B], like src.data.dataset.create_train_dataset (which calls this when
        cfg.dynamic_mixing is set, after checking segment, batch_size and the rank).
    """
    settings = mixing_settings(cfg)
    split = load_split(cfg.data_dir, cfg.train_name, cfg.n_src, cfg.sample_rate)
    longest = max(settings["speed_perturb"], default=1.0)
    min_length = int(np.ceil(settings["segment"] * longest)) if cfg.short_policy == "drop" else 0
    pool = UtterancePool(split, cfg.n_src, min_length)
    if len(pool.speakers) < cfg.n_src:
        raise UserError(f"{split.split_dir}: {len(pool.speakers)} speakers with usable utterances "
                        f"(short_policy={cfg.short_policy}), dynamic mixing needs n_src = "
                        f"{cfg.n_src} different speakers")
    steps = len(split.ids) // rank_size // cfg.batch_size
    if steps < 1:
        raise UserError(f"{split.split_dir}: {len(split.ids)} training mixtures, need at least "
                        f"batch_size x ranks = {cfg.batch_size * rank_size}")
    reader = SplitReader(split, cfg.n_src, cfg.sample_rate, settings["noise"])
    mixer = DynamicMixer(pool, reader, settings, len(split.ids), rank_id, rank_size)
    workers = max(1, cfg.dataset_workers)
    slots = ds.NumpySlicesDataset(np.arange(steps * cfg.batch_size, dtype=np.int64),
                                  column_names=["slot"], shuffle=False)
    return slots.batch(cfg.batch_size, drop_remainder=True, per_batch_map=mixer,
                       input_columns=["slot"], output_columns=["mixture", "sources", "lengths"],
                       num_parallel_workers=workers, python_multiprocessing=workers > 1)


class SourceOrderSwap:
    """per_batch_map wrapper (`swap_sources`): the sources of each row in a random order.

    The order is drawn from (seed, epoch, mixture_id), like the crops of the stored mixtures.
    """

    def __init__(self, batcher, seed):
        self.batcher = batcher
        self.seed = seed

    def __call__(self, ids, mixtures, sources, batch_info):
        out_mix, out_src, out_len = self.batcher(ids, mixtures, sources, batch_info)
        epoch = batch_info.get_epoch_num()
        for b, mid in enumerate(ids):
            rng = np.random.default_rng([self.seed, _SWAP_TAG, epoch, zlib.crc32(str(mid).encode())])
            out_src[b] = np.ascontiguousarray(out_src[b][rng.permutation(len(out_src[b]))])
        return out_mix, out_src, out_len
