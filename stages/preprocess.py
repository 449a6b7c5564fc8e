"""Stage preprocess: validated IDX -> uint8 npz arrays and normalisation statistics."""

import _bootstrap  # noqa: F401,I001 (first: the project's environment)

from fmnist.data.prepare import preprocess
from fmnist.core.entry import load, parser, run_main


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--raw", default="data/raw")
    p.add_argument("--out", default="data/prepared")
    args = p.parse_args()
    cfg = load(args).preprocess
    stats = preprocess(args.raw, args.out, cfg.classes)
    print(f"train {stats['train_count']}, test {stats['test_count']}, mean {stats['mean']:.4f}, "
          f"std {stats['std']:.4f}, classes: {', '.join(stats['classes'])}")


if __name__ == "__main__":
    run_main(main)
