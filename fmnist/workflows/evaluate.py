"""Evaluate one trained architecture on the untouched test set, logged to its training run."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from mlflow import MlflowClient

from fmnist import tracking
from fmnist.checkpoint import classifier_from_checkpoint, load_checkpoint
from fmnist.config import Params
from fmnist.data.prepare import load_arrays, stratified_subset
from fmnist.evaluation import TestReport, pixel_logits, score_predictions
from fmnist.models.wrapper import NormalizedClassifier
from fmnist.devices import resolve_device
from fmnist.io import atomic_write_text, csv_text, dict_csv_text, read_json, write_json
from fmnist.reporting.figures import confusion_figure, misclassified_figure, save_figure


@dataclass(frozen=True)
class EvalPaths:
    model_dir: Path  # model.pt, run.json from train
    test_file: Path
    metrics_file: Path  # dvc metrics
    confusion_csv: Path  # dvc plots (actual, predicted per test image)
    figures_dir: Path  # confusion.png, misclassified.png, per_class.csv


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_").lower()


def _confusion_rows(labels: np.ndarray, predictions: np.ndarray, names: list[str]) -> str:
    return csv_text(["actual", "predicted"], ((names[a], names[p]) for a, p in zip(labels, predictions)))


def _per_class_csv(report: TestReport) -> str:
    return dict_csv_text(report.per_class, ["class", "precision", "recall", "f1", "support"])


def _matrix_csv(matrix: np.ndarray, names: list[str]) -> str:
    return csv_text(["true \\ predicted", *names], ([name, *map(int, row)] for name, row in zip(names, matrix)))


def evaluate_architecture(params: Params, arch: str, paths: EvalPaths, root: Path = Path(".")) -> dict:
    run_file = paths.model_dir / "run.json"
    run_info = read_json(run_file)
    run_id = run_info["run_id"]
    tracking.configure(root)
    client = MlflowClient()
    tracking.existing_run(client, run_id, run_file)  # fail before any work if the store lost it
    ckpt = load_checkpoint(paths.model_dir / "model.pt")
    subset = run_info.get("test_subset") or {}
    test = stratified_subset(load_arrays(paths.test_file), subset.get("size"), subset.get("seed", 0))
    names = ckpt["class_names"]
    model = classifier_from_checkpoint(ckpt)
    # A network scores on the training device (ResNets on 10,000 images are slow on a CPU); estimators on the CPU.
    device = resolve_device(params.train.device) if isinstance(model, NormalizedClassifier) else torch.device("cpu")
    report = score_predictions(pixel_logits(model.to(device), test.x, device=device), test.y, names)

    # Per-class figures go to per_class.csv: the metrics file stays one readable row for `dvc metrics show`.
    # An SVC's margins give a prediction but no likelihood: no loss then, as in training.
    loss = report.loss if getattr(model, "has_probabilities", True) else None
    metrics = {"test_loss": loss, "test_acc": report.accuracy, "test_macro_f1": report.macro_f1,
               "n_test": len(test)}
    confusion_png = paths.figures_dir / "confusion.png"
    misclassified_png = paths.figures_dir / "misclassified.png"
    save_figure(confusion_figure(report.confusion, names, f"{arch}: test confusion matrix "
                                 f"(accuracy {report.accuracy:.4f})"), confusion_png)
    wrong = report.misclassified(test.y, params.evaluate.misclassified)
    save_figure(misclassified_figure(test.x[wrong], [names[i] for i in test.y[wrong]],
                                     [names[i] for i in report.predictions[wrong]],
                                     report.probabilities[wrong, report.predictions[wrong]],
                                     f"{arch}: most confident test mistakes"), misclassified_png)
    per_class = _per_class_csv(report)
    atomic_write_text(paths.figures_dir / "per_class.csv", per_class)
    atomic_write_text(paths.confusion_csv, _confusion_rows(test.y, report.predictions, names))

    tracking.log_to_finished_run(
        client, run_id,
        metrics={**({"final_test_loss": loss} if loss is not None else {}), "final_test_acc": report.accuracy,
                 "final_test_macro_f1": report.macro_f1,
                 **{f"final_test_f1.{_slug(r['class'])}": r["f1"] for r in report.per_class}},
        artifacts=[(confusion_png, "evaluation"), (misclassified_png, "evaluation")],
        texts={"evaluation/per_class.csv": per_class,
               "evaluation/confusion_matrix.csv": _matrix_csv(report.confusion, names)},
        tags={"evaluated": "true"})
    write_json(paths.metrics_file, metrics)
    return metrics
