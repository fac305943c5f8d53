"""ONNX export (src/deploy/onnx_export.py) and onnxruntime inference (src/deploy/onnx_runtime.py)."""
import importlib
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import yaml
import mindspore as ms
import onnxruntime as ort

from src.model.conv_tasnet import ConvTasNet
from src.model_utils.config import load_config
from src.model_utils.errors import UserError, run_main
from src.deploy.onnx_export import check_onnx, export_onnx
from src.deploy.onnx_runtime import load_onnx
from src.deploy.separation import run_separation
from helpers import ROOT, TINY_NET

TINY = TINY_NET
SETTINGS = dict(sample_rate=8000, n_src=2, L=4, separate_chunk_seconds=0.5, chunk_overlap=0.1)

VARIANTS = {
    "gLN": {},
    "cLN-causal": dict(norm_type="cLN", causal=True),
    "cLN": dict(norm_type="cLN"),
    "BN": dict(norm_type="BN"),
    "C3-softmax": dict(C=3, mask_nonlinear="softmax"),
    "no-skip": dict(Sc=0),
    "sigmoid": dict(mask_nonlinear="sigmoid"),
    "encoder-relu-edge-pad": dict(encoder_activation="relu", edge_pad=2),
    "C3-BN-no-skip-softmax": dict(C=3, norm_type="BN", Sc=0, mask_nonlinear="softmax"),
}


def random_net(seed=0, **kwargs):
    """A tiny ConvTasNet in inference mode with every parameter randomised (norm gains and BN
    statistics included, which start as ones and zeros and would hide a wrong formula)."""
    ms.set_seed(seed)
    net = ConvTasNet(**{**TINY, **kwargs})
    net.set_train(False)
    rng = np.random.default_rng(seed)
    for name, param in net.parameters_and_names():
        noise = 0.3 * rng.standard_normal(param.shape).astype(np.float32)
        value = np.abs(noise) + 0.5 if "moving_variance" in name else param.asnumpy() + noise
        param.set_data(ms.Tensor(value))
    return net


def relative_difference(got, expected):
    return float(np.abs(got - expected).max() / np.abs(expected).max())


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_onnxruntime_gives_the_network_output(tmp_path, variant):
    net = random_net(**VARIANTS[variant])
    path, worst, lengths = export_onnx(net, str(tmp_path / "m.onnx"), SETTINGS,
                                       lengths=(800, 1203))
    assert worst < 1e-4 and lengths == (800, 1203)
    assert os.listdir(tmp_path) == ["m.onnx"]                   # no temporary left behind
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    for batch, length in ((2, 3), (3, 37)):           # shorter than L: one frame; a batch
        x = (0.1 * rng.standard_normal((batch, length))).astype(np.float32)
        got = session.run(None, {"mixture": x})[0]
        expected = net(ms.Tensor(x)).asnumpy()
        assert got.shape == expected.shape == (batch, net.C, length)
        assert relative_difference(got, expected) < 1e-4


@pytest.mark.parametrize("engine", ["matmul", "kernels"])
@pytest.mark.parametrize("variant", ["gLN", "cLN-causal", "BN"])
def test_onnx_of_the_cpu_engine_equals_the_plain_network(tmp_path, variant, engine):
    # The graph is built from the weights: the CPU engine (same parameters) gives the same model,
    # checked against the engine's own output.
    from src.model.cpu_engine import CpuConvTasNet
    plain = random_net(**VARIANTS[variant])
    net = CpuConvTasNet(**{**TINY, **VARIANTS[variant]}, kernels=engine == "kernels")
    ms.load_param_into_net(net, {name: p for name, p in plain.parameters_and_names()})
    net.set_train(False)
    path, worst, _ = export_onnx(net, str(tmp_path / "m.onnx"), SETTINGS, lengths=(800,))
    assert worst < 1e-4
    x = (0.1 * np.random.default_rng(2).standard_normal((1, 1203))).astype(np.float32)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = session.run(None, {"mixture": x})[0]
    assert relative_difference(got, plain(ms.Tensor(x)).asnumpy()) < 1e-4


def test_the_check_sees_another_network_and_nothing_is_published(tmp_path):
    net = random_net()
    path, _, _ = export_onnx(net, str(tmp_path / "m.onnx"), SETTINGS, lengths=(400,))
    assert check_onnx(net, path, [400]) < 1e-5
    assert check_onnx(random_net(seed=5), path, [400]) > 1e-2
    with pytest.raises(RuntimeError, match="differs from the network"):
        export_onnx(net, str(tmp_path / "strict.onnx"), SETTINGS, lengths=(400,), tolerance=-1)
    assert os.listdir(tmp_path) == ["m.onnx"]


def test_fixed_input_length_pads_shorter_chunks(tmp_path):
    net = random_net()
    path, _, lengths = export_onnx(net, str(tmp_path / "f.onnx"), SETTINGS, input_length=256)
    assert lengths == (256,)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == ["batch", 256]
    model_fn = load_onnx(path)
    assert model_fn.max_samples == 256 and model_fn.settings == SETTINGS
    x = (0.1 * np.random.default_rng(2).standard_normal((1, 200))).astype(np.float32)
    padded = np.pad(x, ((0, 0), (0, 56)))
    expected = net(ms.Tensor(padded)).asnumpy()[..., :200]
    assert relative_difference(model_fn(x), expected) < 1e-4
    with pytest.raises(UserError, match="f.onnx: the model takes 256 samples, got 300"):
        model_fn(np.zeros((1, 300), np.float32))


def test_unreadable_or_foreign_onnx(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x94not a model")
    with pytest.raises(UserError, match="bad.onnx: not a readable ONNX model"):
        load_onnx(str(bad))
    with pytest.raises(UserError, match="none.onnx: ONNX model not found"):
        load_onnx(str(tmp_path / "none.onnx"))
    from onnx import TensorProto, helper
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    foreign = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    foreign.ir_version = 10
    (tmp_path / "foreign.onnx").write_bytes(foreign.SerializeToString())
    with pytest.raises(UserError, match="foreign.onnx: not a Conv-TasNet ONNX model"):
        load_onnx(str(tmp_path / "foreign.onnx"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny checkpoint, its config, a 2.3-s mixture at the model's rate and one at 11025 Hz."""
    folder = tmp_path_factory.mktemp("trained")
    net = random_net(seed=3, norm_type="BN")
    ms.save_checkpoint(net, str(folder / "tiny.ckpt"))
    with open(folder / "config.yaml", "w") as f:
        yaml.safe_dump({**TINY, "norm_type": "BN", "separate_chunk_seconds": 0.5,
                        "chunk_overlap": 0.1}, f)
    rng = np.random.default_rng(4)
    sf.write(str(folder / "mix.wav"), 0.1 * rng.standard_normal(18403), 8000, subtype="FLOAT")
    sf.write(str(folder / "mix44.wav"), 0.1 * rng.standard_normal((20000, 2)), 11025,
             subtype="FLOAT")
    return folder


def run_export(monkeypatch, *flags):
    """export.py's main in this process (device already set up); returns its exit status."""
    monkeypatch.setattr(sys, "argv", ["export.py", *flags])
    monkeypatch.setattr("src.model_utils.device.init_device", lambda cfg: None)
    try:
        run_main(importlib.import_module("export").main)
    except SystemExit as exit_:
        return exit_.code
    return 0


@pytest.fixture(scope="module")
def exported(trained):
    """export.py --file_format=ONNX of the tiny checkpoint; (path, printed output)."""
    monkeypatch = pytest.MonkeyPatch()
    import io
    import contextlib
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = run_export(monkeypatch, f"--config_path={trained}/config.yaml",
                            f"--ckpt_file={trained}/tiny.ckpt", "--file_format=ONNX",
                            f"--file_name={trained}/out/tasnet")
    monkeypatch.undo()
    assert status == 0
    return str(trained / "out" / "tasnet.onnx"), out.getvalue()


def test_export_cli_prints_the_check(exported):
    path, out = exported
    assert f"exported {path} (ONNX, input [batch, T] for any batch and T)" in out
    assert "checked: onnx.checker accepts it; onnxruntime gives the network's output at " \
           "lengths 8000, 12003 (largest difference" in out
    assert os.listdir(os.path.dirname(path)) == ["tasnet.onnx"]


def separate_with(trained, model_path, output_dir, raw=True):
    """Separate with separate.py's code; raw: the network's own float output (no level matching)."""
    level = ["--output_scale=raw", "--output_format=float32"] if raw else []
    cfg = load_config([f"--config_path={trained}/config.yaml", f"--model_path={model_path}",
                       f"--input={trained}", f"--output_dir={output_dir}", *level])
    return sorted(os.path.basename(p) for p in run_separation(cfg, log=lambda line: None))


@pytest.mark.slow
def test_separate_onnx_equals_checkpoint(trained, exported, tmp_path):
    written = separate_with(trained, f"{trained}/tiny.ckpt", tmp_path / "ckpt")
    assert separate_with(trained, exported[0], tmp_path / "onnx") == written
    assert written == ["mix44_s1.wav", "mix44_s2.wav", "mix_s1.wav", "mix_s2.wav"]
    for name in written:
        expected, rate = sf.read(str(tmp_path / "ckpt" / name))
        got, got_rate = sf.read(str(tmp_path / "onnx" / name))
        assert got_rate == rate and got.shape == expected.shape
        assert relative_difference(got, expected) < 1e-4


# Run as a fresh process in which MindSpore, the onnx package, PyYAML and scipy cannot be
# imported: separating with an ONNX model must not need them.
WITHOUT_MINDSPORE = """
import runpy, sys
for name in ("mindspore", "onnx", "yaml", "scipy", "soxr"):
    sys.modules[name] = None
sys.argv = ["separate_onnx.py", *sys.argv[1:]]
runpy.run_path("separate_onnx.py", run_name="__main__")
assert not any(m.startswith(("mindspore", "yaml", "scipy")) for m in sys.modules
               if sys.modules[m] is not None)
"""


def test_separation_needs_no_mindspore(trained, exported, tmp_path):
    reference = tmp_path / "reference"
    separate_with(trained, exported[0], reference, raw=False)
    result = subprocess.run([sys.executable, "-c", WITHOUT_MINDSPORE, exported[0],
                             str(trained / "mix.wav"), f"--output_dir={tmp_path / 'light'}"],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    for name in ("mix_s1.wav", "mix_s2.wav"):
        np.testing.assert_array_equal(sf.read(str(tmp_path / "light" / name))[0],
                                      sf.read(str(reference / name))[0])
    # Resampling is the only use of soxr: an input at another rate says what is missing.
    result = subprocess.run([sys.executable, "-c", WITHOUT_MINDSPORE, exported[0],
                             str(trained / "mix44.wav"), f"--output_dir={tmp_path / 'light'}"],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "mix44.wav: resampling from 11025 to the model's 8000 Hz needs the soxr package" \
        in result.stdout


def write_training_split(folder, count=6, rate=8000):
    """A preprocessed split's mix.json (what calibration reads) over speech-like WAVs."""
    import json
    rng = np.random.default_rng(6)
    entries = []
    for i in range(count):
        t = np.arange(rate) / rate
        signal = (0.1 * np.sin(2 * np.pi * (150 + 40 * i) * t * (1 + 0.2 * t))
                  + 0.02 * rng.standard_normal(rate)).astype(np.float32)
        path = str(folder / f"m{i}.wav")
        sf.write(path, signal, rate, subtype="FLOAT")
        entries.append([path, rate])
    (folder / "train-360").mkdir()
    (folder / "train-360" / "mix.json").write_text(json.dumps(entries))
    return str(folder)


@pytest.mark.parametrize("scheme", ["dynamic", "static", "full"])
def test_quantized_models_run_close_to_float(tmp_path, scheme):
    from src.deploy.onnx_quantize import quantize_onnx, training_mixtures

    net = random_net(norm_type="gLN")
    float_path, _, _ = export_onnx(net, str(tmp_path / "f.onnx"), SETTINGS, lengths=(400,))
    data_dir = write_training_split(tmp_path)
    mixtures = training_mixtures(data_dir, "train-360", 4, 0.5, 8000)
    assert len(mixtures) == 4 and all(m.shape == (4000,) for m in mixtures)
    out = quantize_onnx(float_path, str(tmp_path / "q.onnx"), scheme, mixtures)
    import onnx
    model = onnx.load(out)
    ops = {n.op_type for n in model.graph.node}
    assert ("DynamicQuantizeLinear" in ops) if scheme == "dynamic" else ("QuantizeLinear" in ops)
    int8_weights = {i.name for i in model.graph.initializer
                    if i.data_type == onnx.TensorProto.INT8 and "conv1x1.weight" in i.name
                    and len(i.dims) == 2}                     # the weights, not zero points
    assert len(int8_weights) == TINY["X"] * TINY["R"]        # every block's first 1x1 conv
    # The full scheme also quantizes the depthwise convolutions; the norms stay float in all.
    int8_depthwise = {i.name for i in model.graph.initializer
                      if i.data_type == onnx.TensorProto.INT8 and "dconv.weight" in i.name
                      and len(i.dims) == 3}
    assert len(int8_depthwise) == (TINY["X"] * TINY["R"] if scheme == "full" else 0)
    assert "LayerNormalization" in ops
    float_fn, int8_fn = load_onnx(float_path), load_onnx(out)
    assert int8_fn.settings == SETTINGS                     # consumers read the same settings
    x = mixtures[0][None]
    reference, got = float_fn(x), int8_fn(x)
    snr = 10 * np.log10((reference ** 2).sum() / ((got - reference) ** 2).sum())
    assert 5 < snr < 80                                       # quantized, and still close
    # Kept in float: the encoder's weights stay a float32 initializer.
    kept = quantize_onnx(float_path, str(tmp_path / "k.onnx"), scheme, mixtures,
                         keep_float=["encoder"])

    def float_encoder(m):
        return any(i.name.startswith("encoder.weight") and i.data_type == onnx.TensorProto.FLOAT
                   and len(i.dims) == 2 for i in m.graph.initializer)
    assert float_encoder(onnx.load(kept)) and not float_encoder(model)


def test_export_cli_quantizes(trained, tmp_path, monkeypatch, capsys):
    data_dir = write_training_split(tmp_path)
    status = run_export(monkeypatch, f"--config_path={trained}/config.yaml",
                        f"--ckpt_file={trained}/tiny.ckpt", "--file_format=ONNX",
                        "--quantize=static", "--calibration_mixtures=4", "--segment=0.5",
                        f"--data_dir={data_dir}", f"--file_name={tmp_path}/out/m")
    out = capsys.readouterr().out
    assert status == 0, out
    assert f"quantized {tmp_path}/out/m_int8_static.onnx (static;" in out
    assert "checked: its output against the float model's on 2 training mixtures: SNR" in out
    assert sorted(os.listdir(tmp_path / "out")) == ["m.onnx", "m_int8_static.onnx"]
    status = run_export(monkeypatch, f"--config_path={trained}/config.yaml",
                        f"--ckpt_file={trained}/tiny.ckpt", "--file_format=ONNX",
                        "--quantize=static", f"--data_dir={tmp_path}/none",
                        f"--file_name={tmp_path}/out2/m")
    err = capsys.readouterr().err
    assert status == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert "train-360/mix.json: not found; calibration reads the training split" in err


def test_eval_of_onnx_model_equals_checkpoint(tmp_path, monkeypatch):
    from src.evaluation.evaluate import run_evaluation
    from helpers import TINY_MODEL, config, make_data_dir

    monkeypatch.setattr("src.model_utils.device.init_device", lambda cfg: None)  # set already
    data_dir = make_data_dir(str(tmp_path))
    net = random_net(seed=2, **{**TINY_MODEL, "norm_type": "BN"})
    ms.save_checkpoint(net, str(tmp_path / "m.ckpt"))
    onnx_path, _, _ = export_onnx(net, str(tmp_path / "m.onnx"),
                                  {**SETTINGS, "L": TINY_MODEL["L"]}, lengths=(400,))
    common = dict(TINY_MODEL, norm_type="BN", data_dir=data_dir, test_name="dev",
                  eval_sdr="false")
    summaries = []
    for model in ("m.ckpt", "m.onnx"):
        cfg = config(ckpt_file=str(tmp_path / model), output_dir=str(tmp_path / model[2:]),
                     **common)
        summaries.append(run_evaluation(cfg, log=lambda line: None)[1])
    assert summaries[1]["utterances"] == summaries[0]["utterances"] == 2
    assert abs(summaries[1]["si_snri"] - summaries[0]["si_snri"]) < 1e-3
    cfg = config(ckpt_file=onnx_path, output_dir=str(tmp_path / "x"), **{**common, "L": 8})
    with pytest.raises(UserError, match="L: .*m.onnx was exported with L = 4, the "
                                        "configuration has 8"):
        run_evaluation(cfg, log=lambda line: None)
