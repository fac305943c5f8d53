"""Where each supported dataset keeps its mixtures and sources, and how preprocess.py lists them.

Every dataset is listed into the same thing, (mixture_IDs, paths of the mixture and of each source,
lengths from a metadata CSV or None); after that there is one code path (src/data/preparation.py).
`dataset` picks the layout, `mix_type` the mixture folder, C = n_src:

    librimix  LibriMix: [Libri<C>Mix/]wav8k|wav16k/min|max/<split>/ (train-360, train-100, dev,
              test), mix_type mix_clean, mix_both or mix_single, sources s1 .. s<C>, metadata/
    wsj0mix   wsj0-2mix / wsj0-3mix: [<C>speakers/]wav8k|wav16k/min|max/{tr,cv,tt}/, mix_type
              mix, sources s1 .. s<C>
    wham      WHAM!: wav8k|wav16k/min|max/{tr,cv,tt}/, mix_type mix_clean, mix_both or
              mix_single, sources s1 s2
    whamr     WHAMR!: wav8k|wav16k/min|max/{tr,cv,tt}/, mix_type mix_{clean,both,single}_anechoic
              or mix_{clean,both,single}_reverb, sources s1_<t> s2_<t>

For WHAMR! `<t>` is `whamr_targets`: `anechoic` (the sources without reverberation, so the model
separates and dereverberates) or `reverb` (the reverberant sources: separation only). WHAM! and
WHAMR! keep their noise in `noise/` beside the sources, as LibriMix does. Only LibriMix writes
metadata CSVs; the others are listed from the file names of the mixture folder, and every source
is looked up by the mixture's file name (then checked: present, readable, same length and rate).
mix_single (one speaker plus noise, speech enhancement) takes n_src = 1.
"""
import os
from dataclasses import dataclass

from src.data.librimix import read_metadata
from src.model_utils.errors import UserError


@dataclass(frozen=True)
class Layout:
    """One dataset's folders: `name` is the value of `dataset`, `title` how its authors write it."""

    name: str
    title: str
    mix_types: tuple
    split_example: str          # its split names, for error messages
    container: str = ""         # folder above wav<k>k, formatted with n_src: "Libri{}Mix"
    max_src: int = 2
    has_metadata: bool = False

    def source_folder(self, k, cfg):
        """Folder of source k (1-based) in a split folder."""
        if self.name == "whamr":
            return f"s{k}_{cfg.whamr_targets}"
        return f"s{k}"


LAYOUTS = {layout.name: layout for layout in (
    Layout("librimix", "LibriMix", ("mix_clean", "mix_both", "mix_single"),
           "train-360, train-100, dev, test", container="Libri{}Mix", max_src=3, has_metadata=True),
    Layout("wsj0mix", "wsj0-2mix / wsj0-3mix", ("mix",), "tr, cv, tt", container="{}speakers",
           max_src=3),
    Layout("wham", "WHAM!", ("mix_clean", "mix_both", "mix_single"), "tr, cv, tt"),
    Layout("whamr", "WHAMR!", tuple(f"mix_{kind}_{room}" for room in ("anechoic", "reverb")
                                     for kind in ("clean", "both", "single")), "tr, cv, tt"),
)}


def has_noise(mix_type):
    """Whether mixtures of `mix_type` hold the noise of `noise/` (mix_both, mix_single, ...)."""
    return mix_type.startswith(("mix_both", "mix_single"))


def get_layout(cfg):
    """The Layout of `cfg.dataset`, after checking that mix_type and n_src fit it."""
    layout = LAYOUTS.get(cfg.dataset)
    if layout is None:
        raise UserError(f"dataset: expected one of {sorted(LAYOUTS)}, got {cfg.dataset!r}")
    if cfg.mix_type not in layout.mix_types:
        raise UserError(f"mix_type: {layout.title} has {', '.join(layout.mix_types)}, "
                        f"got {cfg.mix_type!r}")
    single = cfg.mix_type.startswith("mix_single")
    if single and cfg.n_src != 1:
        raise UserError(f"n_src: {cfg.mix_type} holds one speaker, expected n_src=1, "
                        f"got {cfg.n_src}")
    if not single and not 2 <= cfg.n_src <= layout.max_src:
        raise UserError(f"n_src: {layout.title} has 2{' or 3' if layout.max_src == 3 else ''} "
                        f"speakers, got {cfg.n_src}")
    return layout


def find_split_root(cfg, splits):
    """The folder under `cfg.in_dir` that holds the split folders of `cfg.dataset`.

    Tries `in_dir`, then `<in_dir>/wav<k>k/<mode>` and `<in_dir>/<container>/wav<k>k/<mode>`, mode
    'min' before 'max', the rate of `sample_rate` first (other rates only with `resample`).
    """
    layout = get_layout(cfg)
    in_dir = cfg.in_dir
    if not in_dir:
        raise UserError(f"in_dir: not set (expected a {layout.title} folder, e.g. --in_dir=/data/"
                        f"{layout.title.split()[0].rstrip('!')})")
    if not os.path.isdir(in_dir):
        raise UserError(f"{in_dir}: folder not found (in_dir, expected a {layout.title} folder)")
    own = cfg.sample_rate // 1000
    rates = [own] + ([k for k in (8, 16) if k != own] if cfg.resample else [])
    container = layout.container.format(cfg.n_src)
    candidates = [in_dir]
    for prefix in ("", container) if container else ("",):
        for k in rates:
            for mode in ("min", "max"):
                candidates.append(os.path.join(in_dir, prefix, f"wav{k}k", mode))
    for root in candidates:
        if any(os.path.isdir(os.path.join(root, s, cfg.mix_type)) for s in splits):
            return os.path.abspath(root)
    where = f"{container}/" if container else ""
    raise UserError(f"{in_dir}: no {layout.title} split folder found (expected <split>/"
                    f"{cfg.mix_type}/ for one of {list(splits)}, directly or under "
                    f"{where}wav{own}k/min; {layout.title} splits are named "
                    f"{layout.split_example})")


def list_mixtures(root, split, cfg):
    """Pair the files of one split by mixture_ID (the file name without .wav).

    Returns:
        (ids, paths, csv_lengths): ids [M]; paths: dict stream ("mix", "s1", ...) -> [M] absolute
        paths; csv_lengths: [M] lengths from LibriMix's metadata CSV, or None without one.
    """
    layout = get_layout(cfg)
    split_dir = os.path.join(root, split)
    folders = {"mix": os.path.join(split_dir, cfg.mix_type)}
    folders.update({f"s{k}": os.path.join(split_dir, layout.source_folder(k, cfg))
                    for k in range(1, cfg.n_src + 1)})
    for folder in folders.values():
        if not os.path.isdir(folder):
            names = ", ".join(os.path.basename(f) + "/" for f in folders.values())
            raise UserError(f"{folder}: folder not found ({layout.title} split '{split}' needs "
                            f"{names})")
    csv_path = os.path.join(root, "metadata", f"mixture_{split}_{cfg.mix_type}.csv")
    csv_lengths = None
    if layout.has_metadata and os.path.isfile(csv_path):
        ids, csv_lengths = read_metadata(csv_path, cfg.n_src)
    else:
        ids = sorted(name[:-4] for name in os.listdir(folders["mix"]) if name.endswith(".wav"))
    if not ids:
        raise UserError(f"{folders['mix']}: split '{split}' is empty "
                        "(expected <mixture_ID>.wav files)")
    paths = {name: [os.path.join(folder, f"{mid}.wav") for mid in ids]
             for name, folder in folders.items()}
    return ids, paths, csv_lengths


def source_settings(cfg):
    """What of the layout decides the content of a preprocessed split (recorded in info.json)."""
    layout = get_layout(cfg)
    return {"dataset": layout.name,
            "source_folders": [layout.source_folder(k, cfg) for k in range(1, cfg.n_src + 1)]}
