import os
import pickle
import pickletools
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import yaml
import mindspore as ms

from src.model.checkpoint import load_network
from src.model.convert import convert, read_torch_file
from src.model_utils.errors import UserError
from src.model_utils.config import load_config
from helpers import ROOT

FIXTURES = os.path.join(ROOT, "tests", "fixtures", "pytorch")
SIZES = dict(N=32, L=8, B=16, H=32, Sc=16, P=3, X=2, R=2, n_src=2)   # make_fixtures.py


def fixture(name):
    return os.path.join(FIXTURES, name)


def torch_zip(path, data_pkl, entries=()):
    """A file in torch.save's zip layout with the given pickle and extra entries."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        archive.writestr("archive/byteorder", "little")
        for name, data in entries:
            archive.writestr(f"archive/{name}", data)
    return str(path)


@pytest.mark.parametrize("name,flags,expected", [
    ("asteroid_serialized", [], dict(norm_type="gLN", mask_nonlinear="relu", edge_pad=0)),
    ("asteroid_state_dict", ["--X=2", "--mask_nonlinear=sigmoid"],
     dict(norm_type="BN", mask_nonlinear="sigmoid", edge_pad=0)),
    ("torchaudio_state_dict", ["--X=2", "--mask_nonlinear=sigmoid"],
     dict(norm_type="gLN", mask_nonlinear="sigmoid", edge_pad=4)),
])
@pytest.mark.slow
def test_converted_model_reproduces_library_outputs(tmp_path, name, flags, expected):
    dst = str(tmp_path / f"{name}.ckpt")
    before = open(fixture(f"{name}.pth"), "rb").read()
    convert(fixture(f"{name}.pth"), dst, load_config(flags))
    assert open(fixture(f"{name}.pth"), "rb").read() == before
    with open(tmp_path / f"{name}.yaml", encoding="utf-8") as f:
        recipe = yaml.safe_load(f)
    assert recipe == {**SIZES, **expected, "causal": False, "encoder_activation": "linear",
                      "sample_rate": 8000}
    # The recipe is what eval.py/export.py/separate.py take with --config_path.
    net = load_network(load_config([f"--config_path={tmp_path}/{name}.yaml"]), dst)
    io = np.load(fixture(f"{name}_io.npz"))
    estimates = net(ms.Tensor(io["mixture"])).asnumpy()
    assert estimates.shape == io["estimates"].shape
    np.testing.assert_allclose(estimates, io["estimates"], atol=1e-4)
    assert np.abs(io["estimates"]).max() > 1.0                # not a trivially small output


def test_reader_returns_tensors_and_version_string():
    obj = read_torch_file(fixture("asteroid_serialized.pth"))
    assert obj["model_name"] == "ConvTasNet"
    assert obj["infos"]["software_versions"]["torch_version"] == "2.13.0+cpu"
    filters = obj["state_dict"]["encoder.filterbank._filters"]
    assert isinstance(filters, np.ndarray) and filters.shape == (32, 1, 8)
    assert filters.dtype == np.float32 and filters.std() > 0


def test_numpy_numbers_in_infos_are_read(tmp_path):
    obj = {"final_metrics": {"si_sdr": np.float64(14.76), "n": np.int32(3000)}, "name": "x"}
    path = torch_zip(tmp_path / "infos.pth", pickle.dumps(obj, protocol=2))
    back = read_torch_file(path)
    assert back == obj and isinstance(back["final_metrics"]["si_sdr"], np.float64)


class _RunsCommand:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@pytest.mark.parametrize("nested", [False, True])
def test_unexpected_global_refused_and_nothing_executed(tmp_path, nested):
    marker = tmp_path / "pwned"
    payload = _RunsCommand(f"touch {marker}")
    obj = {"state_dict": {"encoder.weight": payload}, "model_args": {}} if nested else payload
    data = pickle.dumps(obj, protocol=2)
    path = torch_zip(tmp_path / "evil.pth", data)
    with pytest.raises(UserError) as err:
        convert(path, str(tmp_path / "out.ckpt"), load_config([]))
    message = str(err.value)
    assert "evil.pth" in message and f"'{os.system.__module__}.system'" in message
    assert "\n" not in message
    assert not marker.exists()
    assert not (tmp_path / "out.ckpt").exists() and not (tmp_path / "out.yaml").exists()
    pickle.loads(data)                       # the same bytes, unpickled normally, do run it
    assert marker.exists()


@pytest.mark.parametrize("name", ["builtins eval", "subprocess Popen", "torch load",
                                  "numpy.core.multiarray _reconstruct"])
def test_other_globals_refused(tmp_path, name):
    module, attr = name.split()
    data = b"\x80\x02c" + f"{module}\n{attr}\n".encode() + b")R."   # GLOBAL, empty tuple, REDUCE
    with pytest.raises(UserError, match=f"'{module}.{attr}'"):
        read_torch_file(torch_zip(tmp_path / "x.pth", data))


def test_unreadable_files(tmp_path):
    with pytest.raises(UserError, match="missing.pth: file not found"):
        read_torch_file(str(tmp_path / "missing.pth"))
    (tmp_path / "legacy.pth").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(UserError, match="legacy.pth: not a PyTorch zip file"):
        read_torch_file(str(tmp_path / "legacy.pth"))
    with zipfile.ZipFile(tmp_path / "empty.pth", "w") as archive:
        archive.writestr("archive/version", "3")
    with pytest.raises(UserError, match="expected one data.pkl"):
        read_torch_file(str(tmp_path / "empty.pth"))
    # A tensor whose strides reach past its storage (4 floats) is refused, not read out of bounds.
    data = (b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storage"
            b"ctorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x04tQ"
            b"K\x00K\x03K\x03\x86K\x03K\x01\x86\x89ccollections\nOrderedDict\n)RtR.")
    entries = [("data/0", np.arange(4, dtype=np.float32).tobytes())]
    with pytest.raises(UserError, match="reaches past its storage"):
        read_torch_file(torch_zip(tmp_path / "oob.pth", data, entries))
    # The same tensor of shape [2, 2] reads.
    data_ok = data.replace(b"K\x03K\x03\x86K\x03K\x01\x86", b"K\x02K\x02\x86K\x02K\x01\x86")
    tensor = read_torch_file(torch_zip(tmp_path / "ok.pth", data_ok, entries))
    np.testing.assert_array_equal(tensor, [[0, 1], [2, 3]])
    with pytest.raises(UserError, match="data/0' missing"):
        read_torch_file(torch_zip(tmp_path / "nostorage.pth", data_ok))


def with_model_arg(src, dst, key, value):
    """A copy of a torch zip whose pickled model_args[key] (a small int) is set to `value`."""
    with zipfile.ZipFile(src) as archive:
        entries = {n: archive.read(n) for n in archive.namelist()}
    name = next(n for n in entries if n.endswith("data.pkl"))
    data = bytearray(entries[name])
    ops = list(pickletools.genops(bytes(data)))
    at = next(i for i, (op, arg, _) in enumerate(ops) if arg == key)
    op, arg, pos = next(o for o in ops[at + 1:] if o[0].name == "BININT1")
    data[pos + 1] = value
    entries[name] = bytes(data)
    with zipfile.ZipFile(dst, "w") as archive:
        for n, content in entries.items():
            archive.writestr(n, content)
    return str(dst)


def test_shapes_not_matching_the_recorded_configuration(tmp_path):
    path = with_model_arg(fixture("asteroid_serialized.pth"), tmp_path / "edited.pth",
                          "bn_chan", 24)
    assert read_torch_file(path)["model_args"]["bn_chan"] == 24
    with pytest.raises(UserError) as err:
        convert(path, str(tmp_path / "out.ckpt"), load_config([]))
    message = str(err.value)
    assert "edited.pth" in message and "masker.bottleneck.1.weight" in message
    assert "(16, 32, 1)" in message and "(24, 32, 1, 1)" in message
    assert not (tmp_path / "out.ckpt").exists()


def test_settings_a_state_dict_does_not_record(tmp_path):
    with pytest.raises(UserError, match="4 convolutional blocks cannot be 3 per repeat"):
        convert(fixture("torchaudio_state_dict.pth"), str(tmp_path / "t.ckpt"),
                load_config(["--X=3"]))
    kind, settings, assumed, _ = convert(fixture("torchaudio_state_dict.pth"),
                                         str(tmp_path / "t.ckpt"), load_config(["--X=4"]))
    assert kind == "torchaudio" and (settings["X"], settings["R"]) == (4, 1)
    assert set(assumed) == {"X", "mask_nonlinear", "sample_rate"}
    _, _, assumed, _ = convert(fixture("asteroid_serialized.pth"), str(tmp_path / "a.ckpt"),
                               load_config(["--X=4"]))
    assert assumed == ()                                    # everything read from model_args
    with pytest.raises(UserError, match="dst: expected a file name ending in .ckpt"):
        convert(fixture("asteroid_serialized.pth"), str(tmp_path / "a.pt"), load_config([]))


def test_unsupported_asteroid_settings_named(tmp_path):
    path = with_model_arg(fixture("asteroid_serialized.pth"), tmp_path / "stride.pth", "stride", 2)
    with pytest.raises(UserError, match="stride=2: expected kernel_size / 2"):
        convert(path, str(tmp_path / "out.ckpt"), load_config([]))


@pytest.mark.slow
def test_cli(tmp_path):
    env = {**os.environ, "PYTHONPATH": ROOT, "GLOG_v": "3"}
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "convert_pytorch.py"),
                           f"--src={fixture('torchaudio_state_dict.pth')}",
                           f"--dst={tmp_path}/ta.ckpt", "--X=2"],
                          capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "torchaudio Conv-TasNet" in proc.stdout and "edge_pad=4" in proc.stdout
    assert "--X=2" in proc.stdout                            # named as an assumption
    assert f"--config_path {tmp_path}/ta.yaml --ckpt_file {tmp_path}/ta.ckpt" in proc.stdout
    assert os.path.isfile(tmp_path / "ta.ckpt") and os.path.isfile(tmp_path / "ta.yaml")
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp")]
