"""A run's record, in one place: per-epoch rows, the run summary, the evaluation, the pointer file
`run.json`, and the one mapping between these and MLflow keys. No torch, no MLflow.

Every producer (the training loop, the baseline fit, the benchmark) and every reader (evaluate, the
report from DVC outputs or from MLflow alone, the tests) goes through these types, so a column
added here appears everywhere it should.
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from fmnist.core.errors import OutputError
from fmnist.core.io import csv_text, read_json, write_json

# ---------------------------------------------------------------------------- per-epoch rows


@dataclass(frozen=True)
class EpochRecord:
    """One epoch of training, logged to MLflow as metrics with step=epoch and written as a CSV row.

    Timings cover training and validation; the optional test pass (for the epoch-vs-time table) is not
    counted in them but in test_seconds (None without a test pass, and on rows written before it was kept).
    A scikit-learn fit is one "epoch"; an SVC's margins give no loss (None)."""

    epoch: int
    train_acc: float
    val_acc: float
    epoch_seconds: float
    cumulative_seconds: float
    train_loss: float | None = None
    val_loss: float | None = None
    test_loss: float | None = None
    test_acc: float | None = None
    lr: float | None = None
    test_seconds: float | None = None

    def metrics(self) -> dict[str, float]:
        """MLflow metrics of this epoch (logged with step=epoch); absent values are left out."""
        return {k: float(v) for k, v in self.row().items() if k != "epoch"}

    def row(self) -> dict[str, Any]:
        """The set values, in EPOCH_COLUMNS order."""
        return {c: getattr(self, c) for c in EPOCH_COLUMNS if getattr(self, c) is not None}

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> EpochRecord:
        values = {c: row[c] for c in EPOCH_COLUMNS if row.get(c) not in (None, "")}
        values["epoch"] = int(values["epoch"])
        return cls(**{k: (v if k == "epoch" else float(v)) for k, v in values.items()})


# The history CSV's columns and the per-epoch MLflow metric names (with "epoch" as the step).
EPOCH_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "lr",
                 "epoch_seconds", "cumulative_seconds", "test_seconds")
EPOCH_METRICS = EPOCH_COLUMNS[1:]
# Columns every history has, empty where a recipe has no value (an SVC's losses): dvc.yaml's plots draw them from
# each file of metrics/history, and DVC refuses a file that lacks one. An empty cell draws nothing (no zero).
PLOTTED_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc")


def history_csv(history: list[EpochRecord]) -> str:
    """PLOTTED_COLUMNS and the columns that any row has, in EPOCH_COLUMNS order; a missing value is an empty cell."""
    rows = [r.row() for r in history]
    columns = [c for c in EPOCH_COLUMNS if c in PLOTTED_COLUMNS or any(c in row for row in rows)]
    return csv_text(columns, ([row.get(c) for c in columns] for row in rows))


def read_history(path: str | Path) -> list[EpochRecord]:
    path = Path(path)
    if not path.is_file():
        raise OutputError(f"{path}: history not found; run its train stage first (`dvc repro`)")
    with open(path, newline="") as fh:
        return [EpochRecord.from_row(row) for row in csv.DictReader(fh)]


def history_from_metrics(metric_history: Callable[[str], Iterable[tuple[int, float]]]) -> list[EpochRecord]:
    """Rebuild the rows from MLflow's per-epoch metrics: `metric_history(key)` yields (step, value)."""
    by_epoch: dict[int, dict] = {}
    for key in EPOCH_METRICS:
        for step, value in metric_history(key):
            by_epoch.setdefault(step, {"epoch": step})[key] = value
    return [EpochRecord.from_row(by_epoch[epoch]) for epoch in sorted(by_epoch)]


TIME_TO_THRESHOLDS = (0.90, 0.92, 0.93, 0.94, 0.95)


def time_to_accuracy(history: list[EpochRecord], thresholds=TIME_TO_THRESHOLDS) -> dict[str, float]:
    """`time_to_94` etc.: training seconds until the first epoch whose test accuracy reached 94%, as in
    the speed-run literature (absent when never reached or when test accuracy was not logged per epoch)."""
    out: dict[str, float] = {}
    for threshold in thresholds:
        hit = next((r for r in history if r.test_acc is not None and r.test_acc >= threshold), None)
        if hit is not None:
            out[f"time_to_{round(threshold * 100)}"] = hit.cumulative_seconds
            out[f"epoch_to_{round(threshold * 100)}"] = hit.epoch
    return out


# ---------------------------------------------------------------------------- the stopping rule


@dataclass(frozen=True)
class StopRule:
    """The early-stopping rule a run was trained under (the report recomputes its point from the history)."""

    monitor: str
    patience: int
    min_delta: float

    def describe(self) -> str:
        return (f"the epoch at which {self.monitor} had gone {self.patience} consecutive epochs without "
                f"improving by more than {self.min_delta:g}")

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> StopRule:
        """From a training run's MLflow params (the recipe, flattened as `recipe.*`)."""
        prefix = "recipe.early_stopping."
        return cls(params[prefix + "monitor"], int(params[prefix + "patience"]), float(params[prefix + "min_delta"]))


# ---------------------------------------------------------------------------- the run summary


@dataclass(frozen=True)
class RunSummary:
    """The figures of the model a run kept: `metrics/train/ARCH.json` and MLflow metrics of the run.

    `selected` says which model that is: the best-validation epoch, the SWA average, or a one-shot
    fit. `converged` is true when the early-stopping point was reached inside the budget (patience ran
    out) or the model is a one-shot fit; false means the budget cut the run."""

    arch: str
    kind: str
    num_params: int
    epochs_run: int
    best_epoch: int
    best_val_acc: float
    best_val_loss: float | None
    train_seconds: float
    seconds_to_best: float
    selected: str = "best_epoch"
    early_stop_epoch: int | None = None
    stopped_early: bool = False
    converged: bool = False
    selected_test_acc: float | None = None  # the kept model's test accuracy, scored while training
    time_to: dict[str, float] = field(default_factory=dict)  # time_to_90, epoch_to_90, ...
    extra: dict[str, float] = field(default_factory=dict)  # swa_* or fit_seconds

    def describe(self) -> str:
        return (f"{self.arch}: best val acc {self.best_val_acc:.4f} at epoch {self.best_epoch} of {self.epochs_run}, "
                f"{self.train_seconds:.1f} s")

    def to_dict(self) -> dict[str, Any]:
        """The JSON the train stage writes (flat: `dvc metrics show` reads one row)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("time_to", "extra")}
        return {**out, **self.time_to, **self.extra}

    def tags(self) -> dict[str, str]:
        """What is not a number: which model the run kept, as an MLflow tag."""
        return {SELECTED_TAG: self.selected}

    def metrics(self) -> dict[str, float]:
        """The numeric figures, logged as MLflow metrics of the training run (booleans as 0/1)."""
        return {k: float(v) for k, v in self.to_dict().items() if isinstance(v, (int, float)) and v is not None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunSummary:
        names = {f.name for f in fields(cls)} - {"time_to", "extra"}
        time_to = {k: v for k, v in data.items() if k.startswith(("time_to_", "epoch_to_"))}
        extra = {k: v for k, v in data.items() if k not in names and k not in time_to}
        return cls(**{k: data[k] for k in names if k in data}, time_to=time_to, extra=extra)

    @classmethod
    def from_mlflow(cls, metrics: Mapping[str, float], params: Mapping[str, str],
                    tags: Mapping[str, str] | None = None) -> RunSummary:
        """From a training run's MLflow metrics, params and tags (what `metrics()`, the params and `tags()`
        logged)."""
        ints = ("num_params", "epochs_run", "best_epoch", "early_stop_epoch")
        data: dict[str, Any] = {k: (int(v) if k in ints or k.startswith("epoch_to_") else v)
                                for k, v in metrics.items()
                                if not k.startswith(tuple(EPOCH_METRICS)) and not k.startswith(EVAL_PREFIX)}
        data.update({"arch": params["arch"], "kind": params.get("kind", "torch"),
                     "stopped_early": bool(metrics.get("stopped_early", 0.0)),
                     "converged": bool(metrics.get("converged", 0.0)),
                     "best_val_loss": metrics.get("best_val_loss"),
                     "selected": (tags or {}).get(SELECTED_TAG, "best_epoch")})
        return cls.from_dict(data)


def summarise(arch: str, kind: str, num_params: int, history: list[EpochRecord], best_epoch: int,
              early_stop_epoch: int | None = None, stopped_early: bool = False, selected: str = "best_epoch",
              converged: bool | None = None) -> RunSummary:
    """The summary of the run whose kept model is epoch `best_epoch` of `history`."""
    best = history[best_epoch - 1]
    return RunSummary(arch=arch, kind=kind, num_params=num_params, epochs_run=len(history), best_epoch=best_epoch,
                      best_val_acc=best.val_acc, best_val_loss=best.val_loss,
                      train_seconds=history[-1].cumulative_seconds, seconds_to_best=best.cumulative_seconds,
                      selected=selected, early_stop_epoch=early_stop_epoch, stopped_early=stopped_early,
                      converged=early_stop_epoch is not None if converged is None else converged,
                      selected_test_acc=best.test_acc, time_to=time_to_accuracy(history))


def with_average(summary: RunSummary, swa: Mapping[str, float]) -> RunSummary:
    """The summary when the kept model is the SWA average scored after the last epoch."""
    seconds = summary.train_seconds + swa["swa_bn_seconds"]
    return dataclasses.replace(summary, selected="swa", best_epoch=summary.epochs_run,
                               best_val_acc=swa["swa_val_acc"], best_val_loss=swa["swa_val_loss"],
                               train_seconds=seconds, seconds_to_best=seconds, extra={**summary.extra, **swa},
                               selected_test_acc=swa.get("swa_test_acc"))


def write_summary(path: str | Path, summary: RunSummary) -> Path:
    return write_json(path, summary.to_dict())


def read_summary(path: str | Path) -> RunSummary:
    return RunSummary.from_dict(_read(path))


# ---------------------------------------------------------------------------- evaluation


EVAL_PREFIX = "final_"
SELECTED_TAG = "fmnist.selected"  # MLflow metric names of the evaluate stage, on the training run


@dataclass(frozen=True)
class Evaluation:
    """The evaluate stage's test figures: `metrics/eval/ARCH.json`, and `final_*` metrics in MLflow."""

    test_acc: float
    test_macro_f1: float
    n_test: int
    test_loss: float | None = None  # an SVC's margins give no likelihood
    f1: dict[str, float] = field(default_factory=dict)  # per class, slugged names

    def describe(self, arch: str) -> str:
        return f"{arch}: test acc {self.test_acc:.4f}, macro F1 {self.test_macro_f1:.4f}"

    def to_dict(self) -> dict[str, Any]:
        return {"test_loss": self.test_loss, "test_acc": self.test_acc, "test_macro_f1": self.test_macro_f1,
                "n_test": self.n_test}

    def metrics(self) -> dict[str, float]:
        out = {f"{EVAL_PREFIX}test_acc": self.test_acc, f"{EVAL_PREFIX}test_macro_f1": self.test_macro_f1}
        if self.test_loss is not None:
            out[f"{EVAL_PREFIX}test_loss"] = self.test_loss
        return {**out, **{f"{EVAL_PREFIX}test_f1.{name}": value for name, value in self.f1.items()}}


def write_evaluation(path: str | Path, evaluation: Evaluation) -> Path:
    return write_json(path, evaluation.to_dict())


def read_evaluation(path: str | Path) -> Evaluation:
    data = _read(path)
    return Evaluation(data["test_acc"], data["test_macro_f1"], int(data["n_test"]), data.get("test_loss"))


# ---------------------------------------------------------------------------- the pointer file run.json


@dataclass(frozen=True)
class RunPointer:
    """`models/ARCH/run.json`: which MLflow run a model directory belongs to, and how it was scored."""

    run_id: str
    experiment: str
    arch: str
    tracking_uri: str
    early_stopping: StopRule
    test_subset_size: int | None = None  # evaluate scores the same stratified test subset as training
    test_subset_seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "experiment": self.experiment, "arch": self.arch,
                "tracking_uri": self.tracking_uri, "early_stopping": dataclasses.asdict(self.early_stopping),
                "test_subset": {"size": self.test_subset_size, "seed": self.test_subset_seed}}


POINTER_FILE = "run.json"


def write_pointer(model_dir: str | Path, pointer: RunPointer) -> Path:
    return write_json(Path(model_dir) / POINTER_FILE, pointer.to_dict())


def read_pointer(model_dir: str | Path) -> RunPointer:
    path = Path(model_dir) / POINTER_FILE
    data = _read(path)
    try:
        subset = data.get("test_subset") or {}
        return RunPointer(data["run_id"], data["experiment"], data["arch"], data["tracking_uri"],
                          StopRule(**data["early_stopping"]), subset.get("size"), subset.get("seed", 0))
    except (KeyError, TypeError) as err:
        raise OutputError(f"{path}: not a run pointer written by the train stage ({err!r} missing or wrong); "
                          "re-run its train stage") from None


# ---------------------------------------------------------------------------- the leaderboard row


LEADERBOARD_COLUMNS = ["arch", "kind", "num_params", "epochs_run", "converged", "best_epoch", "best_val_acc",
                       "test_acc", "n_test", "train_seconds", "run_id"]


def leaderboard_entry(summary: RunSummary, test_acc: float | None, n_test: int | None, run_id: str) -> dict:
    """One leaderboard row, whether the run was read from DVC outputs or from MLflow."""
    row = summary.to_dict()
    row.update({"test_acc": test_acc, "n_test": n_test, "run_id": run_id})
    return {c: row.get(c) for c in LEADERBOARD_COLUMNS}


def _read(path: str | Path) -> dict:
    data = read_json(path)
    if not isinstance(data, dict):
        raise OutputError(f"{path}: expected a JSON object; re-run the stage that writes it")
    return data
