"""`fmnist speedrun RECIPE`: a record attempt. Every seed of a fixed recipe timed by the speed-run rules
(fmnist.training.speedrun), each logged as an MLflow run under one parent run of the attempt, and the table of
time and accuracy (mean ± std over n seeds) printed.

The speed runs go to the profile's experiment with "-speedrun" added, so the training runs' comparison stays
as it was. `time_to_N` on a training run stays what it is: a per-epoch diagnostic.
"""

from __future__ import annotations

import time
from pathlib import Path

import mlflow

from fmnist import tracking
from fmnist.core.config import RecipeRun, to_flat_dict
from fmnist.core.io import file_sha256
from fmnist.training.speedrun import (
    DATA_CHOICES,
    GROUP_TAG,
    Attempt,
    SpeedResult,
    check_attempt,
    prepare_attempt,
    time_seeds,
)


def speed_record(run: RecipeRun, seeds: list[int], data: str = "all", root: Path = Path("."), log: bool = True,
                 echo=print) -> Attempt:
    started = time.perf_counter()
    check_attempt(run, seeds, data, root)  # every check before the store is touched
    if log:
        tracking.configure(root)
    plan, speed, attempt = prepare_attempt(run, seeds, data, root, echo)
    if not log:
        return time_seeds(speed, seeds, attempt, started, echo)
    tags = {**tracking.base_tags(f"speedrun@{run.name}", {data: file_sha256(root / DATA_CHOICES[data])}, root),
            **tracking.environment_tags(str(plan.device)), "arch": run.name, "network": run.recipe.network,
            "profile": run.profile, GROUP_TAG: f"{run.name}-{int(time.time())}"}
    with tracking.tracked_run(f"{run.experiment}-speedrun", run_name=f"speedrun {run.name}", tags=tags,
                              root=root, system_metrics=True) as parent:
        attempt.parent_run_id = parent.info.run_id
        tracking.log_params({**{f"recipe.{k}": v for k, v in to_flat_dict(speed.recipe).items()}, "data": data,
                             "n_train": attempt.n_train, "seeds": ",".join(map(str, seeds)),
                             "precision_used": plan.runtime.precision})
        time_seeds(speed, seeds, attempt, started, echo, lambda result: _log_seed(result, tags))
        mlflow.log_metrics(attempt.summary())
        mlflow.log_metric("wall_seconds", time.perf_counter() - started)
        mlflow.log_text(attempt.table(), "speedrun.md")
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
