"""Train one architecture: plan the run, load its data, fit with its trainer inside a tracked MLflow
run, and write the stage's outputs (checkpoint, pointer file, summary, history)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mlflow
import torch

from fmnist import tracking
from fmnist.core.config import Params
from fmnist.core.io import atomic_write_text, file_sha256, read_json
from fmnist.core.runs import RunPointer, RunSummary, history_csv, write_pointer, write_summary
from fmnist.data.prepare import load_arrays, stratified_subset
from fmnist.models.wrapper import pixels_to_input
from fmnist.training.checkpoint import CHECKPOINT_FILE, save_checkpoint
from fmnist.training.plan import RunPlan, plan_run
from fmnist.training.runtime import seed_everything
from fmnist.training.trainers import FitData


@dataclass(frozen=True)
class TrainPaths:
    split_dir: Path  # train.npz, val.npz
    prepared_dir: Path  # test.npz, stats.json
    model_dir: Path  # model.pt, run.json
    metrics_file: Path  # summary metrics (dvc metrics)
    history_file: Path  # per-epoch CSV (dvc plots)

    @classmethod
    def for_arch(cls, arch: str, split_dir: Path = Path("data/split"), prepared_dir: Path = Path("data/prepared"),
                 model_dir: Path | None = None, metrics_file: Path | None = None,
                 history_file: Path | None = None) -> "TrainPaths":
        """The pipeline's layout (dvc.yaml's), with any path overridden."""
        return cls(split_dir, prepared_dir, model_dir or Path("models") / arch,
                   metrics_file or Path("metrics/train") / f"{arch}.json",
                   history_file or Path("metrics/history") / f"{arch}.csv")

    def inputs(self) -> dict[str, Path]:
        return {"train": self.split_dir / "train.npz", "val": self.split_dir / "val.npz",
                "test": self.prepared_dir / "test.npz"}


def load_fit_data(plan: RunPlan, paths: TrainPaths) -> FitData:
    """The budget's stratified subsets of the split; validation and test subsets as evaluate scores them."""
    arrays = {name: load_arrays(path) for name, path in paths.inputs().items()}
    stats = read_json(paths.prepared_dir / "stats.json")
    subset = {"train": plan.budget.train_subset, "val": plan.budget.eval_subset, "test": plan.budget.eval_subset}
    arrays = {name: stratified_subset(a, subset[name], plan.seed) for name, a in arrays.items()}
    return FitData(arrays["train"], arrays["val"], arrays["test"], stats["classes"], stats["mean"], stats["std"],
                   test_each_epoch=plan.train.log_test_each_epoch)


def train_architecture(params: Params, arch: str, paths: TrainPaths, root: Path = Path(".")) -> RunSummary:
    plan = plan_run(params, arch)  # every check that can fail does so here, before any work
    if plan.train.threads:
        torch.set_num_threads(plan.train.threads)
    seed_everything(plan.seed, plan.train.deterministic)
    data = load_fit_data(plan, paths)
    return run_training(plan, data, paths, root)


def run_training(plan: RunPlan, data: FitData, paths: TrainPaths, root: Path = Path(".")) -> RunSummary:
    tags = tracking.base_tags(f"train@{plan.arch}", {k: file_sha256(p) for k, p in paths.inputs().items()}, root)
    tags.update(tracking.environment_tags(str(plan.device)))
    tags.update({"arch": plan.arch, "profile": plan.profile, "kind": plan.info.kind.value})
    with tracking.tracked_run(plan.experiment, run_name=plan.arch, tags=tags, root=root) as run:
        sizes = {"train": len(data.train), "val": len(data.val), "test": len(data.test)}
        tracking.log_params(plan.logged_params(sizes))
        trained = plan.trainer.fit(plan, data, tracking.ActiveRunLog(), paths.model_dir)
        mlflow.log_metrics(trained.summary.metrics())
        save_checkpoint(paths.model_dir / CHECKPOINT_FILE, arch=plan.arch, model_kwargs=plan.model_options,
                        num_classes=len(data.class_names), class_names=data.class_names, run_id=run.info.run_id,
                        **trained.checkpoint)
        example = pixels_to_input(data.val.x[:4]).numpy()
        tracking.log_classifier(trained.classifier, example, requirements=trained.requirements)
        history = history_csv(trained.history)
        atomic_write_text(paths.history_file, history)
        mlflow.log_text(history, "history.csv")
        write_summary(paths.metrics_file, trained.summary)
        write_pointer(paths.model_dir, RunPointer(
            run_id=run.info.run_id, experiment=plan.experiment, arch=plan.arch,
            tracking_uri=mlflow.get_tracking_uri(), early_stopping=plan.stop_rule,
            test_subset_size=plan.budget.eval_subset, test_subset_seed=plan.seed))
    return trained.summary
