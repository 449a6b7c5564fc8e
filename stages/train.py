"""Stage train@ARCH: train one architecture with its recipe, tracked in MLflow."""

from pathlib import Path

from fmnist.entry import load, parser, run_main
from fmnist.workflows.train import TrainPaths, train_architecture


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--arch", required=True)
    p.add_argument("--split", default="data/split", type=Path)
    p.add_argument("--prepared", default="data/prepared", type=Path)
    p.add_argument("--model-dir", type=Path)
    p.add_argument("--metrics", type=Path)
    p.add_argument("--history", type=Path)
    args = p.parse_args()
    params = load(args)
    arch = args.arch
    paths = TrainPaths(split_dir=args.split, prepared_dir=args.prepared,
                       model_dir=args.model_dir or Path("models") / arch,
                       metrics_file=args.metrics or Path("metrics/train") / f"{arch}.json",
                       history_file=args.history or Path("metrics/history") / f"{arch}.csv")
    summary = train_architecture(params, arch, paths)
    print(f"{arch}: best val acc {summary['best_val_acc']:.4f} at epoch {summary['best_epoch']} "
          f"of {summary['epochs_run']}, {summary['train_seconds']:.1f} s")


if __name__ == "__main__":
    run_main(main)
