"""This project's training against Asteroid's on the same real-speech mixtures, several seeds each.

Builds (once) a mini LibriMix of real speech with benchmarks/make_minilibrimix.py, speakers disjoint
between train-360, dev and test, and preprocesses it; then trains, for every seed, each arm for the
same number of epochs (so the same number of steps), and scores the last weights on the whole test
mixtures (SI-SNRi, SDRi, with the project's scoring: src/evaluation/evaluate.py):
    asteroid      Asteroid's ConvTasNet, PITLossWrapper(pairwise_neg_sisdr), torch.optim.Adam,
                  clip_grad_norm_, random crops of the same preprocessed mixtures (run by
                  --torch_python, an interpreter with torch and asteroid)
    mindspore     train.py on the stored mixtures
    mindspore_dm  train.py with dynamic mixing and speed perturbation (--dm_flags)
    mindspore_dm_plain  train.py with dynamic mixing alone (no speed perturbation): separates the
                  two parts of mindspore_dm
    mindspore_json  train.py reading the WAVs through the JSON lists instead of MindRecord
    mindspore_replay  train.py's loop and training step from the asteroid arm's initial weights
                  on the asteroid arm's batches (same seed): separates the training step from
                  the initialisation and the data pipeline
    mindspore_replay_msinit  the same from this project's initial weights (of the seed): separates
                  the initialisation from the data pipeline
    mindspore_replay_crops  as mindspore_replay_msinit, with train.py's crops in Asteroid's order
    mindspore_replay_order  as mindspore_replay_msinit, with Asteroid's crops in train.py's order
Both frameworks take the model, crop length, batch, learning rate, clipping and weight decay from
the same configuration (--config_path, default configs/demo_cpu.yaml); no LR halving, no early
stop. Every run appends one record to --results (JSON) as soon as it is scored, so a stopped
benchmark resumes with the runs it has not done (a run stopped mid-way resumes from its last
epoch); --png gets every run's training-loss and validation curves. Scores are SI-SNRi and SDRi
(BSS Eval). When --test_mixtures changes, the test split is rebuilt with that many mixtures of the
same test speakers (train-360 and dev unchanged) and the recorded runs of the --arms are scored
again from their last weights, without training (the earlier scores stay in each record, under
earlier_tests); the summary counts only the runs scored on the current test split.

    python benchmarks/compare_training.py --librispeech DIR --work_dir DIR
        --torch_python PATH [--seeds 1,2,3] [--epochs 5] [--arms asteroid,mindspore,mindspore_dm]
        [--results benchmarks/results/compare_training.json] [--png ...compare_training.png]
        [--config_path configs/demo_cpu.yaml] [--<config key>=<value> ...]
        [mini LibriMix sizes: --train_mixtures ...]

torch and asteroid are not project dependencies: install them as benchmarks/README.md says.
"""
import argparse
import glob
import json
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

from src.model_utils.atomic import write_json  # noqa: E402
from src.model_utils.errors import UserError, run_main  # noqa: E402

ARMS = ("asteroid", "mindspore", "mindspore_dm", "mindspore_dm_plain", "mindspore_replay",
        "mindspore_replay_msinit", "mindspore_json", "mindspore_replay_crops",
        "mindspore_replay_order")
# train.py flags of the arms that add fixed ones (mindspore_dm's come from --dm_flags)
ARM_FLAGS = {"mindspore_dm_plain": ["--dynamic_mixing=true", "--speed_perturb=[]"],
             "mindspore_json": ["--data_format=json"]}
# mindspore and mindspore_replay_order as recorded before train.py's shuffling seed was hashed
# (src/data/dataset.order_seed), when neighbouring seeds shared their MindRecord orders one epoch
# apart. Kept in the results, summarized and plotted; never run or re-scored.
RETIRED = ("mindspore_before_order_fix", "mindspore_replay_order_before_order_fix")
# replay arms from this project's initial weights: {arm: (crops, order)} of their batch stream
REPLAY_MIXES = {"mindspore_replay_msinit": ("asteroid", "asteroid"),
                "mindspore_replay_crops": ("batcher", "asteroid"),
                "mindspore_replay_order": ("asteroid", "mindspore")}
CHILD_FLAG = "--_asteroid_run"
INIT_FLAG = "--_asteroid_init"
REPLAY_FLAG = "--_replay_run"
MODEL_KEYS = ("N", "L", "B", "H", "Sc", "P", "X", "R", "n_src", "norm_type", "causal",
              "mask_nonlinear", "sample_rate")
TRAIN_KEYS = ("segment", "batch_size", "lr", "l2", "clip_grad_norm")


# ---------------------------------------------------------------- Asteroid side (torch process)

def read_split(data_dir, split, n_src):
    """[(mixture [T], sources [C, T])] of a preprocessed split, read from its WAV lists."""
    import soundfile as sf
    with open(os.path.join(data_dir, split, "mix.json"), encoding="utf-8") as f:
        mixtures = json.load(f)
    streams = []
    for c in range(n_src):
        with open(os.path.join(data_dir, split, f"s{c + 1}.json"), encoding="utf-8") as f:
            streams.append(json.load(f))
    return [(sf.read(mix[0], dtype="float32")[0],
             np.stack([sf.read(s[i][0], dtype="float32")[0] for s in streams]))
            for i, mix in enumerate(mixtures)]


def asteroid_epoch(train, rng, batch, segment, order=None, crop=None):
    """One epoch of the Asteroid arm's batches: (mixtures [batch, segment], sources [batch, C,
    segment]) per step, drawn from `rng` (numpy Generator): a permutation of `train`, then one
    random crop per mixture. The replay arms draw the same stream, or replace the permutation by
    `order` (positions in `train`) or the crops by `crop(i, length)` -> start."""
    if order is None:
        order = rng.permutation(len(train))
    for step in range(len(train) // batch):
        mixtures, sources = [], []
        for i in order[step * batch:(step + 1) * batch]:
            mixture, refs = train[i]
            start = (int(rng.integers(0, len(mixture) - segment + 1)) if crop is None
                     else crop(i, len(mixture)))
            mixtures.append(mixture[start:start + segment])
            sources.append(refs[:, start:start + segment])
        yield np.stack(mixtures), np.stack(sources)


def asteroid_model_with_seed(spec):
    """Asteroid's ConvTasNet initialised as the Asteroid arm of spec's seed initialises it."""
    import torch
    from compare_pytorch import asteroid_model
    torch.set_num_threads(spec["threads"])
    torch.manual_seed(spec["seed"])
    return asteroid_model(spec["model"])


def asteroid_init(spec):
    """Write the Asteroid arm's initial weights (state_dict) to spec's out_dir/asteroid_init.pth."""
    import torch
    torch.save(asteroid_model_with_seed(spec).state_dict(),
               os.path.join(spec["out_dir"], "asteroid_init.pth"))


def asteroid_run(spec):
    """Train Asteroid's ConvTasNet as `spec` says; write curves and test estimates to spec's dir.

    Crops as this project's loader with short_policy drop: each epoch every training mixture at
    least `segment` long gives one random crop, in a random order, batches without remainder.
    """
    import torch
    from asteroid.losses import PITLossWrapper, pairwise_neg_sisdr
    from compare_pytorch import asteroid_step

    model_cfg, out = spec["model"], spec["out_dir"]
    rng = np.random.default_rng(spec["seed"])
    net = asteroid_model_with_seed(spec)
    optimizer = torch.optim.Adam(net.parameters(), lr=spec["lr"], weight_decay=spec["l2"])
    loss_fn = PITLossWrapper(pairwise_neg_sisdr, pit_from="pw_mtx")
    segment = int(round(spec["segment"] * model_cfg["sample_rate"]))
    train = [x for x in read_split(spec["data_dir"], "train-360", model_cfg["n_src"])
             if len(x[0]) >= segment]
    dev = read_split(spec["data_dir"], "dev", model_cfg["n_src"])
    batch = spec["batch_size"]
    steps_per_epoch = len(train) // batch
    state_path = os.path.join(out, "asteroid_last.pt")
    history = []
    if os.path.isfile(state_path):
        state = torch.load(state_path, weights_only=False)
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history = state["history"]
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
    while len(history) < spec["epochs"]:
        net.train()
        losses, seconds = [], 0.0
        for step, (mixtures, sources) in enumerate(asteroid_epoch(train, rng, batch, segment)):
            x, y = torch.from_numpy(mixtures), torch.from_numpy(sources)
            started = time.perf_counter()
            loss = asteroid_step(net, loss_fn, optimizer, x, y, spec["clip_grad_norm"])
            seconds += time.perf_counter() - started
            losses.append(loss.item())
            if (step + 1) % 25 == 0:
                print(f"asteroid seed {spec['seed']} epoch {len(history) + 1} step {step + 1}: "
                      f"loss {np.mean(losses[-25:]):.4f}", flush=True)
        net.eval()
        with torch.inference_mode():
            valid = [loss_fn(net(torch.from_numpy(m)[None]), torch.from_numpy(s)[None]).item()
                     for m, s in dev]
        history.append(dict(epoch=len(history) + 1, steps=steps_per_epoch,
                            train_loss=float(np.mean(losses)), valid_loss=float(np.mean(valid)),
                            seconds=round(seconds, 3)))
        print(f"asteroid seed {spec['seed']} epoch {len(history)}: train loss "
              f"{history[-1]['train_loss']:.4f} valid loss {history[-1]['valid_loss']:.4f} "
              f"{1000 * seconds / steps_per_epoch:.0f} ms/step", flush=True)
        tmp = state_path + ".tmp"
        torch.save(dict(model=net.state_dict(), optimizer=optimizer.state_dict(),
                        history=history, rng=rng.bit_generator.state,
                        torch_rng=torch.get_rng_state()), tmp)
        os.replace(tmp, state_path)
    net.eval()
    test = read_split(spec["data_dir"], "test", model_cfg["n_src"])
    with torch.inference_mode():
        estimates = {f"e{i}": net(torch.from_numpy(m)[None])[0].numpy()
                     for i, (m, _) in enumerate(test)}
    np.savez(os.path.join(out, "test_estimates.tmp.npz"), **estimates)
    os.replace(os.path.join(out, "test_estimates.tmp.npz"), os.path.join(out, "test_estimates.npz"))
    write_json(os.path.join(out, "asteroid_curves.json"), history)


# ---------------------------------------------------------------- replay arm (project process)

class ReplayStream:
    """A batch stream for the replay arms as a GeneratorDataset source: each iteration is the next
    epoch (the generator's state carries over), rows (mixture [batch, S], sources [batch, C, S],
    lengths [batch]) already batched.

    By default the Asteroid arm's stream (asteroid_epoch). `crops="batcher"` crops as train.py's
    pipeline does (src.data.dataset.crop_start of the seed, the epoch and the mixture's id);
    `orders` (one list of mixture ids per epoch) replaces the permutations by that order.
    """

    def __init__(self, train, seed, batch, segment, ids=None, crops="asteroid", orders=None):
        self.train, self.batch, self.segment = train, batch, segment
        self.seed, self.ids, self.crops, self.orders = seed, ids, crops, orders
        self.rng = np.random.default_rng(seed)
        self.epoch = 0

    def __len__(self):
        return len(self.train) // self.batch

    def __iter__(self):
        from src.data.dataset import crop_start
        order = None
        if self.orders is not None:
            position = {mid: i for i, mid in enumerate(self.ids)}
            order = [position[mid] for mid in self.orders[self.epoch]]

        def batcher_crop(i, length):
            if length == self.segment:
                return 0
            return crop_start(self.seed, self.epoch, self.ids[i], length, self.segment)
        crop = batcher_crop if self.crops == "batcher" else None
        for mixtures, sources in asteroid_epoch(self.train, self.rng, self.batch, self.segment,
                                                order, crop):
            yield mixtures, sources, np.full(len(mixtures), self.segment, np.int32)
        self.epoch += 1


def mindspore_orders(cfg, epochs):
    """The mixture ids of train.py's MindRecord pipeline, per epoch, in its order (the same
    sampler and seed as src.data.dataset.create_train_dataset)."""
    import mindspore.dataset as ds
    from src.data.dataset import train_sampler
    from src.data.librimix import load_split
    split = load_split(cfg.data_dir, "train-360", cfg.n_src, cfg.sample_rate)
    keep = split.lengths >= int(round(cfg.segment * cfg.sample_rate))
    rows = ds.MindDataset(split.mindrecord_files, columns_list=["mixture_id"],
                          sampler=train_sampler(cfg, split, keep))
    iterator = rows.create_tuple_iterator(output_numpy=True, num_epochs=epochs)
    return [[str(row[0]) for row in iterator] for _ in range(epochs)]


def replay_run(spec):
    """train.py's loop (src/training/trainer.fit: the project's training step, validation,
    checkpoints and curves) on a ReplayStream (spec's crops and order), from the weights in
    spec's init_ckpt (Asteroid's, converted) or the project's own initialisation."""
    import mindspore.dataset as ds
    from src.data.dataset import create_eval_dataset
    from src.model.build import build_network
    from src.model.checkpoint import load_weights
    from src.model_utils.config import load_config
    from src.model_utils.device import init_device
    from src.training.trainer import fit

    cfg = load_config(spec["config_args"])
    init_device(cfg)
    net = build_network(cfg)
    if spec["init_ckpt"]:
        load_weights(net, spec["init_ckpt"])
    segment = int(round(cfg.segment * cfg.sample_rate))
    train = read_split(cfg.data_dir, "train-360", cfg.n_src)
    with open(os.path.join(cfg.data_dir, "train-360", "ids.json"), encoding="utf-8") as f:
        ids = json.load(f)
    keep = [i for i, x in enumerate(train) if len(x[0]) >= segment]
    train, ids = [train[i] for i in keep], [ids[i] for i in keep]
    orders = mindspore_orders(cfg, cfg.epochs) if spec.get("order") == "mindspore" else None
    stream = ReplayStream(train, cfg.seed, cfg.batch_size, segment, ids,
                          spec.get("crops", "asteroid"), orders)
    train_set = ds.GeneratorDataset(stream, column_names=["mixture", "sources", "lengths"],
                                    shuffle=False, num_parallel_workers=1,
                                    python_multiprocessing=False)
    valid_set, _ = create_eval_dataset(cfg, cfg.valid_name, cfg.cv_maxlen)
    fit(cfg, net, train_set, valid_set)


# ---------------------------------------------------------------- driver (project environment)

def run(command, log_path):
    """Run `command`, its output appended to `log_path`; UserError naming the log on failure."""
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"$ {' '.join(command)}\n")
        log.flush()
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    if done.returncode:
        raise UserError(f"{command[1]} failed (exit {done.returncode}); see {log_path}")


def prepare_data(args, log_path):
    """The preprocessed mini LibriMix under work_dir (built the first time); its data_dir.

    When the test split holds another number of mixtures than --test_mixtures, a larger (or
    smaller) test split replaces it: the set is built again with the same seed (its test pairs
    are drawn last, so train-360 and dev come out the same, which is checked) and only its test
    split is preprocessed.
    """
    mini = os.path.join(args.work_dir, "mini")
    data_dir = os.path.join(args.work_dir, "data")
    if not os.path.isdir(os.path.join(mini, "Libri2Mix")):
        make_minilibrimix(args, mini, log_path)
    if not os.path.isfile(os.path.join(data_dir, "test", "info.json")):
        run([sys.executable, "preprocess.py", "--in_dir", os.path.join(mini, "Libri2Mix"),
             "--out_dir", data_dir, "--splits", "[train-360,dev,test]", "--overwrite=true",
             "--preprocess_workers=1"], log_path)
    if test_size(data_dir) != args.test_mixtures:
        other = os.path.join(args.work_dir, f"mini-test{args.test_mixtures}")
        if not os.path.isdir(os.path.join(other, "Libri2Mix")):
            make_minilibrimix(args, other, log_path)
        for split in ("train-360", "dev"):
            if mixture_names(other, split) != mixture_names(mini, split):
                raise UserError(f"{other}: its {split} differs from {mini}'s; build the "
                                "benchmark in a new --work_dir")
        run([sys.executable, "preprocess.py", "--in_dir", os.path.join(other, "Libri2Mix"),
             "--out_dir", data_dir, "--splits", "[test]", "--overwrite=true",
             "--preprocess_workers=1"], log_path)
    return data_dir


def make_minilibrimix(args, out_dir, log_path):
    run([sys.executable, "benchmarks/make_minilibrimix.py", "--librispeech", args.librispeech,
         "--out_dir", out_dir, "--dev_speakers", str(args.dev_speakers),
         "--test_speakers", str(args.test_speakers),
         "--train_mixtures", str(args.train_mixtures), "--dev_mixtures",
         str(args.dev_mixtures), "--test_mixtures", str(args.test_mixtures),
         "--dev_max_seconds", str(args.dev_max_seconds), "--seed", str(args.data_seed)],
        log_path)


def test_size(data_dir):
    with open(os.path.join(data_dir, "test", "info.json"), encoding="utf-8") as f:
        return json.load(f)["mixtures"]


def mixture_names(mini, split):
    """The mixture files of `split` in a mini LibriMix built by make_minilibrimix.py."""
    return sorted(os.path.basename(p) for p in glob.glob(
        os.path.join(mini, "Libri2Mix", "wav*k", "min", split, "mix_clean", "*.wav")))


def input_si_snr(data_dir, split, n_src):
    """Mean over the utterances of `split` of the mixture's mean SI-SNR against the sources."""
    from src.evaluation.metrics import si_snr
    return float(np.mean([np.mean([si_snr(m, s) for s in refs])
                          for m, refs in read_split(data_dir, split, n_src)]))


def score_estimates(path, data_dir, n_src):
    """{si_snri, sdri, ...} means of the Asteroid estimates in `path` on the test split."""
    from src.evaluation.evaluate import score_utterance, summarize
    estimates = np.load(path)
    rows = []
    for i, (mixture, refs) in enumerate(read_split(data_dir, "test", n_src)):
        scores, _ = score_utterance(estimates[f"e{i}"], refs, mixture)
        rows.append(dict(length=len(mixture), **scores))
    return summarize(rows)


def ms_per_step(rows):
    """Median training time per step over the epochs after the first (which compiles)."""
    rest = rows[1:] or rows
    return float(np.median([1000 * r["seconds"] / r["steps"] for r in rest]))


def run_asteroid(args, spec, out, log_path, data_dir, dev_input):
    spec = dict(spec, out_dir=out)
    run([args.torch_python, os.path.abspath(__file__), f"{CHILD_FLAG}={json.dumps(spec)}"],
        log_path)
    with open(os.path.join(out, "asteroid_curves.json"), encoding="utf-8") as f:
        rows = json.load(f)
    for row in rows:   # valid SI-SNRi = -(valid loss) - the mixtures' own SI-SNR
        row["valid_si_snri"] = -row["valid_loss"] - dev_input
    return rows, score_estimates(os.path.join(out, "test_estimates.npz"), data_dir,
                                 spec["model"]["n_src"])


def train_flags(args, config_flags, seed, out, data_dir):
    """train.py's flags of the project's arms (no LR halving, no early stop, every dev mixture)."""
    return [f"--config_path={args.config_path}", *config_flags, f"--data_dir={data_dir}",
            f"--output_dir={out}", f"--seed={seed}", f"--epochs={args.epochs}",
            "--lr_patience=0", "--early_stop_patience=0", "--short_policy=drop",
            "--cv_maxlen=0", "--keep_checkpoint_max=0", f"--log_interval={args.log_interval}"]


def run_mindspore(args, config_flags, arm, seed, out, log_path, data_dir, dev_input):
    flags = train_flags(args, config_flags, seed, out, data_dir) + ["--resume=auto"]
    flags += args.dm_flags.split() if arm == "mindspore_dm" else ARM_FLAGS.get(arm, [])
    run([sys.executable, "train.py", *flags], log_path)
    return score_mindspore(out, log_path, data_dir, dev_input)


def run_replay(args, config_flags, spec, out, log_path, data_dir, dev_input, arm):
    """A replay arm: for mindspore_replay Asteroid's initial weights (torch process), converted,
    else the project's; then replay_run with the arm's crops and order (REPLAY_MIXES; started
    anew when interrupted: its batch stream does not resume)."""
    spec = dict(spec, out_dir=out)
    init_ckpt = ""
    if arm == "mindspore_replay":
        run([args.torch_python, os.path.abspath(__file__), f"{INIT_FLAG}={json.dumps(spec)}"],
            log_path)
        init_ckpt = os.path.join(out, "asteroid_init.ckpt")
        run([sys.executable, "convert_pytorch.py", f"--config_path={args.config_path}",
             *config_flags, f"--src={os.path.join(out, 'asteroid_init.pth')}",
             f"--dst={init_ckpt}", "--overwrite=true"], log_path)
    flags = train_flags(args, config_flags, spec["seed"], out, data_dir) + ["--overwrite=true"]
    crops, order = REPLAY_MIXES.get(arm, ("asteroid", "asteroid"))
    run([sys.executable, os.path.abspath(__file__),
         f"{REPLAY_FLAG}=" + json.dumps(dict(config_args=flags, init_ckpt=init_ckpt,
                                             crops=crops, order=order))], log_path)
    return score_mindspore(out, log_path, data_dir, dev_input)


def score_mindspore(out, log_path, data_dir, dev_input):
    """(curves with valid_loss, test scores) of the project's run in `out`."""
    with open(os.path.join(out, "curves.json"), encoding="utf-8") as f:
        rows = json.load(f)
    for row in rows:
        row["valid_loss"] = -row["valid_si_snri"] - dev_input
    return rows, eval_test_split(out, log_path, data_dir)


def eval_test_split(out, log_path, data_dir):
    """eval.py's summary of the project's run in `out` on the test split (its last weights)."""
    run([sys.executable, "eval.py", f"--config_path={os.path.join(out, 'config.yaml')}",
         f"--ckpt_file={os.path.join(out, 'conv_tasnet-last.ckpt')}", f"--data_dir={data_dir}",
         f"--output_dir={out}", "--test_name=test", "--metrics=[sdr]"], log_path)
    with open(os.path.join(out, "eval_test", "eval_summary.json"), encoding="utf-8") as f:
        return json.load(f)


def score_run(args, arm, spec, out, log_path, data_dir):
    """The test scores of a finished run's last weights on the current test split (after the
    test split changed): Asteroid's saved state through its child process (which then skips the
    training it has done), or eval.py on the project's last checkpoint."""
    if arm == "asteroid":
        run([args.torch_python, os.path.abspath(__file__),
             f"{CHILD_FLAG}={json.dumps(dict(spec, out_dir=out))}"], log_path)
        return score_estimates(os.path.join(out, "test_estimates.npz"), data_dir,
                               spec["model"]["n_src"])
    return eval_test_split(out, log_path, data_dir)


def scored_on(record):
    """How many test mixtures `record`'s scores are from (records made before the test split was
    enlarged carry no count: the first split had 20)."""
    return record.get("test_mixtures", 20)


def run_dir(args, arm, seed):
    return os.path.join(os.path.abspath(args.work_dir), "runs", f"{arm}-seed{seed}")


def without_test_size(budget):
    """A budget without its test split's size: runs are comparable (and re-scored) across it."""
    return {k: v for k, v in budget.items() if k != "test_mixtures"}


def summarize_arms(records, test_mixtures):
    """Mean, standard deviation, min and max over the seeds of each arm's numbers, over the runs
    scored on the current test split (`test_mixtures` mixtures); the others are left out until
    they are scored again. dev_si_snri_last5 is each run's dev SI-SNRi averaged over its last five
    epochs; dev_rising counts the runs where that mean exceeds the one of the five epochs before
    (still improving, not overfitting); vs_asteroid compares the arm's test scores with the
    Asteroid arm's: difference of the means, its 95% interval (normal approximation of Welch's
    standard error) and Welch's t-test p."""
    from scipy import stats
    table, scores = {}, {}
    for arm in (*ARMS, *RETIRED):
        runs = [r for r in records if r["arm"] == arm
                and scored_on(r) == test_mixtures]
        if not runs:
            continue
        dev = [[row["valid_si_snri"] for row in r["curves"]] for r in runs]
        values = dict({key: [r[key] for r in runs] for key in
                       ("si_snri", "sdri", "final_train_loss", "final_valid_loss", "ms_per_step")},
                      dev_si_snri_last5=[np.mean(d[-5:]) for d in dev])
        scores[arm] = {k: np.array(values[k], float) for k in ("si_snri", "sdri")}
        table[arm] = {"seeds": [r["seed"] for r in runs],
                      "dev_rising": int(sum(np.mean(d[-5:]) > np.mean(d[-10:-5]) for d in dev))}
        for key, column in values.items():
            column = np.array(column, float)
            spread = float(column.std(ddof=1)) if len(column) > 1 else 0.0
            table[arm][key] = dict(mean=round(float(column.mean()), 3), std=round(spread, 3),
                                   min=round(float(column.min()), 3),
                                   max=round(float(column.max()), 3))
    for arm in table:
        if arm == "asteroid" or "asteroid" not in scores or len(scores[arm]["si_snri"]) < 2:
            continue
        table[arm]["vs_asteroid"] = {}
        for key, ours in scores[arm].items():
            theirs = scores["asteroid"][key]
            diff = ours.mean() - theirs.mean()
            error = np.sqrt(ours.var(ddof=1) / len(ours) + theirs.var(ddof=1) / len(theirs))
            table[arm]["vs_asteroid"][key] = dict(
                difference=round(float(diff), 3),
                interval95=[round(float(diff - 1.96 * error), 3),
                            round(float(diff + 1.96 * error), 3)],
                welch_p=round(float(stats.ttest_ind(ours, theirs, equal_var=False).pvalue), 3))
    return table


def plot(records, path):
    """Every run's training loss and validation SI-SNRi against steps (thin lines, colour per
    arm) and each arm's mean over its runs (thick, in the legend with the number of runs;
    retired arms dotted)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from src.model_utils.atomic import atomic_output
    colours = dict(asteroid="tab:orange", mindspore="tab:blue", mindspore_dm="tab:green",
                   mindspore_dm_plain="tab:pink",
                   mindspore_replay="tab:purple", mindspore_replay_msinit="tab:brown",
                   mindspore_json="tab:gray", mindspore_replay_crops="tab:olive",
                   mindspore_replay_order="tab:cyan")
    colours.update({old: "lightgray" for old in RETIRED})
    figure = Figure(figsize=(12, 4.6))
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 2)
    keys = ("train_loss", "valid_si_snri")
    by_arm = {}
    for record in records:
        by_arm.setdefault(record["arm"], []).append(record)
        steps = np.cumsum([r["steps"] for r in record["curves"]])
        for ax, key in zip(axes, keys):
            ax.plot(steps, [r[key] for r in record["curves"]], color=colours[record["arm"]],
                    alpha=0.3, linewidth=0.7)
    for arm, runs in by_arm.items():
        epochs = min(len(r["curves"]) for r in runs)
        steps = np.cumsum([r["steps"] for r in runs[0]["curves"][:epochs]])
        for ax, key in zip(axes, keys):
            mean = np.mean([[row[key] for row in r["curves"][:epochs]] for r in runs], axis=0)
            ax.plot(steps, mean, color=colours[arm], linewidth=2.2,
                    linestyle=":" if arm in RETIRED else "-", label=f"{arm} (mean of {len(runs)})")
    axes[0].set(xlabel="training steps", ylabel="training loss (-SI-SNR, dB), epoch mean")
    axes[1].set(xlabel="training steps", ylabel="validation SI-SNRi (dB), unseen speakers")
    axes[1].legend(fontsize=7, loc="lower right")
    for ax in axes:
        ax.grid(alpha=0.3)
    figure.tight_layout()
    with atomic_output(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    for flag, child in ((CHILD_FLAG, asteroid_run), (INIT_FLAG, asteroid_init),
                        (REPLAY_FLAG, replay_run)):
        given = [a for a in argv if a.startswith(flag + "=")]
        if given:
            child(json.loads(given[0].split("=", 1)[1]))
            return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--librispeech", required=True, help="folder of LibriSpeech utterances")
    parser.add_argument("--work_dir", required=True, help="data and runs are kept here")
    parser.add_argument("--torch_python", required=True, help="interpreter with torch, asteroid")
    parser.add_argument("--config_path", default="configs/demo_cpu.yaml")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--dm_flags",
                        default="--dynamic_mixing=true --speed_perturb=[0.95,1.0,1.05]",
                        help="train.py flags of the mindspore_dm arm")
    parser.add_argument("--threads", type=int, default=2, help="PyTorch threads")
    parser.add_argument("--results", default="benchmarks/results/compare_training.json")
    parser.add_argument("--png", default="benchmarks/results/compare_training.png")
    parser.add_argument("--log_interval", type=int, default=50)
    parser.add_argument("--train_mixtures", type=int, default=400)
    parser.add_argument("--dev_mixtures", type=int, default=20)
    parser.add_argument("--test_mixtures", type=int, default=200)
    parser.add_argument("--dev_speakers", type=int, default=40)
    parser.add_argument("--test_speakers", type=int, default=40)
    parser.add_argument("--dev_max_seconds", type=float, default=3.0)
    parser.add_argument("--data_seed", type=int, default=0)
    args, config_flags = parser.parse_known_args(argv)
    if any(not f.startswith("--") or "=" not in f for f in config_flags):
        raise UserError(f"expected config flags as --key=value, got {config_flags}")
    arms = args.arms.split(",")
    if any(a not in ARMS for a in arms):
        raise UserError(f"--arms: expected names from {ARMS}, got {args.arms!r}")
    seeds = [int(s) for s in args.seeds.split(",")]
    if not os.path.isfile(args.torch_python) and "asteroid" in arms:
        raise UserError(f"--torch_python: {args.torch_python} not found")
    from src.model_utils.config import load_config
    from bench_model import machine
    cfg = load_config([f"--config_path={args.config_path}", *config_flags])
    spec_base = dict(model={k: getattr(cfg, k) for k in MODEL_KEYS},
                     **{k: getattr(cfg, k) for k in TRAIN_KEYS}, epochs=args.epochs,
                     threads=args.threads)
    budget = dict(config_path=args.config_path, config_flags=config_flags,
                  train_mixtures=args.train_mixtures, dev_mixtures=args.dev_mixtures,
                  test_mixtures=args.test_mixtures, dev_speakers=args.dev_speakers,
                  test_speakers=args.test_speakers, dev_max_seconds=args.dev_max_seconds,
                  data_seed=args.data_seed, dm_flags=args.dm_flags, **spec_base)
    os.makedirs(args.work_dir, exist_ok=True)
    log_path = os.path.join(os.path.abspath(args.work_dir), "compare_training.log")
    data_dir = prepare_data(args, log_path)
    dev_input = input_si_snr(data_dir, "dev", cfg.n_src)
    results = {"budget": budget, "records": []}
    if os.path.isfile(args.results):
        with open(args.results, encoding="utf-8") as f:
            results = json.load(f)
        if without_test_size(results["budget"]) != without_test_size(budget):
            raise UserError(f"{args.results}: holds runs of another budget; use another --results")
        results["budget"] = budget

    def save():
        results["summary"] = summarize_arms(results["records"], args.test_mixtures)
        write_json(args.results, results)
        plot(results["records"], args.png)

    for record in results["records"]:
        if record["arm"] in arms and scored_on(record) != args.test_mixtures:
            out = run_dir(args, record["arm"], record["seed"])
            print(f"{time.strftime('%H:%M:%S')} scoring {record['arm']} seed {record['seed']} "
                  f"on {args.test_mixtures} test mixtures", flush=True)
            scores = score_run(args, record["arm"], dict(spec_base, seed=record["seed"],
                                                         data_dir=data_dir), out, log_path,
                               data_dir)
            record.setdefault("earlier_tests", []).append(
                dict(test_mixtures=scored_on(record), si_snri=record["si_snri"],
                     sdri=record["sdri"]))
            record.update(si_snri=scores["si_snri"], sdri=scores["sdri"],
                          test_mixtures=args.test_mixtures)
            save()
    for seed in seeds:
        for arm in arms:
            if any(r["arm"] == arm and r["seed"] == seed for r in results["records"]):
                continue
            out = run_dir(args, arm, seed)
            os.makedirs(out, exist_ok=True)
            started = time.time()
            print(f"{time.strftime('%H:%M:%S')} {arm} seed {seed} -> {out}", flush=True)
            if arm == "asteroid":
                rows, scores = run_asteroid(args, dict(spec_base, seed=seed,
                                                       data_dir=data_dir), out, log_path,
                                            data_dir, dev_input)
            elif arm.startswith("mindspore_replay"):
                rows, scores = run_replay(args, config_flags, dict(spec_base, seed=seed), out,
                                          log_path, data_dir, dev_input, arm)
            else:
                rows, scores = run_mindspore(args, config_flags, arm, seed, out, log_path,
                                             data_dir, dev_input)
            record = dict(arm=arm, seed=seed, si_snri=scores["si_snri"], sdri=scores["sdri"],
                          test_mixtures=args.test_mixtures,
                          final_train_loss=rows[-1]["train_loss"],
                          final_valid_loss=rows[-1]["valid_loss"], ms_per_step=ms_per_step(rows),
                          steps=int(sum(r["steps"] for r in rows)),
                          wall_s=round(time.time() - started), curves=rows, machine=machine())
            results["records"].append(record)
            save()
            print(f"  SI-SNRi {record['si_snri']:.2f} dB, SDRi {record['sdri']:.2f} dB, "
                  f"{record['ms_per_step']:.0f} ms/step, {record['wall_s']} s", flush=True)
    print(json.dumps(results.get("summary", {}), indent=1))


if __name__ == "__main__":
    run_main(main)
