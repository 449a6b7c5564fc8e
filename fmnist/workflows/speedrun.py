"""`fmnist speedrun RECIPE`: a record attempt. Every seed of a fixed recipe timed by the speed-run rules
(fmnist.training.speedrun), each logged as an MLflow run under one parent run of the attempt, and the table of
time and accuracy (mean ± std over n seeds) printed.

The speed runs go to the profile's experiment with "-speedrun" added, so the training runs' comparison stays
as it was. `time_to_N` on a training run stays what it is: a per-epoch diagnostic.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import torch

from fmnist import tracking
from fmnist.core.config import RecipeRun, to_flat_dict
from fmnist.core.errors import ConfigError
from fmnist.core.io import file_sha256, read_json
from fmnist.data.prepare import load_arrays, stratified_subset
from fmnist.data.tensors import DeviceDataset, Normalizer
from fmnist.training.plan import plan_run
from fmnist.training.speedrun import SpeedResult, SpeedRun, check_speed_recipe

GROUP_TAG = "fmnist.speedrun.group"
DATA_CHOICES = {"all": "data/prepared/train.npz", "split": "data/split/train.npz"}  # 60,000 or 54,000 images


@dataclass
class Attempt:
    recipe: str
    device: str
    data: str
    n_train: int
    warmup_seconds: float
    results: list[SpeedResult]
    wall_seconds: float = 0.0
    parent_run_id: str | None = None

    def summary(self) -> dict[str, float]:
        times, accs = [r.seconds for r in self.results], [r.test_acc for r in self.results]
        spread = (lambda v: statistics.stdev(v) if len(v) > 1 else 0.0)  # noqa: E731
        return {"speedrun_seconds_mean": statistics.fmean(times), "speedrun_seconds_std": spread(times),
                "speedrun_test_acc_mean": statistics.fmean(accs), "speedrun_test_acc_std": spread(accs),
                "speedrun_n": float(len(self.results)), "warmup_seconds": self.warmup_seconds}

    def table(self) -> str:
        s = self.summary()
        lines = [f"Speed run of {self.recipe} on {self.device}: {self.n_train:,} training images ({self.data}), "
                 "the last epoch's model scored on all 10,000 test images", "",
                 "| seed | seconds | test acc |", "| --- | --- | --- |"]
        lines += [f"| {r.seed} | {r.seconds:.1f} | {r.test_acc:.4f} |" for r in self.results]
        lines += [f"| **mean ± std (n={len(self.results)})** | **{s['speedrun_seconds_mean']:.1f} ± "
                  f"{s['speedrun_seconds_std']:.1f}** | **{s['speedrun_test_acc_mean']:.4f} ± "
                  f"{s['speedrun_test_acc_std']:.4f}** |", "",
                  f"Warm-up (first steps and a test pass, once): {self.warmup_seconds:.1f} s. Wall time from the "
                  f"command to this table: {self.wall_seconds:.0f} s."]
        if self.parent_run_id:
            lines.append(f"MLflow: parent run {self.parent_run_id} (one child run per seed).")
        return "\n".join(lines)


def load_data(data: str, root: Path, device: torch.device, train_subset: int | None = None,
              subset_seed: int = 42) -> tuple[DeviceDataset, DeviceDataset, Normalizer, list]:
    """The training images (all, or the recipe's stratified subset of them) and every test image: a record is
    scored on the whole test set, whatever the recipe's eval_subset."""
    if data not in DATA_CHOICES:
        raise ConfigError(f"--data: got {data!r}, allowed: {', '.join(DATA_CHOICES)} (all 60,000 training images, "
                          "or the split's 54,000)")
    train_file, test_file = root / DATA_CHOICES[data], root / "data/prepared/test.npz"
    for path in (train_file, test_file):
        if not path.is_file():
            raise ConfigError(f"{path}: not found; prepare the data first (`dvc repro split`)")
    stats = read_json(root / "data/prepared/stats.json")
    train = DeviceDataset.from_arrays(stratified_subset(load_arrays(train_file), train_subset, subset_seed), device)
    test = DeviceDataset.from_arrays(load_arrays(test_file), device)
    return train, test, Normalizer(stats["mean"], stats["std"]), stats["classes"]


def speed_record(run: RecipeRun, seeds: list[int], data: str = "all", root: Path = Path("."), log: bool = True,
                 echo=print) -> Attempt:
    started = time.perf_counter()
    plan = plan_run(run, seeds[0])  # every check before any work
    if plan.runtime is None:
        raise ConfigError(f"recipes.{run.name}: a scikit-learn baseline is one fit, not a schedule to time")
    check_speed_recipe(run.name, run.recipe)
    if plan.train.threads:
        torch.set_num_threads(plan.train.threads)
    if log:
        tracking.configure(root)
    train, test, normalize, classes = load_data(data, root, plan.device, run.recipe.train_subset, run.train.seed)
    recipe = run.recipe.model_copy(update={"model": plan.model_options})
    speed = SpeedRun(recipe, train, test, normalize, plan.runtime, len(classes), plan.train.deterministic)
    warmup = speed.warm_up()
    echo(f"{run.name}: warm-up {warmup:.1f} s; {len(seeds)} seed(s) of {recipe.epochs} epochs on {len(train):,} "
         f"images, {plan.runtime.precision} on {plan.device}")
    attempt = Attempt(run.name, str(plan.device), data, len(train), warmup, [])
    if not log:
        return _time_seeds(speed, seeds, attempt, echo, started)
    tags = {**tracking.base_tags(f"speedrun@{run.name}", {data: file_sha256(root / DATA_CHOICES[data])}, root),
            **tracking.environment_tags(str(plan.device)), "arch": run.name, "network": run.recipe.network,
            "profile": run.profile, GROUP_TAG: f"{run.name}-{int(time.time())}"}
    with tracking.tracked_run(f"{run.experiment}-speedrun", run_name=f"speedrun {run.name}", tags=tags,
                              root=root) as parent:
        attempt.parent_run_id = parent.info.run_id
        tracking.log_params({**{f"recipe.{k}": v for k, v in to_flat_dict(recipe).items()}, "data": data,
                             "n_train": len(train), "seeds": ",".join(map(str, seeds)),
                             "precision_used": plan.runtime.precision})
        _time_seeds(speed, seeds, attempt, echo, started, tags)
        mlflow.log_metrics(attempt.summary())
        mlflow.log_metric("wall_seconds", time.perf_counter() - started)
        mlflow.log_text(attempt.table(), "speedrun.md")
    return attempt


def _time_seeds(speed: SpeedRun, seeds: list[int], attempt: Attempt, echo, started: float,
                tags: dict[str, str] | None = None) -> Attempt:
    for seed in seeds:
        result = speed.run(seed)
        attempt.results.append(result)
        echo(f"seed {seed}: {result.seconds:.1f} s, test acc {result.test_acc:.4f}")
        if tags is not None:
            _log_seed(result, tags)
    attempt.wall_seconds = time.perf_counter() - started
    return attempt


def _log_seed(result: SpeedResult, tags: dict[str, str]) -> None:
    parent = mlflow.active_run().info
    with mlflow.start_run(run_name=f"seed {result.seed}", nested=True, tags=tags,
                          experiment_id=parent.experiment_id):
        mlflow.log_param("seed", result.seed)
        for e in result.epochs:
            mlflow.log_metrics({"train_loss": e.train_loss, "train_acc": e.train_acc, "lr": e.lr,
                                "cumulative_seconds": e.seconds}, step=e.epoch)
        mlflow.log_metrics({"speedrun_seconds": result.seconds, "speedrun_test_acc": result.test_acc,
                            "speedrun_test_loss": result.test_loss})
