import csv
import json
import os

import numpy as np
import pytest
import mindspore as ms

from src.model.conv_tasnet import ConvTasNet
from src.model_utils.errors import UserError
from src.evaluation.evaluate import (evaluate, sdr_improvement, summarize, summary_line,
                          write_results)
from src.deploy.inference import dynamic_model_function
from src.evaluation.metrics import si_snr
from helpers import TINY_NET, make_dataset, speech_like

TINY = TINY_NET


def bss_eval_v3_sdr(estimate, reference, taps=512):
    """SDR of BSS Eval v3 for one source: the estimate (zero-padded by taps-1) is projected onto
    the delayed copies 0..taps-1 of its reference, by least squares; SDR = |projection|^2 over
    |estimate - projection|^2."""
    T = len(reference)
    basis = np.zeros((T + taps - 1, taps))
    for k in range(taps):
        basis[k:k + T, k] = reference
    target = np.concatenate([estimate, np.zeros(taps - 1)])
    coef, *_ = np.linalg.lstsq(basis, target, rcond=None)
    projection = basis @ coef
    return 10 * np.log10(np.sum(projection ** 2) / np.sum((target - projection) ** 2))


def test_sdr_matches_least_squares_projection():
    rng = np.random.default_rng(3)
    T = 1200
    refs = np.stack([speech_like(rng, T), speech_like(rng, T)]).astype(np.float64)
    # A filtered own source (allowed distortion), some leakage and some noise.
    ests = np.stack([np.convolve(refs[0], [0.9, 0.3, -0.1])[:T] + 0.2 * refs[1],
                     0.7 * refs[1] + 0.15 * refs[0] + 0.05 * rng.standard_normal(T)])
    mixture = refs.sum(axis=0)
    expected = [bss_eval_v3_sdr(ests[j], refs[j]) for j in range(2)]
    baseline = [bss_eval_v3_sdr(mixture, refs[j]) for j in range(2)]
    sdr, sdri = sdr_improvement(ests[::-1], refs, mixture)  # the order is found by bss_eval
    assert sdr == pytest.approx(np.mean(expected), abs=1e-3)
    assert sdri == pytest.approx(np.mean(expected) - np.mean(baseline), abs=1e-3)


def test_sdr_of_scaled_references_is_unbounded():
    # No distortion, interference or artifact: the error of the projection is round-off only.
    rng = np.random.default_rng(5)
    refs = np.stack([speech_like(rng, 1024), speech_like(rng, 1024)]).astype(np.float64)
    sdr, sdri = sdr_improvement(np.stack([2.0 * refs[0], -0.5 * refs[1]]), refs, refs.sum(axis=0))
    assert sdr > 100 and sdri > 100


class Oracle:
    """A model_fn that returns the references of the mixture it gets, scaled and swapped."""

    def __init__(self, sources, mixture):
        self.by_key = {mixture[i].tobytes(): sources[i] for i in range(len(mixture))}
        self.lengths = []

    def __call__(self, chunk):
        self.lengths.append(chunk.shape[-1])
        for key, refs in self.by_key.items():
            full = np.frombuffer(key, np.float32)
            n = chunk.shape[-1]
            if np.array_equal(full[:n], chunk[0]):
                out = np.stack([3.0 * refs[1, :n], -0.5 * refs[0, :n]])
                noise = 0.01 * np.sin(np.arange(n) * 0.37)
                return (out + noise)[None].astype(np.float32)
        raise AssertionError("unexpected input")


def test_evaluate_trims_padding_reorders_and_averages():
    lengths = [900, 1300, 700]
    data, sources, mixture = make_dataset(lengths, batch=2)
    oracle = Oracle(sources, np.stack([m for m in mixture]))
    ids = ["a", "b", "c"]
    seen = {}
    rows, summary = evaluate(oracle, data, ids, n_src=2, with_sdr=True,
                             on_utterance=lambda i, u, m, e: seen.update({u: (i, m, e)}))
    assert [r["id"] for r in rows] == ids
    assert [r["length"] for r in rows] == lengths
    assert sorted(oracle.lengths) == sorted(lengths)   # each utterance alone, without padding
    for utt, n, (index, mix, est), src in zip(ids, lengths, (seen[u] for u in ids), sources):
        assert mix.shape == (n,)
        # Put back into the references' order: the model's second output goes first.
        noise = 0.01 * np.sin(np.arange(n) * 0.37)
        np.testing.assert_allclose(est, np.stack([-0.5 * src[0, :n], 3.0 * src[1, :n]]) + noise,
                                   atol=1e-5)
        row = rows[index]
        expected = si_snr(est, src[:, :n]).mean()
        assert expected > 20
        assert row["si_snr"] == pytest.approx(expected, abs=1e-4)
        baseline = si_snr(np.stack([mix, mix]), src[:, :n]).mean()
        assert row["si_snri"] == pytest.approx(expected - baseline, abs=1e-4)
        assert row["sdr"] > 20 and row["sdri"] > 20
    for key in ("si_snr", "si_snri", "sdr", "sdri"):
        assert summary[key] == pytest.approx(np.mean([r[key] for r in rows]))
    assert summary["utterances"] == 3 and summary["samples"] == sum(lengths)
    assert "SDRi" in summary_line(summary)


def test_evaluate_without_sdr_and_in_chunks():
    data, sources, mixture = make_dataset([5000])
    calls = []

    def linear(chunk):
        calls.append(chunk.shape[-1])
        return np.stack([0.6 * chunk, 0.4 * chunk], axis=1)

    rows, summary = evaluate(linear, data, with_sdr=False, chunk_samples=1600,
                             overlap_samples=400)
    assert len(calls) > 1 and max(calls) < 5000
    assert rows[0]["sdr"] is None and summary["sdri"] is None
    # Every chunk gives gains 0.6/0.4 of the mixture, so the stitched result is exactly that.
    n = 5000
    expected = si_snr(np.stack([mixture[0], mixture[0]]), sources[0]).mean()
    assert rows[0]["si_snr"] == pytest.approx(expected, abs=1e-4)
    assert rows[0]["si_snri"] == pytest.approx(0.0, abs=1e-4)
    assert rows[0]["id"] == "0" and rows[0]["length"] == n


def test_cell_scored_at_each_length_as_alone():
    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_seed(1)
    net = ConvTasNet(**TINY)
    net.set_train(False)
    data, sources, mixture = make_dataset([301, 450], batch=2, seed=4)
    rows, _ = evaluate(net, data, ["x", "y"], n_src=2, with_sdr=False)
    for row, src, mix, n in zip(rows, sources, mixture, (301, 450)):
        est = net(ms.Tensor(mix[None, :n])).asnumpy()[0]
        perm_scores = [si_snr(est[list(p)], src[:, :n]).mean() for p in ((0, 1), (1, 0))]
        assert row["si_snr"] == pytest.approx(max(perm_scores), abs=1e-4)


def test_dynamic_model_function_matches_the_cell_and_leaves_it_alone():
    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_seed(2)
    net = ConvTasNet(**TINY)
    net.set_train(False)
    names = [name for name, _ in net.parameters_and_names()]
    model_fn = dynamic_model_function(net)
    for n in (97, 256):
        x = np.random.default_rng(n).standard_normal((1, n)).astype(np.float32)
        np.testing.assert_array_equal(model_fn(x), net(ms.Tensor(x)).asnumpy())
    assert net.get_inputs() is None
    assert [name for name, _ in net.parameters_and_names()] == names
    assert [p.name for p in net.get_parameters()] == names


def test_training_network_is_scored_in_inference_mode_and_put_back():
    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_seed(3)
    net = ConvTasNet(**TINY, norm_type="BN")   # BN: train and inference modes differ
    data, sources, mixture = make_dataset([300], seed=6)
    net.set_train(True)
    rows, _ = evaluate(net, data, with_sdr=False)
    assert net.training
    net.set_train(False)
    again, _ = evaluate(net, data, with_sdr=False)
    assert not net.training
    assert rows[0]["si_snr"] == pytest.approx(again[0]["si_snr"], abs=1e-5)


def test_errors():
    data, sources, mixture = make_dataset([400], C=3)
    with pytest.raises(UserError, match="n_src: the model separates 2 sources but utterance u1 has 3"):
        evaluate(lambda x: np.stack([x, x], axis=1), data, ["u1"], n_src=2)
    data, _, _ = make_dataset([400])
    with pytest.raises(UserError, match="utterance 0: SDR is undefined.*--eval_sdr=false"):
        evaluate(lambda x: np.stack([x, 0 * x], axis=1), data, with_sdr=True)
    with pytest.raises(UserError, match="the evaluation set is empty"):
        summarize([])


def test_write_results(tmp_path):
    rows = [{"id": "a", "length": 10, "si_snr": 1.23456, "si_snri": 2.0, "sdr": None, "sdri": None},
            {"id": "b", "length": 20, "si_snr": 3.0, "si_snri": 4.0, "sdr": None, "sdri": None}]
    summary = {"utterances": 2, "samples": 30, "si_snr": 2.11728, "si_snri": 3.0, "sdr": None,
               "sdri": None}
    csv_path, json_path = write_results(str(tmp_path / "out"), rows, summary, {"ckpt_file": "m"})
    with open(csv_path, newline="") as f:
        read = list(csv.DictReader(f))
    assert read[0] == {"id": "a", "length": "10", "si_snr": "1.2346", "si_snri": "2.0000",
                       "sdr": "", "sdri": ""}
    assert len(read) == 2
    with open(json_path) as f:
        assert json.load(f) == {**summary, "ckpt_file": "m"}
    assert sorted(os.listdir(tmp_path / "out")) == ["eval_results.csv", "eval_summary.json"]
