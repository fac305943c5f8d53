"""A disk or data that fails mid-run: one line naming the file and the cause, a non-zero exit, no
temporary file left (preprocess.py, train.py, eval.py, export.py, separate.py, convert_pytorch.py).

The read-only and full output locations are tmpfs mounts (a full one is filled to a few kB):
they need root and a kernel that lets this process mount.
"""
import errno
import glob
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import yaml
import mindspore as ms

from src.model.conv_tasnet import ConvTasNet
from src.model_utils.atomic import atomic_output
from src.model_utils.errors import os_error_line
from helpers import run_script, ROOT, TINY_MODEL, flags, make_data_dir

PTH = os.path.join(ROOT, "tests", "fixtures", "pytorch", "asteroid_serialized.pth")
KINDS = ["a file", "read-only", "under /proc", "full"]
CAUSES = {"a file": "a file stands where a folder is needed", "read-only": "Read-only file system",
          "under /proc": "No such file or directory", "full": "No space left on device"}


def _mount(path, options):
    if os.geteuid() != 0:
        return False
    os.makedirs(path, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                          capture_output=True).returncode == 0


@pytest.fixture
def bad_location(request, tmp_path):
    """(kind, folder): an output folder that cannot be written, of the kind `request.param`.

    "full" is a 2 MB tmpfs holding a filler file that leaves `free_kb` kB (4 unless the test's
    parameter says otherwise: config.yaml fits in them, a checkpoint does not).
    """
    kind, free_kb = request.param if isinstance(request.param, tuple) else (request.param, 4)
    mounted = None
    if kind == "a file":
        (tmp_path / "afile").write_text("a file of the user's\n")
        folder = tmp_path / "afile"
    elif kind == "under /proc":
        folder = "/proc/no-such-process-folder/out"
    else:
        mounted = tmp_path / kind
        options = "ro,size=1m" if kind == "read-only" else "size=2m"
        if not _mount(mounted, options):
            pytest.skip("mounting a tmpfs needs root and a kernel that allows it")
        folder = mounted / "out"
        if kind == "full":
            stat = os.statvfs(mounted)
            with open(mounted / "filler", "wb") as f:
                f.write(bytes(stat.f_bavail * stat.f_frsize - free_kb * 1024))
    yield kind, str(folder)
    if mounted is not None:
        # lazily: a file a failed writer left open must not keep the mount busy
        subprocess.run(["umount", "-l", str(mounted)], check=True)



def error_line(capsys):
    """The error line of stderr (progress bars aside); asserts there is exactly one."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def leftovers(*folders):
    """Temporary files (.tmp-*, .eval_progress.jsonl) under `folders`."""
    found = []
    for folder in folders:
        for path in glob.glob(os.path.join(str(folder), "**", ".*"), recursive=True):
            if os.path.basename(path).startswith((".tmp-", ".eval_progress")):
                found.append(path)
    return found


def assert_refused(status, line, kind, folder):
    assert status == 1, line
    assert CAUSES[kind] in line and (str(folder) in line or "/proc/no-such" in line), line
    assert leftovers(os.path.dirname(str(folder))) == []


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny data set and a checkpoint with its config.yaml: (root, data_dir, config, ckpt)."""
    root = tmp_path_factory.mktemp("run")
    data_dir = make_data_dir(str(root))
    ms.set_seed(0)
    ckpt = str(root / "tiny.ckpt")
    ms.save_checkpoint(ConvTasNet(**TINY_MODEL), ckpt)
    config = str(root / "config.yaml")
    with open(config, "w", encoding="utf-8") as f:
        yaml.safe_dump({**TINY_MODEL, "sample_rate": 8000}, f)
    return root, data_dir, config, ckpt


def test_os_error_line_names_the_file():
    assert os_error_line(OSError(errno.ENOSPC, "No space left on device", "out/a.ckpt")) == \
        "out/a.ckpt: No space left on device"
    assert os_error_line(FileExistsError(errno.EEXIST, "File exists", "out")) == \
        "out: a file stands where a folder is needed (File exists)"


def test_atomic_output_names_the_file_and_removes_what_the_writer_made(tmp_path):
    target = tmp_path / "model.ckpt"
    with pytest.raises(OSError) as failed:
        with atomic_output(str(target)) as tmp:
            open(tmp, "wb").close()
            open(os.path.splitext(tmp)[0] + ".tmp", "wb").close()   # as save_checkpoint does
            raise OSError(errno.ENOSPC, "No space left on device")
    assert failed.value.filename == str(target) and failed.value.errno == errno.ENOSPC
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("bad_location", KINDS, indirect=True)
def test_preprocess(run, bad_location, monkeypatch, capsys):
    kind, folder = bad_location
    root = run[0]
    status = run_script(monkeypatch, "preprocess", f"--in_dir={root}/librimix/Libri2Mix/wav8k/min",
                        f"--out_dir={folder}", "--preprocess_workers=1")
    assert_refused(status, error_line(capsys), kind, folder)


@pytest.mark.parametrize("bad_location", KINDS, indirect=True)
@pytest.mark.parametrize("save_wav", [0, 1])
def test_eval(run, bad_location, save_wav, monkeypatch, capsys):
    kind, folder = bad_location
    _, data_dir, config, ckpt = run
    status = run_script(monkeypatch, "eval", f"--config_path={config}", f"--ckpt_file={ckpt}",
                        f"--data_dir={data_dir}", f"--output_dir={folder}",
                        f"--save_wav={save_wav}")
    assert_refused(status, error_line(capsys), kind, folder)


@pytest.mark.parametrize("bad_location", KINDS, indirect=True)
def test_export(run, bad_location, monkeypatch, capsys):
    kind, folder = bad_location
    _, _, config, ckpt = run
    status = run_script(monkeypatch, "export", f"--config_path={config}", f"--ckpt_file={ckpt}",
                        f"--file_name={folder}/tasnet")
    out = capsys.readouterr()
    assert "exported" not in out.out
    sys.stderr.write(out.err)
    assert_refused(status, error_line(capsys), kind, folder)


@pytest.mark.parametrize("bad_location", KINDS, indirect=True)
def test_separate(run, bad_location, monkeypatch, capsys, tmp_path):
    kind, folder = bad_location
    _, _, config, ckpt = run
    wav = tmp_path / "talk.wav"
    sf.write(wav, 0.1 * np.random.default_rng(0).standard_normal(16000).astype(np.float32), 8000)
    status = run_script(monkeypatch, "separate", f"--config_path={config}",
                        f"--model_path={ckpt}", f"--input={wav}", f"--output_dir={folder}")
    assert_refused(status, error_line(capsys), kind, folder)


@pytest.mark.parametrize("bad_location", KINDS, indirect=True)
def test_convert_pytorch(bad_location, monkeypatch, capsys):
    kind, folder = bad_location
    status = run_script(monkeypatch, "convert_pytorch", f"--src={PTH}", f"--dst={folder}/c.ckpt")
    assert_refused(status, error_line(capsys), kind, folder)


@pytest.mark.slow
@pytest.mark.parametrize("bad_location", KINDS[:-1] + [pytest.param("full", marks=pytest.mark.slow)],
                         indirect=True)
def test_train(run, bad_location, monkeypatch, capsys):
    kind, folder = bad_location
    status = run_script(monkeypatch, "train", *flags(data_dir=run[1], output_dir=folder,
                                                     epochs=1))
    assert_refused(status, error_line(capsys), kind, folder)


def copy_run(run, destination):
    """A copy of the run's LibriMix and data folder whose lists name the copied WAVs."""
    root = str(run[0])
    for name in ("librimix", "data"):
        shutil.copytree(os.path.join(root, name), os.path.join(destination, name))
    for path in glob.glob(os.path.join(destination, "data", "*", "*.json")):
        with open(path, encoding="utf-8") as f:
            text = f.read()
        with open(path, "w", encoding="utf-8") as f:
            f.write(text.replace(root + os.sep, str(destination) + os.sep))
    return os.path.join(destination, "data")


def damage(data_dir, split, how):
    """Change split's data after preprocessing; returns the file damaged."""
    if how == "truncated mindrecord":
        path = os.path.join(data_dir, split, f"{split}.mindrecord")
        os.truncate(path, os.path.getsize(path) // 2)
        return path
    with open(os.path.join(data_dir, split, "s2.json"), encoding="utf-8") as f:
        path = json.load(f)[0][0]
    if how == "deleted wav":
        os.remove(path)
    else:
        with open(path, "r+b") as f:
            f.write(b"\0not a RIFF header any more")
    return path


DAMAGES = [("deleted wav", "json", "file not found"),
           ("corrupted wav", "json", "not readable audio"),
           ("truncated mindrecord", "mindrecord", "MindRecord data unreadable")]


@pytest.mark.parametrize("how,data_format,cause", DAMAGES)
def test_eval_data_changed_after_preprocessing(run, tmp_path, monkeypatch, capsys, how,
                                               data_format, cause):
    _, _, config, ckpt = run
    data_dir = copy_run(run, tmp_path / "copy")
    damaged = damage(data_dir, "test", how)
    status = run_script(monkeypatch, "eval", f"--config_path={config}", f"--ckpt_file={ckpt}",
                        f"--data_dir={data_dir}", f"--data_format={data_format}",
                        f"--output_dir={tmp_path}/out", "--save_wav=1")
    line = error_line(capsys)
    assert status == 2 and damaged in line and cause in line, line
    assert leftovers(tmp_path / "out") == []


@pytest.mark.parametrize("how,data_format,cause", DAMAGES)
def test_train_data_changed_after_preprocessing(run, tmp_path, monkeypatch, capsys, how,
                                                data_format, cause):
    data_dir = copy_run(run, tmp_path / "copy")
    damaged = damage(data_dir, "train-360", how)
    status = run_script(monkeypatch, "train", *flags(data_dir=data_dir, data_format=data_format,
                                                     output_dir=tmp_path / "out", epochs=1))
    line = error_line(capsys)
    assert status == 2 and damaged in line and cause in line, line
    assert leftovers(tmp_path / "out") == []


def test_export_refuses_a_length_shorter_than_the_kernel(run, tmp_path, monkeypatch, capsys):
    _, _, config, ckpt = run
    status = run_script(monkeypatch, "export", f"--config_path={config}", f"--ckpt_file={ckpt}",
                        f"--file_name={tmp_path}/out/m", "--input_length=2")
    out = capsys.readouterr()
    assert status == 2 and "exported" not in out.out
    assert out.err == "error: input_length: 2 samples is shorter than the encoder kernel L=4; " \
                      "expected 0 (any length) or at least 4\n"
    assert not os.path.exists(tmp_path / "out")


def test_export_publishes_only_a_checked_mindir(run, tmp_path, monkeypatch, capsys):
    _, _, config, ckpt = run
    monkeypatch.setattr("src.deploy.export.check_mindir", lambda net, path, lengths: 0.5)
    status = run_script(monkeypatch, "export", f"--config_path={config}", f"--ckpt_file={ckpt}",
                        f"--file_name={tmp_path}/out/m")
    out = capsys.readouterr()
    assert status == 2 and "exported" not in out.out and "checked" not in out.out
    assert "the reloaded MINDIR differs from the network by 0.5" in out.err
    assert os.listdir(tmp_path / "out") == []
