"""Write a small synthetic LibriMix in the real layout (the demo's and the tests' data).

    python make_demo_data.py --out_dir=./demo/librimix [--seed=0] [--sizes=200,30,30] [--noisy]

Prints the Libri<C>Mix folder it wrote.
"""
import src.model_utils.quiet  # noqa: F401  (first: GLOG_v must be set before mindspore loads)
import argparse

from src.data.demo_data import SPLITS, make_demo_librimix
from src.model_utils.errors import UserError, run_main


def main(argv=None):
    parser = argparse.ArgumentParser(description="Write a small synthetic LibriMix (demo and tests).")
    parser.add_argument("--out_dir", required=True, help="root folder; Libri<C>Mix/ is made in it")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n_src", type=int, default=2)
    parser.add_argument("--sample_rate", type=int, default=8000)
    parser.add_argument("--sizes", default="200,30,30", help="mixtures in train-360,dev,test")
    parser.add_argument("--min_seconds", type=float, default=2.0)
    parser.add_argument("--max_seconds", type=float, default=6.0)
    parser.add_argument("--noisy", action="store_true", help="also noise/, mix_both/, mix_single/")
    parser.add_argument("--cross_gender", action="store_true",
                        help="every mixture has female and male voices (easier; the demo's choice)")
    args = parser.parse_args(argv)
    try:
        sizes = dict(zip(SPLITS, (int(v) for v in args.sizes.split(",")), strict=True))
    except ValueError:
        raise UserError(f"--sizes: expected three integers like 200,30,30, got {args.sizes!r}") from None
    path = make_demo_librimix(args.out_dir, args.seed, args.n_src, args.sample_rate, sizes,
                              args.min_seconds, args.max_seconds, args.noisy, args.cross_gender)
    print(path)


if __name__ == "__main__":
    run_main(main)
