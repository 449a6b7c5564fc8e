"""Stage evaluate@ARCH: test metrics, confusion matrix and mistakes, logged to the training run."""

from pathlib import Path

from fmnist.entry import load, parser, run_main
from fmnist.workflows.evaluate import EvalPaths, evaluate_architecture


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--arch", required=True)
    p.add_argument("--model-dir", type=Path)
    p.add_argument("--test", default="data/prepared/test.npz", type=Path)
    p.add_argument("--metrics", type=Path)
    p.add_argument("--confusion", type=Path)
    p.add_argument("--figures", type=Path)
    args = p.parse_args()
    params = load(args)
    arch = args.arch
    paths = EvalPaths(model_dir=args.model_dir or Path("models") / arch, test_file=args.test,
                      metrics_file=args.metrics or Path("metrics/eval") / f"{arch}.json",
                      confusion_csv=args.confusion or Path("plots/confusion") / f"{arch}.csv",
                      figures_dir=args.figures or Path("reports/eval") / arch)
    metrics = evaluate_architecture(params, arch, paths)
    print(f"{arch}: test acc {metrics['test_acc']:.4f}, macro F1 {metrics['test_macro_f1']:.4f}")


if __name__ == "__main__":
    run_main(main)
