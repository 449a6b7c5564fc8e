"""Where report tables come from: the DVC stage outputs, or MLflow alone (no files needed)."""

from __future__ import annotations

import csv
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

from fmnist.core.errors import StoreError
from fmnist.core.runs import (
    EVAL_PREFIX,
    RunSummary,
    StopRule,
    history_from_metrics,
    leaderboard_entry,
    read_evaluation,
    read_history,
    read_pointer,
    read_summary,
)
from fmnist.core.seeds import PRIMARY_TAG, SEED_GROUP_TAG, SeedSpread, split_spread
from fmnist.reporting.tables import ReportInputs, spread_entry

REPORT_STAGE = "report"


def from_outputs(architectures: list[str], tolerance: float, models_dir: Path, train_metrics_dir: Path,
                 eval_metrics_dir: Path, history_dir: Path, eval_figures_dir: Path | None = None) -> ReportInputs:
    """`eval_figures_dir` (ARCH/per_class.csv) gives the classes each run was evaluated on, which decides
    whether a published reference's setting allows a difference; without it they are unknown."""
    inputs = ReportInputs(list(architectures), tolerance)
    for arch in architectures:
        pointer = read_pointer(models_dir / arch)
        evaluation = read_evaluation(eval_metrics_dir / f"{arch}.json")
        summary, spread = split_spread(read_summary(train_metrics_dir / f"{arch}.json"))
        inputs.entries.append({**leaderboard_entry(summary, evaluation.test_acc, evaluation.n_test, pointer.run_id),
                               **spread_entry(spread), "n_classes": classes_evaluated(eval_figures_dir, arch)})
        inputs.histories[arch] = read_history(history_dir / f"{arch}.csv")
        inputs.rules[arch] = pointer.early_stopping
        inputs.summaries[arch] = summary
    return inputs


def find_report_run(client: MlflowClient, experiment: str, run_id: str | None = None) -> Run:
    """The report run `run_id`, or the latest finished report run of `experiment`."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = ", ".join(e.name for e in client.search_experiments()) or "(none)"
        raise StoreError(f"no MLflow experiment '{experiment}' at this tracking URI; experiments here: {names}")
    if run_id:
        try:
            run = client.get_run(run_id)
        except MlflowException as err:
            raise StoreError(f"no run {run_id} at this tracking URI; leave out --run-id for the latest "
                             "report run") from err
        problem = None
        if run.data.tags.get("fmnist.stage") != REPORT_STAGE:
            problem = f"is not a report run (its fmnist.stage tag is {run.data.tags.get('fmnist.stage')!r})"
        elif run.info.experiment_id != exp.experiment_id:
            problem = f"belongs to another experiment than '{experiment}'"
        elif run.info.status != "FINISHED":
            problem = f"did not finish (status {run.info.status}), so its tables are incomplete"
        if problem:
            raise StoreError(f"run {run_id} {problem}; pass the id of a finished run named 'report' "
                             f"in '{experiment}', or leave out --run-id for the latest")
        return run
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`fmnist.stage` = '{REPORT_STAGE}' "
                              "and attributes.status = 'FINISHED'", order_by=["attributes.start_time DESC"],
                              max_results=1)
    if not runs:
        raise StoreError(f"experiment '{experiment}' has no finished report run; run the pipeline first")
    return runs[0]


def from_mlflow(client: MlflowClient, report_run: Run) -> ReportInputs:
    params = report_run.data.params
    architectures = params["architectures"].split(",")
    runs = {arch: client.get_run(params[f"run_id.{arch}"]) for arch in architectures}
    return from_training_runs(client, runs, float(params["diminishing_returns_tolerance"]))


def latest_training_runs(client: MlflowClient, experiment: str) -> dict[str, Run]:
    """Where no report ran (runs trained elsewhere and imported): per recipe, its latest finished, evaluated
    training run that is a stage's own (the first seed; no convergence probe)."""
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`{PRIMARY_TAG}` = 'true' and "
                              "tags.evaluated = 'true' and attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=5000)
    latest: dict[str, Run] = {}
    for run in runs:
        tags = run.data.tags
        if tags.get("fmnist.stage", "").startswith("train@") and "fmnist.probe" not in tags:
            latest.setdefault(tags["arch"], run)
    if not latest:
        raise StoreError(f"experiment '{experiment}' has neither a finished report run nor finished, evaluated "
                         "training runs; run the pipeline first (or import runs: `fmnist runs import`)")
    return dict(sorted(latest.items()))


def from_training_runs(client: MlflowClient, runs: dict[str, Run], tolerance: float) -> ReportInputs:
    inputs = ReportInputs(list(runs), tolerance)
    for arch, run in runs.items():
        metrics, run_params = run.data.metrics, run.data.params
        summary = RunSummary.from_mlflow(metrics, run_params, run.data.tags)
        entry = leaderboard_entry(summary, metrics.get(f"{EVAL_PREFIX}test_acc"), int(run_params["n_test"]),
                                  run.info.run_id)
        inputs.entries.append({**entry, **spread_entry(seed_spread(client, run)),
                               "n_classes": sum(k.startswith(F1_PREFIX) for k in metrics) or None})
        inputs.histories[arch] = history_from_metrics(
            lambda key, run_id=run.info.run_id: ((m.step, m.value) for m in client.get_metric_history(run_id, key)))
        inputs.rules[arch] = StopRule.from_params(run_params)
        inputs.summaries[arch] = summary
    return inputs


F1_PREFIX = f"{EVAL_PREFIX}test_f1."  # one per class the evaluate stage scored


def classes_evaluated(eval_figures_dir: Path | None, arch: str) -> int | None:
    """How many classes the evaluate stage scored `arch` on: the rows of its per_class.csv (as many as its
    `final_test_f1.*` metrics in MLflow); None when the file is not there."""
    path = eval_figures_dir / arch / "per_class.csv" if eval_figures_dir is not None else None
    if path is None or not path.is_file():
        return None
    with open(path, newline="") as fh:
        return sum(1 for _ in csv.DictReader(fh)) or None


def seed_spread(client: MlflowClient, run: Run) -> SeedSpread | None:
    """The spread over the seeds trained by the stage run that trained `run` (its `fmnist.seed_group` tag):
    every finished run of the group, each seed's summary read back from its MLflow metrics, the same
    computation as the summary file's. None for a run without the tag (a record from before seeds)."""
    group = run.data.tags.get(SEED_GROUP_TAG)
    if not group:
        return None
    runs = client.search_runs([run.info.experiment_id], filter_string=f"tags.`{SEED_GROUP_TAG}` = '{group}' "
                              "and attributes.status = 'FINISHED'", max_results=1000)
    return SeedSpread.of(RunSummary.from_mlflow(r.data.metrics, r.data.params, r.data.tags) for r in runs)
