import os
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
import soundfile as sf
import mindspore as ms

from src.data.audio import resample_audio
from src.model_utils.errors import UserError
from src.deploy.inference import chunk_geometry, load_model
from src.model_utils.config import load_config
from src.deploy.separation import chunking, run_separation, separate_inputs
from helpers import RATE, RAW, ROOT, run_net, separate, separation_config, voices

FORMATS = [(8000, 1, "WAV", "PCM_16", "wav"), (16000, 2, "FLAC", "PCM_24", "flac"),
           (44100, 2, "OGG", "VORBIS", "ogg"), (22050, 1, "WAV", "FLOAT", "wav")]
if "MP3" in sf.available_formats():
    FORMATS.append((24000, 2, "MP3", "MPEG_LAYER_III", "mp3"))


@pytest.mark.slow
@pytest.mark.parametrize("rate,channels,fmt,subtype,ext", FORMATS)
def test_rates_channels_formats(models, tmp_path, rate, channels, fmt, subtype, ext):
    path = tmp_path / f"talk.{ext}"
    sf.write(path, voices(1.5, rate, channels), rate, format=fmt, subtype=subtype)
    before = path.read_bytes()
    written, failed = separate(separation_config(models, "gln", path, tmp_path / "out", *RAW))
    assert failed == [] and [os.path.basename(w) for w in written] == ["talk_s1.wav", "talk_s2.wav"]
    assert path.read_bytes() == before                       # the input is untouched
    # Reference: the decoded file downmixed, resampled to the model's rate, separated whole,
    # resampled back (librosa, one shot) and cut to the input's length.
    mixture, file_rate = sf.read(path, dtype="float32", always_2d=True)
    estimates = run_net(models[1]["gln"], resample_audio(mixture.mean(axis=1), file_rate, RATE))
    expected = resample_audio(estimates, RATE, file_rate)
    for c, out in enumerate(written):
        data, out_rate = sf.read(out, dtype="float32")
        assert out_rate == file_rate and data.ndim == 1 and len(data) == len(mixture)
        n = min(len(data), expected.shape[1])
        scale = np.abs(expected[c]).max()
        np.testing.assert_allclose(data[:n], expected[c, :n], atol=1e-3 * scale)


def test_plot_writes_png(models, tmp_path):
    import matplotlib.image
    sf.write(tmp_path / "a.wav", voices(1.0, 16000, 2), 16000)
    cfg = separation_config(models, "gln", tmp_path / "a.wav", tmp_path / "out", "--plot=true")
    written = run_separation(cfg, log=lambda line: None)
    assert [os.path.basename(w) for w in written] == ["a_s1.wav", "a_s2.wav", "a_separated.png"]
    image = matplotlib.image.imread(written[-1])
    assert image.shape[0] > 300 and image.shape[1] > 600
    assert image[..., :3].std() > 0.05                       # not a blank canvas
    assert not [n for n in os.listdir(tmp_path / "out") if n.startswith(".tmp")]


def test_checkpoint_runs_one_graph_for_every_length(models, tmp_path):
    # Files and chunks differ in length: a graph per length would compile again for each (and
    # keep each in memory); one graph with a dynamic time axis serves them all.
    cfg = separation_config(models, "gln", tmp_path / "unused.wav", tmp_path / "out")
    model_fn = load_model(cfg, cfg.model_path)
    assert [list(t.shape) for t in model_fn.cell.get_inputs()] == [[1, -1]]
    net = models[1]["gln"]
    for length in (300, 1234):
        mixture = voices(length / RATE, RATE, seed=length)[:, 0]
        np.testing.assert_allclose(model_fn(mixture[None])[0], run_net(net, mixture),
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_long_file_bounded_memory_and_equal_to_whole_away_from_borders(models, tmp_path):
    # 8 kHz (the model's rate), stereo: the downmix is exact, so chunks can be compared with the
    # whole-file result sample for sample. BN in eval mode has no utterance statistics.
    net = models[1]["bn"]
    rng = np.random.default_rng(5)
    for minutes in (1, 4):
        left = voices(60 * minutes, RATE, 1, seed=minutes)[:, 0]
        stereo = np.stack([left, left * 0.5 + 0.01 * rng.standard_normal(len(left))], axis=1)
        sf.write(tmp_path / f"long{minutes}.wav", stereo, RATE, subtype="FLOAT")
    peaks = {}
    for minutes in (1, 4):
        cfg = separation_config(models, "bn", tmp_path / f"long{minutes}.wav", tmp_path / "out",
                     "--separate_chunk_seconds=10", "--chunk_overlap=1", *RAW)
        model_fn = load_model(cfg, cfg.model_path)
        tracemalloc.start()
        try:
            _, failed = separate_inputs(model_fn, cfg, *chunking(cfg), log=lambda line: None)
            peaks[minutes] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert failed == []
    # A whole 4-minute file would take 7.7 MB per mono float32 signal; chunks take 10 s.
    assert peaks[4] < 1.2 * peaks[1] + 1e6, peaks
    assert peaks[4] < 8e6, peaks

    stereo, _ = sf.read(tmp_path / "long4.wav", dtype="float32")
    whole = run_net(net, stereo.mean(axis=1))
    chunked = np.stack([sf.read(tmp_path / "out" / f"long4_s{c}.wav", dtype="float32")[0]
                        for c in (1, 2)])
    assert chunked.shape == whole.shape
    chunk, overlap, hop = chunk_geometry(10 * RATE, RATE, net.stride)
    margin = 6 * net.stride + 2 * net.L                 # receptive field of the tiny model
    keep = np.ones(whole.shape[1], bool)
    for start in range(hop, whole.shape[1], hop):
        keep[max(0, start - margin):start + overlap + margin] = False
    assert keep.sum() > 0.8 * len(keep)
    # The same speaker order as the whole-file result in every chunk.
    np.testing.assert_allclose(chunked[:, keep], whole[:, keep], atol=1e-4)
    assert np.corrcoef(chunked[0], whole[0])[0, 1] > 0.99


@pytest.mark.parametrize("input_length", [0, 1600])
def test_mindir_model(models, tmp_path, input_length):
    directory, nets = models
    example = ms.Tensor(np.zeros((1, input_length), np.float32)) if input_length else \
        ms.Tensor(shape=[1, None], dtype=ms.float32)               # a dynamic time axis
    ms.export(nets["bn"], example, file_name=str(tmp_path / "bn"), file_format="MINDIR")
    sf.write(tmp_path / "a.wav", voices(1.0, RATE), RATE, subtype="FLOAT")
    cfg = load_config([f"--config_path={directory}/bn.yaml", f"--model_path={tmp_path}/bn.mindir",
                       f"--input={tmp_path}/a.wav", f"--output_dir={tmp_path}/out",
                       f"--input_length={input_length}", "--chunk_overlap=0.05", *RAW])
    run_separation(cfg, log=lambda line: None)
    whole = run_net(nets["bn"], sf.read(tmp_path / "a.wav", dtype="float32")[0])
    out = np.stack([sf.read(tmp_path / "out" / f"a_s{c}.wav", dtype="float32")[0] for c in (1, 2)])
    assert out.shape == whole.shape
    if input_length:
        # Chunks of 1600 samples; away from their borders the result is the whole-file one.
        np.testing.assert_allclose(out[:, 200:1000], whole[:, 200:1000], atol=1e-4)
        # Without --input_length, the fixed-length model cannot take the whole file.
        cfg = load_config([f"--config_path={directory}/bn.yaml",
                           f"--model_path={tmp_path}/bn.mindir", f"--input={tmp_path}/a.wav",
                           f"--output_dir={tmp_path}/out2"])
        model_fn = load_model(cfg, cfg.model_path)
        for length in (3000, 8000):      # a shape error, or a reshape that happens to fit
            with pytest.raises(UserError, match=f"MINDIR refused an input of {length} samples"):
                model_fn(np.zeros((1, length), np.float32))
    else:
        np.testing.assert_allclose(out, whole, atol=1e-5)


def test_bad_inputs_named_and_others_still_processed(models, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    sf.write(folder / "good.wav", voices(0.5, RATE), RATE)
    (folder / "notaudio.wav").write_text("this is not audio\n")
    sf.write(folder / "empty.wav", np.zeros((0, 1), np.float32), RATE)
    sf.write(folder / "short.flac", np.ones((40, 1), np.float32) * 0.1, 48000)  # 6 samples at 8k
    (folder / "notes.txt").write_text("ignored: not an audio extension\n")
    lines = []
    cfg = separation_config(models, "gln", folder, tmp_path / "out")
    written, failed = separate(cfg, lines.append)
    assert sorted(os.path.basename(f) for f in failed) == \
        ["empty.wav", "notaudio.wav", "short.flac"]
    assert sorted(os.listdir(tmp_path / "out")) == ["good_s1.wav", "good_s2.wav"]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 3 and all("\n" not in line for line in errors)
    assert any("notaudio.wav: not readable audio" in line for line in errors)
    assert any("empty.wav: audio has no samples" in line for line in errors)
    assert any("short.flac" in line and "shorter than the model's encoder kernel" in line
               for line in errors)
    with pytest.raises(UserError, match="3 of 4 inputs failed"):
        run_separation(cfg, log=lambda line: None)
    with pytest.raises(UserError, match="missing.wav: file not found"):
        run_separation(separation_config(models, "gln", tmp_path / "missing.wav", tmp_path / "out"))


def test_output_never_overwrites_input_and_stems_stay_apart(models, tmp_path):
    # Separating a folder into itself: a.wav's output a_s1.wav is also an input.
    sf.write(tmp_path / "a.wav", voices(0.5, RATE), RATE)
    sf.write(tmp_path / "a_s1.wav", voices(0.7, RATE), RATE)
    before = (tmp_path / "a_s1.wav").read_bytes()
    lines = []
    cfg = separation_config(models, "gln", tmp_path, tmp_path)
    written, failed = separate(cfg, lines.append)
    assert [os.path.basename(f) for f in failed] == ["a.wav"]
    assert any("a.wav: its output" in line and "would overwrite an input" in line for line in lines)
    assert (tmp_path / "a_s1.wav").read_bytes() == before
    assert sorted(os.path.basename(w) for w in written) == ["a_s1_s1.wav", "a_s1_s2.wav"]
    folder = tmp_path / "dup"
    folder.mkdir()
    sf.write(folder / "b.wav", voices(0.5, RATE), RATE)
    sf.write(folder / "b.flac", voices(0.5, RATE), RATE)
    written, _ = separate(separation_config(models, "gln", folder, tmp_path / "dup_out"))
    assert sorted(os.path.basename(w) for w in written) == \
        ["b_flac_s1.wav", "b_flac_s2.wav", "b_wav_s1.wav", "b_wav_s2.wav"]


@pytest.mark.slow
def test_cli_exit_status_and_one_line_errors(models, tmp_path):
    directory, _ = models
    folder = tmp_path / "in"
    folder.mkdir()
    sf.write(folder / "good.ogg", voices(0.5, 16000, 2), 16000, format="OGG", subtype="VORBIS")
    (folder / "broken.flac").write_bytes(b"fLaC" + bytes(100))
    env = {**os.environ, "PYTHONPATH": ROOT, "GLOG_v": "3"}
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "separate.py"),
                           f"--model_path={directory}/gln.ckpt",
                           f"--config_path={directory}/gln.yaml",
                           f"--input={folder}", f"--output_dir={tmp_path}/out"],
                          capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = (proc.stdout + proc.stderr).splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 2, proc.stdout + proc.stderr
    assert "broken.flac" in errors[0] and "1 of 2 inputs failed" in errors[1]
    info = sf.info(str(tmp_path / "out" / "good_s2.wav"))
    assert info.samplerate == 16000 and info.channels == 1 and info.frames == 8000


def test_truncated_and_non_finite_inputs_refused_without_leftovers(models, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    sf.write(folder / "whole.wav", voices(0.5, RATE), RATE)
    sf.write(folder / "cut.wav", voices(1.0, RATE), RATE)
    data = (folder / "cut.wav").read_bytes()
    (folder / "cut.wav").write_bytes(data[:len(data) // 2])       # a copy stopped half-way
    late_nan = voices(9.0, RATE)
    late_nan[70000] = np.nan                                       # after the first read block
    sf.write(folder / "nan.wav", late_nan, RATE, subtype="FLOAT")
    inf = voices(0.5, RATE)
    inf[100] = np.inf
    sf.write(folder / "inf.wav", inf, RATE, subtype="FLOAT")
    lines = []
    written, failed = separate(separation_config(models, "gln", folder, tmp_path / "out"), lines.append)
    assert sorted(os.path.basename(f) for f in failed) == ["cut.wav", "inf.wav", "nan.wav"]
    errors = sorted(line for line in lines if line.startswith("error:"))
    assert "cut.wav: truncated audio file" in errors[0]
    assert "inf.wav: audio holds NaN or infinite samples (the first at sample 100)" in errors[1]
    assert "nan.wav: audio holds NaN or infinite samples (the first at sample 70000)" in errors[2]
    assert sorted(os.listdir(tmp_path / "out")) == ["whole_s1.wav", "whole_s2.wav"]


def test_leftovers_of_a_killed_run_removed_and_never_inputs(models, tmp_path):
    folder = tmp_path / "work"
    folder.mkdir()
    sf.write(folder / "talk.wav", voices(0.5, RATE), RATE)
    (folder / ".tmp-k1j2h3.wav").write_bytes(b"")                 # killed before its header
    sf.write(folder / ".tmp-x9y8.wav", voices(0.3, RATE), RATE)    # killed before its rename
    lines = []
    written, failed = separate(separation_config(models, "gln", folder, folder), lines.append)
    assert failed == [] and not any(line.startswith("error:") for line in lines), lines
    assert sorted(os.listdir(folder)) == ["talk.wav", "talk_s1.wav", "talk_s2.wav"]
    sf.write(folder / ".tmp-given.wav", voices(0.3, RATE), RATE)
    with pytest.raises(UserError, match=r"\.tmp-given\.wav: a temporary file of an unfinished "
                                        "write, not an input"):
        run_separation(separation_config(models, "gln", folder / ".tmp-given.wav", tmp_path / "out"))
