"""Where report tables come from: the DVC stage outputs, or MLflow alone (no files needed)."""

from __future__ import annotations

import csv
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

from fmnist.io import read_json
from fmnist.reporting.tables import HISTORY_COLUMNS, ReportInputs, StopRule

REPORT_STAGE = "report"


def read_history(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items() if v != ""}
                for row in csv.DictReader(fh)]


def from_outputs(architectures: list[str], tolerance: float, models_dir: Path, train_metrics_dir: Path,
                 eval_metrics_dir: Path, history_dir: Path) -> ReportInputs:
    inputs = ReportInputs(list(architectures), tolerance)
    for arch in architectures:
        run = read_json(models_dir / arch / "run.json")
        summary = read_json(train_metrics_dir / f"{arch}.json")
        evaluation = read_json(eval_metrics_dir / f"{arch}.json")
        inputs.entries.append({**summary, "test_acc": evaluation["test_acc"], "n_test": evaluation["n_test"],
                               "run_id": run["run_id"]})
        inputs.histories[arch] = read_history(history_dir / f"{arch}.csv")
        inputs.rules[arch] = StopRule(**run["early_stopping"])
    return inputs


def find_report_run(client: MlflowClient, experiment: str, run_id: str | None = None) -> Run:
    """The report run `run_id`, or the latest finished report run of `experiment`."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = ", ".join(e.name for e in client.search_experiments()) or "(none)"
        raise ValueError(f"no MLflow experiment '{experiment}' at this tracking URI; experiments here: {names}")
    if run_id:
        try:
            run = client.get_run(run_id)
        except MlflowException as err:
            raise ValueError(f"no run {run_id} at this tracking URI; leave out --run-id for the latest "
                             "report run") from err
        problem = None
        if run.data.tags.get("fmnist.stage") != REPORT_STAGE:
            problem = f"is not a report run (its fmnist.stage tag is {run.data.tags.get('fmnist.stage')!r})"
        elif run.info.experiment_id != exp.experiment_id:
            problem = f"belongs to another experiment than '{experiment}'"
        elif run.info.status != "FINISHED":
            problem = f"did not finish (status {run.info.status}), so its tables are incomplete"
        if problem:
            raise ValueError(f"run {run_id} {problem}; pass the id of a finished run named 'report' "
                             f"in '{experiment}', or leave out --run-id for the latest")
        return run
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`fmnist.stage` = '{REPORT_STAGE}' "
                              "and attributes.status = 'FINISHED'", order_by=["attributes.start_time DESC"],
                              max_results=1)
    if not runs:
        raise ValueError(f"experiment '{experiment}' has no finished report run; run the pipeline first")
    return runs[0]


def _history_from_mlflow(client: MlflowClient, run_id: str) -> list[dict]:
    by_epoch: dict[int, dict] = {}
    for key in HISTORY_COLUMNS[1:]:
        for metric in client.get_metric_history(run_id, key):
            by_epoch.setdefault(metric.step, {"epoch": metric.step})[key] = metric.value
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]


def from_mlflow(client: MlflowClient, report_run: Run) -> ReportInputs:
    params = report_run.data.params
    architectures = params["architectures"].split(",")
    inputs = ReportInputs(architectures, float(params["diminishing_returns_tolerance"]))
    for arch in architectures:
        run = client.get_run(params[f"run_id.{arch}"])
        m, p = run.data.metrics, run.data.params
        inputs.entries.append({
            "arch": arch, "kind": p.get("kind", "torch"), "num_params": int(m["num_params"]), "epochs_run": int(m["epochs_run"]),
            "best_epoch": int(m["best_epoch"]), "best_val_acc": m["best_val_acc"],
            "test_acc": m.get("final_test_acc"), "n_test": int(p["n_test"]), "train_seconds": m["train_seconds"], "run_id": run.info.run_id,
        })
        inputs.histories[arch] = _history_from_mlflow(client, run.info.run_id)
        inputs.rules[arch] = StopRule(monitor=p["recipe.early_stopping.monitor"],
                                      patience=int(p["recipe.early_stopping.patience"]),
                                      min_delta=float(p["recipe.early_stopping.min_delta"]))
    return inputs
