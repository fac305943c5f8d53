"""benchmarks/make_minilibrimix.py: train, dev and test speakers are disjoint."""
import os
import subprocess
import sys

import numpy as np
import soundfile as sf
from helpers import ROOT



def speakers(folder):
    """Speakers of the mixtures in `folder`/mix_clean (<spk>-<ch>-<utt>_<spk>-<ch>-<utt>.wav)."""
    names = os.listdir(os.path.join(folder, "mix_clean"))
    return {part.split("-")[0] for name in names for part in name[:-4].split("_")}


def test_test_split_has_its_own_speakers(tmp_path):
    rng = np.random.default_rng(0)
    source = tmp_path / "librispeech"
    source.mkdir()
    for speaker in range(12):
        sf.write(str(source / f"{100 + speaker}-1-0000.wav"),
                 0.1 * rng.standard_normal(8000).astype(np.float32), 8000)
    subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "make_minilibrimix.py"),
                    "--librispeech", str(source), "--out_dir", str(tmp_path / "mini"),
                    "--dev_speakers", "3", "--test_speakers", "3", "--train_mixtures", "6",
                    "--dev_mixtures", "2", "--test_mixtures", "3"], check=True, cwd=ROOT,
                   capture_output=True)
    root = tmp_path / "mini" / "Libri2Mix" / "wav8k" / "min"
    splits = {split: speakers(str(root / split)) for split in ("train-360", "dev", "test")}
    assert len(os.listdir(root / "test" / "mix_clean")) == 3
    assert len(splits["test"]) == 3 and len(splits["dev"]) <= 3
    assert not splits["test"] & splits["dev"]
    assert not splits["test"] & splits["train-360"]
    assert not splits["dev"] & splits["train-360"]
