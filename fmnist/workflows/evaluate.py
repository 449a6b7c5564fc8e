"""Evaluate one trained architecture on the untouched test set, logged to its training run."""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
from mlflow import MlflowClient

from fmnist import tracking
from fmnist.core.config import EvaluateConfig, TrainConfig
from fmnist.core.errors import OutputError
from fmnist.core.io import atomic_write_bytes, atomic_write_text, csv_text, dict_csv_text
from fmnist.core.runs import POINTER_FILE, Evaluation, RunPointer, read_pointer, write_evaluation
from fmnist.data.prepare import Arrays, load_arrays, stratified_subset
from fmnist.reporting.figures import confusion_figure, misclassified_figure, save_figure
from fmnist.tracking.store import store_errors
from fmnist.training.checkpoint import CHECKPOINT_FILE, load_checkpoint
from fmnist.training.scoring import TestReport, pixel_logits, score_predictions
from fmnist.training.trainers import checkpoint_network, trainer_for


@dataclass(frozen=True)
class EvalPaths:
    model_dir: Path  # model.pt, run.json from train
    test_file: Path
    metrics_file: Path  # dvc metrics
    confusion_csv: Path  # dvc plots (actual, predicted per test image)
    figures_dir: Path  # confusion.png, misclassified.png, per_class.csv

    @classmethod
    def for_arch(cls, arch: str, model_dir: Path | None = None, test_file: Path = Path("data/prepared/test.npz"),
                 metrics_file: Path | None = None, confusion_csv: Path | None = None,
                 figures_dir: Path | None = None) -> EvalPaths:
        """The pipeline's layout (dvc.yaml's), with any path overridden."""
        return cls(model_dir or Path("models") / arch, test_file, metrics_file or Path("metrics/eval") / f"{arch}.json",
                   confusion_csv or Path("plots/confusion") / f"{arch}.csv", figures_dir or Path("reports/eval") / arch)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_").lower()


def _confusion_rows(labels: np.ndarray, predictions: np.ndarray, names: list[str]) -> str:
    return csv_text(["actual", "predicted"], ((names[a], names[p]) for a, p in zip(labels, predictions)))


def _per_class_csv(report: TestReport) -> str:
    return dict_csv_text(report.per_class, ["class", "precision", "recall", "f1", "support"])


def _matrix_csv(matrix: np.ndarray, names: list[str]) -> str:
    return csv_text(["true \\ predicted", *names], ([name, *map(int, row)] for name, row in zip(names, matrix)))


def check_belongs(arch: str, pointer: RunPointer, run, ckpt: dict, model_dir: Path) -> None:
    """The checkpoint, the pointer file and the MLflow run are one training's, of this architecture."""
    fix = f"re-run its training (`dvc repro --force train@{arch}`)"
    if ckpt.get("arch") != arch:
        raise OutputError(f"{model_dir / CHECKPOINT_FILE} is a checkpoint of '{ckpt.get('arch')}', not of '{arch}'; "
                          f"{fix}")
    if ckpt.get("run_id") != pointer.run_id:
        raise OutputError(f"{model_dir}: the checkpoint belongs to MLflow run {ckpt.get('run_id')} but run.json names "
                          f"{pointer.run_id}: outputs of two trainings are mixed; {fix}")
    tags = run.data.tags
    if pointer.arch != arch or tags.get("arch") != arch or tags.get(tracking.STAGE_TAG) != f"train@{arch}":
        raise OutputError(f"{model_dir / POINTER_FILE} names MLflow run {pointer.run_id}, which is not a training "
                          f"run of '{arch}' (its stage: {tags.get(tracking.STAGE_TAG)}); {fix}")
    if run.info.status != "FINISHED":
        raise OutputError(f"MLflow run {pointer.run_id} of '{arch}' is {run.info.status}, not FINISHED: its training "
                          f"did not complete; {fix}")


def evaluation_figures(arch: str, report: TestReport, test: Arrays, names: list[str], mistakes: int) -> tuple:
    """The test confusion matrix and the `mistakes` most confident wrong predictions, as figures."""
    confusion = confusion_figure(report.confusion, names, f"{arch}: test confusion matrix "
                                 f"(accuracy {report.accuracy:.4f})")
    wrong = report.misclassified(test.y, mistakes)
    return confusion, misclassified_figure(test.x[wrong], [names[i] for i in test.y[wrong]],
                                           [names[i] for i in report.predictions[wrong]],
                                           report.probabilities[wrong, report.predictions[wrong]],
                                           f"{arch}: most confident test mistakes")


def evaluate_architecture(arch: str, train: TrainConfig, settings: EvaluateConfig, paths: EvalPaths,
                          root: Path = Path(".")) -> Evaluation:
    """Score the stage's model of recipe `arch` on the test set, on the device its training ran on."""
    pointer = read_pointer(paths.model_dir)
    tracking.configure(root)
    client = MlflowClient()
    run = tracking.existing_run(client, pointer.run_id, paths.model_dir / POINTER_FILE)  # fail before any work
    ckpt = load_checkpoint(paths.model_dir / CHECKPOINT_FILE)
    check_belongs(arch, pointer, run, ckpt, paths.model_dir)
    test = stratified_subset(load_arrays(paths.test_file), pointer.test_subset_size, pointer.test_subset_seed)
    names = ckpt["class_names"]
    trainer = trainer_for(checkpoint_network(ckpt))
    model = trainer.classifier(ckpt)
    # A network scores on the training device (ResNets on 10,000 images are slow on a CPU); estimators on the CPU.
    device = trainer.device(train.device)
    report = score_predictions(pixel_logits(model.to(device), test.x, device=device), test.y, names)

    # Per-class figures go to per_class.csv: the metrics file stays one readable row for `dvc metrics show`.
    # An SVC's margins give a prediction but no likelihood: no loss then, as in training.
    evaluation = Evaluation(test_acc=report.accuracy, test_macro_f1=report.macro_f1, n_test=len(test),
                            test_loss=report.loss if getattr(model, "has_probabilities", True) else None,
                            f1={_slug(r["class"]): r["f1"] for r in report.per_class})
    scratch = Path(tempfile.mkdtemp(prefix="fmnist-eval-"))  # figures join the outputs once the run has them
    confusion_png, misclassified_png = scratch / "confusion.png", scratch / "misclassified.png"
    confusion, mistakes = evaluation_figures(arch, report, test, names, settings.misclassified)
    save_figure(confusion, confusion_png)
    save_figure(mistakes, misclassified_png)
    per_class = _per_class_csv(report)
    with store_errors(mlflow.get_tracking_uri()):  # into the run first: a store failure leaves no new files
        tracking.log_to_finished_run(
            client, pointer.run_id, metrics=evaluation.metrics(),
            artifacts=[(confusion_png, "evaluation"), (misclassified_png, "evaluation")],
            texts={"evaluation/per_class.csv": per_class,
                   "evaluation/confusion_matrix.csv": _matrix_csv(report.confusion, names)},
            tags={"evaluated": "true"})
    for png in (confusion_png, misclassified_png):
        atomic_write_bytes(paths.figures_dir / png.name, png.read_bytes())
    shutil.rmtree(scratch, ignore_errors=True)
    atomic_write_text(paths.figures_dir / "per_class.csv", per_class)
    atomic_write_text(paths.confusion_csv, _confusion_rows(test.y, report.predictions, names))
    write_evaluation(paths.metrics_file, evaluation)
    return evaluation
