"""Stage report: one Markdown report comparing all architectures, recorded as an MLflow run."""

import _bootstrap  # noqa: F401,I001 (first: the project's environment)

from pathlib import Path

from fmnist.core.entry import load, parser, run_main
from fmnist.reporting.gate import GateRule
from fmnist.workflows.report import ReportPaths, ReportSettings, write_report


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--out", default="reports", type=Path)
    p.add_argument("--summary", default="metrics/summary.json", type=Path)
    args = p.parse_args()
    params = load(args)
    paths = ReportPaths(models_dir=Path("models"), train_metrics_dir=Path("metrics/train"),
                        eval_metrics_dir=Path("metrics/eval"), history_dir=Path("metrics/history"),
                        eval_figures_dir=args.out / "eval", out_dir=args.out,
                        summary_metrics=args.summary)
    settings = ReportSettings(experiment=params.experiment, profile=params.profile,
                              architectures=params.train_recipes,
                              tolerance=params.report.diminishing_returns_tolerance,
                              registered_model=params.registered_model,
                              gate=GateRule(params.report.gate.margin, params.report.gate.test_tolerance))
    result = write_report(settings, paths)
    champion = result["champion"]
    print(f"report written to {args.out / 'report.md'} and {args.out / 'report.html'} "
          f"(MLflow run {result['run_id']}); champion: {champion['arch']} as {champion['uri']} "
          f"(version {champion['version']}); gate: {champion['gate']['decision']}: {champion['gate']['reason']}")


if __name__ == "__main__":
    run_main(main)
