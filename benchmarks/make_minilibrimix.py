"""Build a small LibriMix-style set of real two-speaker mixtures from a folder of LibriSpeech files.

Input: LibriSpeech utterances named `<speaker>-<chapter>-<utterance>.flac` (or .wav), any rate.
Output: the layout the LibriMix generator writes (and preprocess.py reads), min mode, sep_clean:
```
<out_dir>/Libri2Mix/wav<k>k/min/{train-360,dev[,test]}/{mix_clean,s1,s2}/<utt1>_<utt2>.wav
```
The speakers are split at random between train-360, dev and (with `--test_speakers`) test, disjoint. Each mixture pairs two
utterances of different speakers of its split (no pair twice), resampled to `--sample_rate`, and
mixes them as LibriMix does (src.data.demo_data.mix_sources: a random level in [-33, -25] dB per
utterance, both cut to the shorter, scaled down together when the sum would clip); 16-bit WAVs.
`--dev_max_seconds` cuts the dev mixtures, so that the validation after every epoch is short.
The set is built under a temporary name and renamed into place; an existing one is not touched.

    python benchmarks/make_minilibrimix.py --librispeech DIR --out_dir DIR [--dev_speakers 50]
        [--train_mixtures 100] [--dev_mixtures 50] [--dev_max_seconds 0] [--sample_rate 8000]
        [--test_speakers 0] [--test_mixtures 50] [--seed 0]
"""
import argparse
import glob
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from src.data.audio import read_audio, write_audio  # noqa: E402
from src.data.demo_data import mix_sources  # noqa: E402
from src.data.dynamic_mixing import speaker_of  # noqa: E402
from src.model_utils.errors import UserError, run_main  # noqa: E402


def list_utterances(folder):
    """{utterance id: path} of the LibriSpeech files in `folder` (FLAC or WAV)."""
    paths = sorted(glob.glob(os.path.join(folder, "*.flac")) + glob.glob(os.path.join(folder, "*.wav")))
    found = {os.path.splitext(os.path.basename(p))[0]: p for p in paths}
    bad = [u for u in found if len(u.split("-")) != 3]
    if not found or bad:
        raise UserError(f"{folder}: expected LibriSpeech files <speaker>-<chapter>-<utterance>.flac, "
                        f"found {len(found)} files" + (f", e.g. {bad[0]!r}" if bad else ""))
    return found


def draw_pairs(utterances, count, rng):
    """`count` different pairs of utterances of different speakers.

    Pairs are made in rounds: each round shuffles the utterances and pairs them two by two, so an
    utterance is in at most one mixture per round (LibriMix uses each utterance about once).
    """
    speakers = [speaker_of(u) for u in utterances]
    possible = sum(speakers[i] != speakers[j] for i in range(len(utterances)) for j in range(i))
    if count > possible:
        raise UserError(f"{count} mixtures asked for, {possible} pairs of speakers' utterances exist")
    pairs, seen = [], set()
    while len(pairs) < count:
        order = rng.permutation(len(utterances))
        for i, j in zip(order[0::2], order[1::2]):
            if speakers[i] != speakers[j] and frozenset((i, j)) not in seen and len(pairs) < count:
                seen.add(frozenset((i, j)))
                pairs.append((utterances[i], utterances[j]))
    return pairs


def write_split(folder, pairs, audio, sample_rate, rng, max_samples=None):
    """Mix each pair and write mix_clean/, s1/, s2/ (cut to max_samples when given)."""
    for first, second in pairs:
        mixture, sources = mix_sources([audio[first], audio[second]], rng)
        name = f"{first}_{second}.wav"
        for stream, signal in zip(("mix_clean", "s1", "s2"), [mixture, *sources]):
            write_audio(os.path.join(folder, stream, name), signal[:max_samples].astype(np.float32),
                        sample_rate, subtype="PCM_16")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--librispeech", required=True, help="folder of LibriSpeech utterances")
    parser.add_argument("--out_dir", required=True, help="root folder; Libri2Mix/ is made in it")
    parser.add_argument("--dev_speakers", type=int, default=50)
    parser.add_argument("--train_mixtures", type=int, default=100)
    parser.add_argument("--dev_mixtures", type=int, default=50)
    parser.add_argument("--dev_max_seconds", type=float, default=0.0,
                        help="cut the dev mixtures to at most this long (0: whole; shorter "
                             "validation when it runs often)")
    parser.add_argument("--test_speakers", type=int, default=0,
                        help="speakers of a test split (0: no test split); whole mixtures")
    parser.add_argument("--test_mixtures", type=int, default=50)
    parser.add_argument("--sample_rate", type=int, default=8000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    final = os.path.join(os.path.abspath(args.out_dir), "Libri2Mix",
                         f"wav{args.sample_rate // 1000}k", "min")
    if os.path.exists(final):
        raise UserError(f"{final}: exists (choose another --out_dir)")
    paths = list_utterances(args.librispeech)
    speakers = sorted({speaker_of(u) for u in paths})
    if not 2 <= args.dev_speakers <= len(speakers) - 2:
        raise UserError(f"--dev_speakers: expected 2 .. {len(speakers) - 2}, got {args.dev_speakers}")
    if args.test_speakers and not 2 <= args.test_speakers <= len(speakers) - args.dev_speakers - 2:
        raise UserError(f"--test_speakers: expected 0 or 2 .. "
                        f"{len(speakers) - args.dev_speakers - 2}, got {args.test_speakers}")
    rng = np.random.default_rng(args.seed)
    dev = set(rng.choice(speakers, size=args.dev_speakers, replace=False).tolist())
    # Drawn after dev, so that a set made without a test split keeps its dev speakers.
    test = set(rng.choice(sorted(set(speakers) - dev), size=args.test_speakers,
                          replace=False).tolist()) if args.test_speakers else set()
    audio = {u: read_audio(p, args.sample_rate, resample=True)[0].astype(np.float64)
             for u, p in paths.items()}
    tmp = f"{final}.tmp-{os.getpid()}"
    try:
        dev_samples = int(args.dev_max_seconds * args.sample_rate) or None
        splits = [("train-360", args.train_mixtures, set(speakers) - dev - test, None),
                  ("dev", args.dev_mixtures, dev, dev_samples)]
        if test:
            splits.append(("test", args.test_mixtures, test, None))
        for split, count, chosen, cut in splits:
            pairs = draw_pairs([u for u in paths if speaker_of(u) in chosen], count, rng)
            write_split(os.path.join(tmp, split), pairs, audio, args.sample_rate, rng, cut)
            print(f"{split}: {count} mixtures of {len(chosen)} speakers")
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(final)


if __name__ == "__main__":
    run_main(main)
