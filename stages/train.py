"""Stage train@NAME: train one recipe, tracked in MLflow."""

import _bootstrap  # noqa: F401,I001 (first: the project's environment)

from pathlib import Path

from fmnist.core.entry import add_recipe_arguments, load_run, parser, run_main
from fmnist.workflows.train import TrainPaths, train_architecture


def main() -> None:
    p = parser(__doc__)
    add_recipe_arguments(p)
    p.add_argument("--split", default="data/split", type=Path)
    p.add_argument("--prepared", default="data/prepared", type=Path)
    p.add_argument("--model-dir", type=Path)
    p.add_argument("--metrics", type=Path)
    p.add_argument("--history", type=Path)
    p.add_argument("--no-resume", action="store_true", help="start at epoch 1 even if a saved state matches")
    args = p.parse_args()
    run = load_run(args)
    paths = TrainPaths.for_arch(run.name, args.split, args.prepared, args.model_dir, args.metrics, args.history)
    print(train_architecture(run, paths, resume=False if args.no_resume else None).describe())


if __name__ == "__main__":
    run_main(main)
