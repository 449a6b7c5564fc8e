"""Stage evaluate@NAME: test metrics, confusion matrix and mistakes, logged to the training run."""

import _bootstrap  # noqa: F401,I001 (first: the project's environment)

from pathlib import Path

from fmnist.core.entry import add_recipe_arguments, load, load_run, parser, run_main
from fmnist.workflows.evaluate import EvalPaths, evaluate_architecture


def main() -> None:
    p = parser(__doc__)
    add_recipe_arguments(p)
    p.add_argument("--model-dir", type=Path)
    p.add_argument("--test", default="data/prepared/test.npz", type=Path)
    p.add_argument("--metrics", type=Path)
    p.add_argument("--confusion", type=Path)
    p.add_argument("--figures", type=Path)
    args = p.parse_args()
    run = load_run(args)
    settings = load(args).evaluate
    paths = EvalPaths.for_arch(run.name, args.model_dir, args.test, args.metrics, args.confusion, args.figures)
    print(evaluate_architecture(run.name, run.train, settings, paths).describe(run.name))


if __name__ == "__main__":
    run_main(main)
