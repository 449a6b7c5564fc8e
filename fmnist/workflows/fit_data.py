"""Where a training's inputs and outputs are, and the data it fits on: shared by the pipeline's train stage and
the offline trainer (neither MLflow nor DVC here)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fmnist.core.io import read_json
from fmnist.data.prepare import load_arrays, stratified_subset
from fmnist.training.plan import RunPlan
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
                 history_file: Path | None = None) -> TrainPaths:
        """The pipeline's layout (dvc.yaml's), with any path overridden."""
        return cls(split_dir, prepared_dir, model_dir or Path("models") / arch,
                   metrics_file or Path("metrics/train") / f"{arch}.json",
                   history_file or Path("metrics/history") / f"{arch}.csv")

    def for_seed(self, folder: Path) -> TrainPaths:
        """A later seed's outputs, in one folder: model/, summary.json, history.csv (the layout it keeps under
        the stage's `models/ARCH/seeds/SEED/`)."""
        return TrainPaths(self.split_dir, self.prepared_dir, folder / "model", folder / "summary.json",
                          folder / "history.csv")

    def inputs(self) -> dict[str, Path]:
        return {"train": self.split_dir / "train.npz", "val": self.split_dir / "val.npz",
                "test": self.prepared_dir / "test.npz"}


def load_fit_data(plan: RunPlan, paths: TrainPaths) -> FitData:
    """The recipe's stratified subsets of the split; validation and test subsets as evaluate scores them."""
    arrays = {name: load_arrays(path) for name, path in paths.inputs().items()}
    stats = read_json(paths.prepared_dir / "stats.json")
    subset = {"train": plan.recipe.train_subset, "val": plan.recipe.eval_subset, "test": plan.recipe.eval_subset}
    # Subsets drawn with train.seed, not the run's: every seed of a stage trains and is scored on the same images.
    arrays = {name: stratified_subset(a, subset[name], plan.train.seed) for name, a in arrays.items()}
    return FitData(arrays["train"], arrays["val"], arrays["test"], stats["classes"], stats["mean"], stats["std"],
                   test_each_epoch=plan.train.log_test_each_epoch)
