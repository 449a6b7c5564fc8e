"""Stage report: one Markdown report comparing all architectures, recorded as an MLflow run."""

from pathlib import Path

from fmnist.entry import load, parser, run_main
from fmnist.workflows.report import ReportPaths, write_report


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--out", default="reports", type=Path)
    args = p.parse_args()
    params = load(args)
    paths = ReportPaths(models_dir=Path("models"), train_metrics_dir=Path("metrics/train"),
                        eval_metrics_dir=Path("metrics/eval"), history_dir=Path("metrics/history"),
                        eval_figures_dir=args.out / "eval", out_dir=args.out)
    result = write_report(params.experiment, params.profile, params.architectures,
                          params.report.diminishing_returns_tolerance, paths)
    print(f"report written to {args.out / 'report.md'} (MLflow run {result['run_id']})")


if __name__ == "__main__":
    run_main(main)
