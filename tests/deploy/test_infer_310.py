import csv
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import yaml
import mindspore as ms

from src.model.conv_tasnet import ConvTasNet
from src.model_utils.errors import UserError
from src.evaluation.evaluate import (RESULTS_CSV, SUMMARY_JSON, run_evaluation, score_utterance,
                                     wav_writer)
from src.deploy.output_level import match_mixture_level
from src.deploy.export import export_network
from src.deploy.infer_310 import (INPUT_DIR, PREPROCESS_DIR, RESULT_DIR, TIMING_FILE, postprocess,
                           write_310_inputs, read_manifest, run_bins_on_cpu)
from src.deploy.inference import load_model, stream_separate
from src.model_utils.config import load_config
from src.data.preparation import prepare_dataset
from helpers import TINY_NET, ROOT, config, make_tiny_librimix

# The whole module: pipelines in subprocesses, graphs compiled for export (run_tests.sh --fast
# leaves it out).
pytestmark = pytest.mark.slow

MS_DIR = os.path.dirname(ms.__file__)
TINY = TINY_NET
FIXED = 1600           # samples of the fixed-length MINDIR; the test utterances are 2400-4800


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Test data written by preprocess.py, a tiny checkpoint with its config, a dynamic MINDIR."""
    root = tmp_path_factory.mktemp("infer310")
    in_dir = make_tiny_librimix(root / "librimix", sizes={"train-360": 1, "dev": 1, "test": 3},
                                min_seconds=0.3, max_seconds=0.6)
    data_dir = str(root / "data")
    prepare_dataset(config(in_dir=in_dir, out_dir=data_dir, splits="[test]",
                               preprocess_workers=1), log=lambda *_: None)
    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_seed(5)
    net = ConvTasNet(**TINY)
    net.set_train(False)
    ms.save_checkpoint(net, str(root / "tiny.ckpt"))
    with open(root / "config.yaml", "w") as f:
        yaml.safe_dump({**TINY, "data_dir": data_dir}, f)
    # export.py in a process of its own, as a user runs it (init_device included).
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "export.py"),
                           f"--config_path={root}/config.yaml", f"--ckpt_file={root}/tiny.ckpt",
                           "--file_name=tiny"], capture_output=True, text=True, timeout=300,
                          cwd=root, env={**os.environ, "PYTHONPATH": ROOT, "GLOG_v": "3"})
    assert proc.returncode == 0, proc.stderr
    mindir = str(root / "tiny.mindir")
    exported, checked = proc.stdout.splitlines()
    assert exported == f"exported {mindir} (MINDIR, input [1, T] for any T)"
    # The export runs the graph-kernel-fused graph and the reload the plain one: equal to rounding.
    match = re.fullmatch(r"checked: the reloaded MINDIR gives the network's output at lengths "
                         r"8000, 12003 \(largest difference (\S+)\)", checked)
    assert match and float(match.group(1)) < 1e-5, checked
    return {"root": root, "data": data_dir, "config": str(root / "config.yaml"),
            "ckpt": str(root / "tiny.ckpt"), "mindir": mindir, "net": net}


def cfg_for(setup, *flags):
    return load_config([f"--config_path={setup['config']}", f"--ckpt_file={setup['ckpt']}",
                        *flags])


@pytest.fixture
def no_device_setup(monkeypatch):
    """The device of this process is set already (once per process in MindSpore)."""
    monkeypatch.setattr("src.model_utils.device.init_device", lambda cfg: None)


def run_script(setup, tmp_path, *args, **env):
    env = {**os.environ, "PYTHONPATH": ROOT, "GLOG_v": "3", "PYTHON": sys.executable,
           "CONFIG_PATH": setup["config"], "INFER_DIR": str(tmp_path / "infer"), **env}
    return subprocess.run(["bash", os.path.join(ROOT, "scripts", "run_infer_310.sh"), *args],
                          capture_output=True, text=True, env=env, timeout=400, cwd=tmp_path)


def test_cpu_pipeline_reports_the_si_snri_of_eval(setup, tmp_path):
    env = {**os.environ, "PYTHONPATH": ROOT, "GLOG_v": "3", "WAIT": "1"}
    proc = subprocess.run(["bash", os.path.join(ROOT, "scripts", "run_eval.sh"), setup["ckpt"],
                           setup["data"], setup["config"], "0", f"--output_dir={tmp_path}/eval",
                           "--eval_sdr=false"], capture_output=True, text=True, env=env,
                          timeout=400, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "test: SI-SNR" in proc.stdout and (tmp_path / "eval" / "eval_tiny.log").is_file()
    with open(tmp_path / "eval" / "eval_test" / SUMMARY_JSON) as f:
        summary = json.load(f)
    with open(tmp_path / "eval" / "eval_test" / RESULTS_CSV) as f:
        rows = [{**r, "length": int(r["length"])} for r in csv.DictReader(f)]
    assert summary["utterances"] == len(rows) == 3

    proc = run_script(setup, tmp_path, setup["mindir"], setup["data"], "y", "0",
                      DEVICE_TARGET="CPU")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    infer = tmp_path / "infer"
    reported = re.findall(r"^Average SISNR improvement: (-?[\d.]+)$", proc.stdout, re.M)
    assert len(reported) == 1
    assert abs(float(reported[0]) - summary["si_snri"]) < 0.01
    assert (infer / "acc.log").read_text().splitlines()[-1] == \
        f"Average SISNR improvement: {reported[0]}"
    for log in ("preprocess.log", "infer.log"):
        assert (infer / log).is_file()
    inputs = sorted(os.listdir(infer / PREPROCESS_DIR / INPUT_DIR))
    assert len(inputs) == 3                                      # whole utterances
    lengths = [os.path.getsize(infer / PREPROCESS_DIR / INPUT_DIR / f) // 4 for f in inputs]
    assert lengths == [r["length"] for r in rows]
    timing = (infer / RESULT_DIR / TIMING_FILE).read_text().splitlines()
    assert [line.split(",")[0] for line in timing] == [f[:-4] for f in inputs]
    with open(infer / RESULTS_CSV) as f:
        per_utt = list(csv.DictReader(f))
    assert [r["id"] for r in per_utt] == [r["id"] for r in rows]


def test_fixed_length_model_gets_padded_chunks_stitched_back(setup, tmp_path):
    mindir = export_network(setup["net"], str(tmp_path / "fixed"), "MINDIR", input_length=FIXED)
    cfg = cfg_for(setup, "--chunk_overlap=0.05", f"--infer_dir={tmp_path}")
    prep = str(tmp_path / PREPROCESS_DIR)
    manifest = write_310_inputs(cfg, mindir, prep, log=lambda *_: None)
    assert manifest["fixed_length"] == FIXED
    files = sorted(os.listdir(os.path.join(prep, INPUT_DIR)))
    assert all(os.path.getsize(os.path.join(prep, INPUT_DIR, f)) == 4 * FIXED for f in files)
    assert len(files) > 3                                         # utterances cut in chunks
    run_bins_on_cpu(mindir, os.path.join(prep, INPUT_DIR), str(tmp_path / RESULT_DIR),
                    log=lambda *_: None)
    rows, summary = postprocess(prep, str(tmp_path / RESULT_DIR),
                                on_utterance=wav_writer(str(tmp_path / "wav"), 1, 8000))

    # The same chunking in memory, with the fixed-length MINDIR run on zero-padded chunks.
    model_fn = load_model(load_config([f"--config_path={setup['config']}",
                                       f"--input_length={FIXED}"]), mindir)
    for entry, row in zip(manifest["utterances"], rows):
        mixture = np.fromfile(os.path.join(prep, entry["mixture"]), np.float32)
        refs = np.fromfile(os.path.join(prep, entry["labels"]), np.float32).reshape(2, -1)
        assert len(mixture) == entry["length"] > FIXED
        estimates = np.concatenate(list(stream_separate(model_fn, [mixture], FIXED, 400, 2,
                                                        join_tail=False)), axis=1)
        expected, reordered = score_utterance(estimates, refs, mixture, with_sdr=False)
        assert row["si_snri"] == pytest.approx(expected["si_snri"], abs=1e-4)
        if entry is manifest["utterances"][0]:      # saved in 16 bits at the mixture's level
            level = match_mixture_level(reordered, mixture)
            for c in range(2):
                path = str(tmp_path / "wav" / f"{entry['id']}_s{c + 1}.wav")
                assert sf.info(path).subtype == "PCM_16"
                np.testing.assert_allclose(sf.read(path, dtype="float32")[0], level[c],
                                           atol=1e-4)
    assert len(os.listdir(tmp_path / "wav")) == 2
    assert summary["si_snri"] == pytest.approx(np.mean([r["si_snri"] for r in rows]))


def test_pipeline_errors(setup, tmp_path):
    prep = str(tmp_path / PREPROCESS_DIR)
    cfg = cfg_for(setup)
    write_310_inputs(cfg, setup["mindir"], prep, log=lambda *_: None)
    results = str(tmp_path / RESULT_DIR)
    fixed = export_network(setup["net"], str(tmp_path / "fixed"), "MINDIR", input_length=FIXED)
    with pytest.raises(UserError, match=r"00000_000.bin: \d+ samples, but the model takes "
                                        r"\[1, 1600\] \(run the preprocess step"):
        run_bins_on_cpu(fixed, os.path.join(prep, INPUT_DIR), results, log=lambda *_: None)
    with pytest.raises(UserError, match="00000_000_0.bin: result not found; run the inference"):
        postprocess(prep, results)
    run_bins_on_cpu(setup["mindir"], os.path.join(prep, INPUT_DIR), results, log=lambda *_: None)
    np.zeros(7, np.float32).tofile(os.path.join(results, "00001_000_0.bin"))
    with pytest.raises(UserError, match="00001_000_0.bin: 7 values, expected 2 x"):
        postprocess(prep, results)
    with pytest.raises(UserError, match="manifest.json: not found; run the preprocess step"):
        read_manifest(str(tmp_path))
    os.makedirs(tmp_path / "mine")
    with pytest.raises(UserError, match="mine: exists and is not a preprocess_Result folder"):
        write_310_inputs(cfg, setup["mindir"], str(tmp_path / "mine"), log=lambda *_: None)
    assert os.listdir(tmp_path / "mine") == []


def test_eval_script_argument_errors(setup, tmp_path):
    script = os.path.join(ROOT, "scripts", "run_eval.sh")
    for args, message in ((["x.ckpt", setup["data"]], "x.ckpt: checkpoint not found"),
                          ([setup["ckpt"], "nodata"], "nodata: data folder not found"),
                          ([setup["ckpt"], setup["data"], setup["config"], "gpu0"],
                           "DEVICE_ID: expected a device index, got 'gpu0'"),
                          ([setup["ckpt"]], "Usage: bash")):
        proc = subprocess.run(["bash", script, *args], capture_output=True, text=True,
                              cwd=tmp_path)
        assert proc.returncode == 1 and message in proc.stderr, proc.stderr


@pytest.mark.parametrize("args,env,message", [
    (["{mindir}", "{data}", "y", "0"], {"ASCEND_HOME_PATH": "{tmp}/no_toolkit"},
     "no Ascend toolkit at {tmp}/no_toolkit (set ASCEND_HOME_PATH); on a host without Ascend, "
     "run the same pipeline on CPU with DEVICE_TARGET=CPU"),
    (["{mindir}", "{data}", "maybe"], {}, "NEED_PREPROCESS: expected y or n, got 'maybe'"),
    (["{tmp}/none.mindir", "{data}", "y"], {}, "{tmp}/none.mindir: MINDIR file not found"),
    (["{mindir}", "{data}", "n"], {"DEVICE_TARGET": "CPU"},
     "{tmp}/infer/preprocess_Result: no preprocessed inputs; pass NEED_PREPROCESS=y"),
    (["{mindir}", "{data}", "y", "x1"], {}, "DEVICE_ID: expected a device index, got 'x1'"),
    (["{mindir}"], {}, "Usage: bash"),
])
def test_script_argument_errors(setup, tmp_path, args, env, message):
    fill = {"mindir": setup["mindir"], "data": setup["data"], "tmp": str(tmp_path)}
    proc = run_script(setup, tmp_path, *[a.format(**fill) for a in args],
                      **{k: v.format(**fill) for k, v in env.items()})
    assert proc.returncode == 1
    assert message.format(**fill) in proc.stderr


def test_eval_resumes_and_saves_wavs(setup, tmp_path, no_device_setup):
    cfg = cfg_for(setup, f"--output_dir={tmp_path}", "--save_wav=1", "--eval_sdr=false")
    eval_dir = tmp_path / "eval_test"
    first, _ = run_evaluation(cfg, log=lambda *_: None)
    wavs = sorted(os.listdir(eval_dir / "wav"))
    assert wavs == [f"{first[0]['id']}_s1.wav", f"{first[0]['id']}_s2.wav"]
    audio, rate = sf.read(str(eval_dir / "wav" / wavs[0]))
    assert rate == 8000 and len(audio) == first[0]["length"]
    assert not os.path.exists(eval_dir / ".eval_progress.jsonl")

    # A run killed after its first utterance left a journal: its rows are taken as they are.
    journal = eval_dir / ".eval_progress.jsonl"
    ckpt = os.path.abspath(setup["ckpt"])
    key = {"ckpt_file": ckpt, "ckpt_mtime": os.path.getmtime(ckpt),
           "data_dir": os.path.abspath(setup["data"]), "test_name": "test", "eval_sdr": False,
           "chunk_samples": 0, "overlap_samples": 8000,
           "metrics": sorted(["si_snr", "sdr", "sir", "sar", "stoi"])}
    marked = {**first[0], "si_snri": 99.0}
    journal.write_text(json.dumps(key) + "\n" + json.dumps(marked) + "\n" + '{"id": "cut')
    messages = []
    rows, summary = run_evaluation(cfg, log=messages.append)
    assert messages[0] == "resuming: 1 of 3 utterances already scored"
    assert rows[0]["si_snri"] == 99.0 and rows[1:] == first[1:]
    with open(eval_dir / RESULTS_CSV) as f:
        assert [r["si_snri"] for r in csv.DictReader(f)][0] == "99.0000"
    with open(eval_dir / SUMMARY_JSON) as f:
        assert json.load(f)["si_snri"] == pytest.approx(summary["si_snri"])
    assert not os.path.exists(journal)

    # A journal of other settings (here SDR on) is not used.
    journal.write_text(json.dumps({**key, "eval_sdr": True}) + "\n" + json.dumps(marked) + "\n")
    rows, _ = run_evaluation(cfg, log=lambda *_: None)
    assert rows == first


def test_eval_errors(setup, tmp_path, no_device_setup):
    with pytest.raises(UserError, match="tiny.ckpt: made for another model configuration: .*"
                                        "parameter 'encoder.weight' has shape"):
        run_evaluation(cfg_for(setup, "--N=32", f"--output_dir={tmp_path}"))
    with pytest.raises(UserError, match="save_wav: expected .*>= 0"):
        run_evaluation(cfg_for(setup, "--save_wav=-1", f"--output_dir={tmp_path}"))
    assert os.listdir(tmp_path) == []


CPP_FLAGS = ["-std=c++17", "-Wall", "-Werror", "-D_GLIBCXX_USE_CXX11_ABI=0", f"-I{MS_DIR}",
             f"-I{MS_DIR}/include", f"-I{ROOT}/ascend310_infer"]
needs_gxx = pytest.mark.skipif(shutil.which("g++") is None, reason="no C++ compiler on this host")


@needs_gxx
@pytest.mark.parametrize("source", ["main.cc", "utils.cc"])
def test_cpp_sources_compile_against_the_wheels_headers(source, tmp_path):
    proc = subprocess.run(["g++", "-c", *CPP_FLAGS, os.path.join(ROOT, "ascend310_infer", "src",
                                                                 source),
                           "-o", str(tmp_path / "out.o")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert os.path.getsize(tmp_path / "out.o") > 0


DRIVER = r"""
#include <cstdio>
#include <fstream>
#include "inc/utils.h"
int main(int argc, char **argv) {
  std::string dir = argv[1], error;
  Options o;
  bool done;
  const char *good[] = {"main", "--mindir_path=m.mindir", "--input_path=in", "--output_path=out",
                        "--device_id=3"};
  done = ParseOptions(5, const_cast<char **>(good), &o, &error);
  std::printf("parse %d %s %s %s %d\n", done, o.mindir_path.c_str(), o.input_path.c_str(),
              o.output_path.c_str(), o.device_id);
  const char *bad[] = {"main", "--mindir_path=m", "--input_path=i", "--output_path=o",
                       "--device_id=-1"};
  Options p;
  done = ParseOptions(5, const_cast<char **>(bad), &p, &error);
  std::printf("bad %d %s\n", done, error.c_str());
  const char *missing[] = {"main", "--mindir_path=m"};
  Options q;
  done = ParseOptions(2, const_cast<char **>(missing), &q, &error);
  std::printf("missing %d %s\n", done, error.substr(0, 6).c_str());
  float values[3] = {1.5f, -2.0f, 0.25f};
  done = MakeDirs(dir + "/a/b", &error);
  std::printf("mkdir %d\n", done);
  done = WriteFileAtomic(dir + "/a/b/x_2.bin", values, sizeof(values), &error);
  std::printf("write %d\n", done);
  std::ofstream(dir + "/a/b/odd.bin") << "123456";
  std::ofstream(dir + "/a/b/note.txt") << "not an input";
  std::vector<std::string> files;
  ListBinFiles(dir + "/a/b", &files, &error);
  for (auto &f : files) std::printf("file %s\n", Stem(f).c_str());
  std::vector<float> read;
  bool ok = ReadFloatFile(dir + "/a/b/x_2.bin", &read, &error);
  std::printf("read %d %zu %g %g %g\n", ok, read.size(), read[0], read[1], read[2]);
  ok = ReadFloatFile(dir + "/a/b/odd.bin", &read, &error);
  std::printf("odd %d %s\n", ok, error.substr(error.find(':')).c_str());
  return 0;
}
"""


@needs_gxx
def test_cpp_file_helpers(tmp_path):
    driver = tmp_path / "driver.cc"
    driver.write_text(DRIVER)
    binary = tmp_path / "driver"
    proc = subprocess.run(["g++", *CPP_FLAGS, str(driver),
                           os.path.join(ROOT, "ascend310_infer", "src", "utils.cc"),
                           "-o", str(binary)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    out = subprocess.run([str(binary), str(tmp_path)], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out == ["parse 1 m.mindir in out 3",
                   "bad 0 --device_id: expected a device index >= 0, got '-1'",
                   "missing 0 usage:",
                   "mkdir 1", "write 1",
                   "file odd", "file x_2",
                   "read 1 3 1.5 -2 0.25",
                   "odd 0 : expected float32 samples, got 6 bytes"]
    assert sorted(os.listdir(tmp_path / "a" / "b")) == ["note.txt", "odd.bin", "x_2.bin"]


@pytest.mark.skipif(shutil.which("cmake") is None, reason="no cmake on this host")
def test_cmake_finds_the_headers_and_says_what_is_missing(tmp_path):
    proc = subprocess.run(["cmake", "-S", os.path.join(ROOT, "ascend310_infer"), "-B",
                           str(tmp_path / "build"), f"-DMINDSPORE_PATH={MS_DIR}"],
                          capture_output=True, text=True)
    assert proc.returncode != 0
    assert "/lib: no libmindspore.so (install MindSpore for Ascend)" in " ".join(proc.stderr.split())
    proc = subprocess.run(["cmake", "-S", os.path.join(ROOT, "ascend310_infer"), "-B",
                           str(tmp_path / "build2"), f"-DMINDSPORE_PATH={tmp_path}"],
                          capture_output=True, text=True)
    assert proc.returncode != 0
    assert "no include/api/model.h there" in " ".join(proc.stderr.split())


@pytest.mark.parametrize("damage", ["truncated bin", "corrupt manifest"])
def test_damaged_inputs_one_line_and_no_stale_score(setup, tmp_path, damage):
    infer = tmp_path / "infer"
    prep = infer / PREPROCESS_DIR
    write_310_inputs(cfg_for(setup), setup["mindir"], str(prep), log=lambda *_: None)
    (infer / "acc.log").write_text("Average SISNR improvement: 9.9\n")   # of an earlier run
    (infer / SUMMARY_JSON).write_text('{"si_snri": 9.9}\n')
    if damage == "truncated bin":
        damaged = prep / INPUT_DIR / "00001_000.bin"
        size = os.path.getsize(damaged)
        os.truncate(damaged, size - 6)
        expected = f"{damaged}: {size - 6} bytes, expected {size} "
    else:
        damaged = prep / "manifest.json"
        damaged.write_text(damaged.read_text()[:100])
        expected = f"{damaged}: not a readable manifest ("
    proc = run_script(setup, tmp_path, setup["mindir"], setup["data"], "n", "0",
                      DEVICE_TARGET="CPU")
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("error: check inputs: ") and expected in proc.stderr, proc.stderr
    assert not (infer / "acc.log").exists() and not (infer / SUMMARY_JSON).exists()
