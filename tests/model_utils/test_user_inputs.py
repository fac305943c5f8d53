"""Wrong values and damaged inputs a user meets: value ranges, libsndfile's reasons after long
paths, silent reference sources in an evaluation set."""

import numpy as np
import pytest
import mindspore.dataset as ds

from src.data.audio import probe_audio, read_audio
from src.evaluation.evaluate import evaluate, summarize, summary_line
from src.model_utils.config import load_config
from src.model_utils.errors import UserError



@pytest.mark.parametrize("flag,message", [
    ("--N=0", r"N: expected >= 1, got 0 \(command line\)"),
    ("--L=7", "L: expected >= 2, even, got 7"),
    ("--Sc=-1", "Sc: expected >= 0, got -1"),
    ("--X=0", "X: expected >= 1"),
    ("--segment=0", "segment: expected > 0"),
    ("--lr=-0.1", "lr: expected > 0"),
    ("--lr_factor=1.5", "lr_factor: expected > 0, <= 1, got 1.5"),
    ("--batch_size=0", "batch_size: expected >= 1"),
    ("--speed_perturb=[1.0,0]", r"speed_perturb: expected > 0, got \[1.0, 0\]"),
])
def test_value_ranges_checked_when_the_configuration_loads(flag, message):
    with pytest.raises(UserError, match=message):
        load_config([flag])


def test_range_of_a_recipe_value_names_the_recipe(tmp_path):
    recipe = tmp_path / "mine.yaml"
    recipe.write_text("H: 0\n")
    with pytest.raises(UserError, match=r"H: expected >= 1, got 0 \(mine.yaml\)"):
        load_config([f"--config_path={recipe}"])
    assert load_config([f"--config_path={recipe}", "--H=4"]).H == 4   # the flag overrides it


def test_flags_given_on_the_command_line_are_known():
    cfg = load_config(["--X=8", "--train_name=train-100"])
    assert cfg.on_command_line("X") and cfg.on_command_line("train_name")
    assert not cfg.on_command_line("R") and not cfg.on_command_line("splits")
    assert "_command_line" not in cfg.to_dict()


def test_libsndfile_reason_kept_after_a_long_path(tmp_path):
    folder = tmp_path / ("d" * 120)
    folder.mkdir()
    path = folder / ("recording_" + "x" * 100 + ".wav")
    path.write_bytes(b"not audio at all" * 8)
    for read in (read_audio, probe_audio):
        with pytest.raises(UserError) as err:
            read(str(path))
        message = str(err.value)
        assert message.startswith(f"{path}: not readable audio")
        assert "Format not recognised" in message and "\n" not in message
        assert message.count(str(path)) == 1


def _dataset(sources):
    """An evaluation dataset (columns of create_eval_dataset) of utterances sources [U, C, T]."""
    sources = np.asarray(sources, np.float32)
    return ds.NumpySlicesDataset({"mixture": sources.sum(axis=1), "sources": sources,
                                  "lengths": np.full(len(sources), sources.shape[-1], np.int32)},
                                 shuffle=False).batch(1)


def test_silent_reference_left_out_of_the_means_and_counted():
    rng = np.random.default_rng(0)
    T = 800
    voiced = rng.standard_normal((3, 2, T)).astype(np.float32)
    silent = voiced[2].copy()
    silent[1] = 0.0                      # an utterance whose second speaker is silent
    sources = np.stack([voiced[0], voiced[1], silent])

    def model(mixture):                  # a fixed imperfect separator: sources plus some mixture
        index = int(np.argmin([np.abs(s.sum(axis=0) - mixture[0]).max() for s in sources]))
        return (sources[index] + 0.3 * mixture)[None]

    rows, summary = evaluate(model, _dataset(sources), ["a", "b", "c"], n_src=2, with_sdr=False)
    assert rows[2]["si_snr"] is None and rows[2]["si_snri"] is None
    assert summary["utterances"] == 3 and summary["silent_references"] == 1
    assert summary["si_snr"] == pytest.approx(np.mean([rows[0]["si_snr"], rows[1]["si_snr"]]))
    assert summary["si_snr"] > 0          # a -80 dB floor averaged in would pull it far below
    assert "over 2 utterances (1 with a silent reference left out)" in summary_line(summary)
    # With SDR, the silent utterance is left out the same way instead of stopping the run.
    rows, summary = evaluate(model, _dataset(sources), ["a", "b", "c"], n_src=2, with_sdr=True)
    assert rows[2]["sdr"] is None and summary["silent_references"] == 1
    assert summary["sdr"] == pytest.approx(np.mean([rows[0]["sdr"], rows[1]["sdr"]]))


def test_only_silent_references_is_an_error():
    row = {"id": "x", "length": 5, "si_snr": None, "si_snri": None, "sdr": None, "sdri": None}
    with pytest.raises(UserError, match="every one of the 2 utterances has a silent reference"):
        summarize([row, dict(row, id="y")])
