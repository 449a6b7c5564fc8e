"""Train recipes where neither MLflow nor DVC is installed (an air-gapped GPU machine), with the pipeline's own
plans, trainers and test scoring, each run written as a run record that `fmnist runs import` replays into MLflow.

The records, not MLflow's own store, travel: MLflow's wheels (about 33 MB) and the data (about 31 MB) do not fit
together in what one call to such a machine carries, and a record is a few kilobytes a run.
"""

from __future__ import annotations

import os
import platform
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fmnist.core.config import Params, RecipeRun
from fmnist.core.errors import FmnistError, WeightsError
from fmnist.core.io import csv_text, dict_csv_text
from fmnist.core.runs import Evaluation, history_csv
from fmnist.core.seeds import PRIMARY_TAG, SEED_GROUP_TAG
from fmnist.data.fetch import fetch_all
from fmnist.data.prepare import Arrays, load_arrays, preprocess, split, stratified_subset
from fmnist.offline.records import WEIGHTS_TAG, Bundle, RecordLog, RunRecord
from fmnist.training.checkpoint import save_checkpoint
from fmnist.training.plan import RunPlan, plan_run, seeds_of
from fmnist.training.runtime import seed_everything
from fmnist.training.scoring import pixel_logits, score_predictions
from fmnist.workflows.fit_data import TrainPaths, load_fit_data

STAGE_TAG = "fmnist.stage"  # the tag tracking.STAGE_TAG names (tracking imports MLflow)
OFFLINE_TAG = "fmnist.offline.host"
CONVERGED_BY_TAG = "fmnist.converged_by"


@dataclass
class RunResult:
    recipe: str
    seed: int
    run_id: str | None
    status: str  # FINISHED, FAILED, SKIPPED
    val_acc: float | None = None
    test_acc: float | None = None
    epochs: int = 0
    wall_seconds: float = 0.0
    note: str = ""


def prepare_data(raw_dir: Path, work: Path, params: Params) -> TrainPaths:
    """The download, preprocess and split stages' work, from a folder holding the four official files (verified
    against their published hashes), into `work`."""
    fetch_all(work / "raw", [], [str(raw_dir)], params.download.timeout_s, params.download.retries)
    preprocess(work / "raw", work / "prepared", params.preprocess.classes)
    split(work / "prepared" / "train.npz", work / "split", params.split.val_fraction, params.split.seed)
    return TrainPaths(work / "split", work / "prepared", work / "model", work / "summary.json", work / "history.csv")


def environment_tags(device: torch.device) -> dict[str, str]:
    """What the run actually used (the GPU machine's torch is not our pinned one)."""
    tags = {"torch_version": torch.__version__, "cuda_version": str(torch.version.cuda),
            "python_version": platform.python_version(), "platform": platform.platform(), "device": str(device),
            OFFLINE_TAG: socket.gethostname()}
    if device.type == "cuda":
        tags["device_name"] = torch.cuda.get_device_name(device)
    return tags


def evaluate_into(record: RunRecord, log: RecordLog, plan: RunPlan, classifier: torch.nn.Module, test_file: Path,
                  figures: bool, val: Arrays | None = None) -> Evaluation:
    """The evaluate stage's scoring of the kept model on the test set, into the run record (figures optional:
    drawing them costs seconds a run). With `val`, the logits of the validation and test images are kept too
    (evaluation/logits.npz), so models can be ensembled later, chosen on validation (`fmnist ensemble`)."""
    test = stratified_subset(load_arrays(test_file), plan.recipe.eval_subset, plan.train.seed)
    names = classifier.class_names
    device = plan.trainer.device(plan.train.device)
    test_logits = pixel_logits(classifier.to(device), test.x, device=device)
    report = score_predictions(test_logits, test.y, names)
    if val is not None:
        save_logits(log, pixel_logits(classifier, val.x, device=device), val.y, test_logits, test.y)
    classifier.cpu()
    evaluation = Evaluation(test_acc=report.accuracy, test_macro_f1=report.macro_f1, n_test=len(test),
                            test_loss=report.loss if getattr(classifier, "has_probabilities", True) else None,
                            f1={r["class"].lower(): r["f1"] for r in report.per_class})
    record.log_metrics(evaluation.metrics())
    record.set_tags({"evaluated": "true"})
    log.text(dict_csv_text(report.per_class, ["class", "precision", "recall", "f1", "support"]),
             "evaluation/per_class.csv")
    log.text(csv_text(["true \\ predicted", *names], ([n, *map(int, row)] for n, row in zip(names, report.confusion))),
             "evaluation/confusion_matrix.csv")
    if figures:
        _log_figures(log, plan.arch, report, test, names)
    return evaluation


def save_logits(log: RecordLog, val_logits: torch.Tensor, val_y, test_logits: torch.Tensor, test_y) -> None:
    scratch = Path(tempfile.mkdtemp(prefix="fmnist-logits-")) / "logits.npz"
    np.savez_compressed(scratch, val_logits=val_logits.numpy().astype(np.float16), val_y=val_y,
                        test_logits=test_logits.numpy().astype(np.float16), test_y=test_y)
    log.artifact(scratch, "evaluation")
    shutil.rmtree(scratch.parent, ignore_errors=True)


def _log_figures(log: RecordLog, arch: str, report, test, names: list[str]) -> None:
    from fmnist.reporting.figures import confusion_figure, misclassified_figure, save_figure

    scratch = Path(tempfile.mkdtemp(prefix="fmnist-offline-"))
    save_figure(confusion_figure(report.confusion, names, f"{arch}: test confusion matrix "
                                 f"(accuracy {report.accuracy:.4f})"), scratch / "confusion.png")
    wrong = report.misclassified(test.y, 36)
    save_figure(misclassified_figure(test.x[wrong], [names[i] for i in test.y[wrong]],
                                     [names[i] for i in report.predictions[wrong]],
                                     report.probabilities[wrong, report.predictions[wrong]],
                                     f"{arch}: most confident test mistakes"), scratch / "misclassified.png")
    for png in scratch.iterdir():
        log.artifact(png, "evaluation")
    shutil.rmtree(scratch, ignore_errors=True)


def train_seed(plan: RunPlan, paths: TrainPaths, bundle: Bundle, tags: dict[str, str], figures: bool = True
               ) -> RunResult:
    """One seed of one recipe, trained and scored, as one run record (FAILED with its one-line reason on error)."""
    start = time.perf_counter()
    seed_everything(plan.seed, plan.train.deterministic)
    data = load_fit_data(plan, paths)
    record = RunRecord(plan.experiment, plan.arch if plan.seed == plan.train.seed else f"{plan.arch} seed {plan.seed}")
    record.set_tags({**tags, STAGE_TAG: f"train@{plan.arch}", "arch": plan.arch, "network": plan.info.name,
                     "profile": plan.profile, "kind": plan.info.kind.value, **environment_tags(plan.device)})
    log = RecordLog(bundle, record)
    sizes = {"train": len(data.train), "val": len(data.val), "test": len(data.test)}
    log.params(plan.logged_params(sizes))
    staged = Path(tempfile.mkdtemp(prefix=f"fmnist-{plan.arch}-"))
    try:
        trained = plan.trainer.fit(plan, data, log, staged, None)
        record.log_metrics(trained.summary.metrics())
        record.set_tags(trained.summary.tags())
        log.text(history_csv(trained.history), "history.csv")
        save_checkpoint(bundle.checkpoint_file(record.run_id), arch=plan.arch, network=plan.info.name,
                        model_kwargs=plan.model_options, num_classes=len(data.class_names),
                        class_names=data.class_names, run_id=record.run_id, **trained.checkpoint)
        evaluation = evaluate_into(record, log, plan, trained.classifier, paths.prepared_dir / "test.npz", figures,
                                   data.val)
    except WeightsError:
        shutil.rmtree(bundle.run_dir(record.run_id), ignore_errors=True)  # nothing ran: no run to import
        raise
    except (FmnistError, RuntimeError) as err:  # a diverged loss, out of memory: this run fails, the part goes on
        record.set_tags({"fmnist.error": str(err).splitlines()[0][:500]})
        record.end("FAILED")
        bundle.save(record)
        return RunResult(plan.arch, plan.seed, record.run_id, "FAILED", wall_seconds=time.perf_counter() - start,
                         note=str(err).splitlines()[0][:200])
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    record.end("FINISHED")
    bundle.save(record)
    return RunResult(plan.arch, plan.seed, record.run_id, "FINISHED", trained.summary.best_val_acc,
                     evaluation.test_acc, trained.summary.epochs_run, time.perf_counter() - start)


def train_recipe(run: RecipeRun, paths: TrainPaths, bundle: Bundle, figures: bool = True,
                 on_result: Callable[[RunResult], None] = lambda r: None) -> list[RunResult]:
    """Every seed of the recipe's budget, one seed group as the train stage makes it; a recipe that cannot start
    (its pretrained weights are missing) is one SKIPPED line."""
    plans = [plan_run(run, seed) for seed in seeds_of(run)]  # every check before any work
    group = f"{run.name}-{os.urandom(6).hex()}"
    results = []
    for plan in plans:
        tags = {SEED_GROUP_TAG: group, PRIMARY_TAG: str(plan is plans[0]).lower(), "git_commit": bundle_commit(bundle),
                "mlflow.source.git.commit": bundle_commit(bundle)}
        try:
            result = train_seed(plan, paths, bundle, tags, figures and plan is plans[0])
        except WeightsError as err:
            result = RunResult(run.name, plan.seed, None, "SKIPPED", note=str(err).splitlines()[0])
            results.append(result)
            on_result(result)
            break
        results.append(result)
        on_result(result)
    return results


def bundle_commit(bundle: Bundle) -> str:
    return bundle.manifest().get("commit", "unknown")


def half_budget(run: RecipeRun) -> RecipeRun:
    """The same recipe on half its epochs and one seed: the convergence probe."""
    recipe = run.recipe.model_copy(update={"epochs": max(1, run.recipe.epochs // 2), "seeds": 1})
    return run.model_copy(update={"recipe": recipe})


def ends_by_design(run: RecipeRun) -> bool:
    """A schedule that anneals to its end (one-cycle, cosine) or averages its last epochs always looks flat at
    its end, so its own curve cannot tell converged from cut."""
    recipe = run.recipe
    return recipe.scheduler.name in ("onecycle", "cosine") or recipe.swa.enabled


def convergence_verdict(full_val: float, half_val: float, full_epochs: int, half_epochs: int,
                        tolerance: float) -> tuple[bool, str]:
    """Converged when doubling the schedule (half -> full) gained less than the report's tolerance: returns
    diminish, so a further doubling would gain less still. Otherwise cut: a longer schedule may pay."""
    gain = full_val - half_val
    converged = gain < tolerance
    return converged, (f"half-budget probe: val acc {half_val:.4f} at {half_epochs} epochs, {full_val:.4f} at "
                       f"{full_epochs} (gain {gain:+.4f} {'<' if converged else '>='} tolerance {tolerance}): "
                       f"{'converged' if converged else 'cut'}")


def mark_convergence(bundle: Bundle, run_ids: list[str], converged: bool, reason: str) -> None:
    """The report reads `converged` from the run's metrics: the probe's verdict replaces the curve's."""
    for record in bundle.records():
        if record.run_id in run_ids:
            record.metrics = [m for m in record.metrics if m.key != "converged"]
            record.log_metrics({"converged": float(converged)})
            record.set_tags({CONVERGED_BY_TAG: reason})
            bundle.save(record)


def leave_weights_behind(bundle: Bundle, keep: set[str], reason: Callable[[str], str]) -> list[str]:
    """Drop every run's weights but those kept, tagging their runs with why (the registry then says so)."""
    dropped = []
    for record in bundle.records():
        folder = bundle.checkpoint_file(record.run_id).parent
        if record.run_id in keep or not folder.is_dir():
            continue
        record.set_tags({WEIGHTS_TAG: f"left behind: {reason(record.run_id)}"})
        bundle.save(record)
        shutil.rmtree(folder)
        dropped.append(record.run_id)
    return dropped


def rows_table(results: list[RunResult]) -> str:
    lines = ["| recipe | seed | status | epochs | val acc | test acc | wall (s) | note |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        val = f"{r.val_acc:.4f}" if r.val_acc is not None else ""
        test = f"{r.test_acc:.4f}" if r.test_acc is not None else ""
        lines.append(f"| {r.recipe} | {r.seed} | {r.status} | {r.epochs} | {val} | {test} | {r.wall_seconds:.1f} "
                     f"| {r.note} |")
    return "\n".join(lines)


def log_line(message: str) -> None:
    print(message, file=sys.stderr, flush=True)



