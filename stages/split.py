"""Stage split: seeded, stratified train/validation split of the training images."""

import _bootstrap  # noqa: F401,I001 (first: the project's environment)

from fmnist.data.prepare import split
from fmnist.core.entry import load, parser, run_main


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--prepared", default="data/prepared/train.npz")
    p.add_argument("--out", default="data/split")
    args = p.parse_args()
    cfg = load(args).split
    sizes = split(args.prepared, args.out, cfg.val_fraction, cfg.seed)
    print(f"train {sizes['train']}, validation {sizes['val']}")


if __name__ == "__main__":
    run_main(main)
