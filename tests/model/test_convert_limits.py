"""convert_pytorch.py on files and settings that must be refused in one line: tensors that would
take unbounded memory, --X=0, a --dst that would replace the user's files."""
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from src.model.convert import MAX_TENSOR_ELEMENTS, convert, read_torch_file
from src.model_utils.config import Config, load_config
from src.model_utils.errors import UserError
from helpers import ROOT

TORCHAUDIO = os.path.join(ROOT, "tests", "fixtures", "pytorch", "torchaudio_state_dict.pth")


def _long(n):
    """Pickle opcode LONG1 for the integer n."""
    data = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(data)]) + data


def tensor_pickle(storage_elements, size, stride):
    """The pickle torch.save writes for one float tensor over storage '0', written by hand:
    _rebuild_tensor_v2(storage, 0, size, stride, False, OrderedDict())."""
    def tuple_of(values):
        return b"(" + b"".join(_long(v) for v in values) + b"t"
    return (b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storage"
            b"ctorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpu"
            + _long(storage_elements) + b"tQ" + _long(0) + tuple_of(size) + tuple_of(stride)
            + b"\x89ccollections\nOrderedDict\n)RtR.")


def torch_zip(path, data_pkl, storage):
    """torch.save's zip layout: the pickle and the bytes of storage '0'."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        archive.writestr("archive/byteorder", "little")
        with archive.open("archive/data/0", "w", force_zip64=True) as f:
            for chunk in storage:
                f.write(chunk)
    return str(path)


def test_expanded_tensor_refused_before_allocating(tmp_path):
    # torch.zeros(1).expand(10**10): one stored float, a view of 10^10 (40 GB as a copy).
    path = torch_zip(tmp_path / "expand.pth", tensor_pickle(1, (10 ** 10,), (0,)),
                     [np.zeros(1, np.float32).tobytes()])
    assert os.path.getsize(path) < 2000
    with pytest.raises(UserError) as err:
        read_torch_file(path)
    message = str(err.value)
    assert message.startswith(f"{path}: refused: a tensor of size (10000000000,) has "
                              "10000000000 elements but its storage holds 1")
    assert "\n" not in message
    # A real view of the same storage reads: the check is on the view, not on the format.
    ok = torch_zip(tmp_path / "ok.pth", tensor_pickle(2, (2,), (1,)),
                   [np.array([1.5, -2], np.float32).tobytes()])
    np.testing.assert_array_equal(read_torch_file(ok), [1.5, -2])


def test_tensor_larger_than_a_model_refused(tmp_path):
    elements = MAX_TENSOR_ELEMENTS + 1024
    zeros = bytes(4 * 1024 * 1024)
    chunks = [zeros] * (4 * elements // len(zeros)) + [bytes(4 * elements % len(zeros))]
    path = torch_zip(tmp_path / "big.pth", tensor_pickle(elements, (elements,), (1,)), chunks)
    with pytest.raises(UserError, match=f"big.pth: refused: tensor storage 'archive/data/0' holds "
                                        f"{elements} elements, more than a Conv-TasNet holds"):
        read_torch_file(path)


def run_convert(*flags, cwd):
    return subprocess.run([sys.executable, os.path.join(ROOT, "convert_pytorch.py"), *flags],
                          capture_output=True, text=True, cwd=cwd, timeout=300,
                          env={**os.environ, "PYTHONPATH": ROOT, "GLOG_v": "3"})


def test_x_zero_is_one_line(tmp_path):
    proc = run_convert(f"--src={TORCHAUDIO}", f"--dst={tmp_path}/t.ckpt", "--X=0", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: X: expected >= 1, got 0 (command line)"]
    assert os.listdir(tmp_path) == []
    # The same from the API, with a configuration that was not checked on loading.
    cfg = Config({**load_config([]).to_dict(), "X": 0})
    with pytest.raises(UserError, match="X: expected the model's blocks per repeat"):
        convert(TORCHAUDIO, str(tmp_path / "t.ckpt"), cfg)


def test_existing_dst_or_recipe_not_replaced(tmp_path):
    recipe = tmp_path / "mine.yaml"
    recipe.write_text("# my own notes\nlr: 0.5\n")
    with pytest.raises(UserError, match=r"dst: .*mine.yaml: already there, not replaced .*"
                                        r"--overwrite=true"):
        convert(TORCHAUDIO, str(tmp_path / "mine.ckpt"), load_config(["--X=2"]))
    assert recipe.read_text() == "# my own notes\nlr: 0.5\n"
    assert sorted(os.listdir(tmp_path)) == ["mine.yaml"]
    convert(TORCHAUDIO, str(tmp_path / "new.ckpt"), load_config(["--X=2"]))
    before = (tmp_path / "new.ckpt").read_bytes()
    with pytest.raises(UserError, match=r"new.ckpt and .*new.yaml: already there"):
        convert(TORCHAUDIO, str(tmp_path / "new.ckpt"), load_config(["--X=4"]))
    assert (tmp_path / "new.ckpt").read_bytes() == before
    convert(TORCHAUDIO, str(tmp_path / "mine.ckpt"), load_config(["--X=2", "--overwrite=true"]))
    assert "X: 2" in recipe.read_text()
