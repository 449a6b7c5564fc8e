"""One `fmnist sweep worker`: a process that takes trials from the study until it has its count, each trial a
training of the recipe with the trial's keys, in an MLflow run of its own (the sweep's experiment, tagged with the
sweep and the trial; a seed grid's runs also share a seed group, as a train stage's seeds do), reporting the
validation accuracy of every epoch to the trial so that the pruner can stop it.

Pinned by its launcher: --gpu sets CUDA_VISIBLE_DEVICES before CUDA starts, --threads torch's CPU threads.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path

import mlflow
import optuna

from fmnist import tracking
from fmnist.core.errors import ConfigError, DataError
from fmnist.core.io import file_sha256
from fmnist.core.seeds import PRIMARY_TAG, SEED_GROUP_TAG
from fmnist.sweep import study as studies
from fmnist.sweep.space import Dimension, with_keys
from fmnist.workflows.fit_data import TrainPaths

log = logging.getLogger("fmnist")
STATE_TAG = "fmnist.sweep.state"  # COMPLETE or PRUNED (the run itself ends FINISHED either way)
STORE_OUTAGE_S = 300  # how long a worker waits for the study's database to come back between trials


def suggest(trial: optuna.Trial, space: dict[str, Dimension]) -> dict[str, object]:
    """The trial's value of every dimension, as dotted recipe keys."""
    keys: dict[str, object] = {}
    for key, dim in space.items():
        if isinstance(dim.choices, dict):
            name = trial.suggest_categorical(key, list(dim.choices))
            keys.update({f"{key}.{k}": v for k, v in dim.choices[name].items()})
        elif dim.choices is not None:
            keys[key] = trial.suggest_categorical(key, dim.choices)
        elif dim.integer:
            keys[key] = trial.suggest_int(key, dim.low, dim.high, log=dim.log)
        else:
            keys[key] = trial.suggest_float(key, dim.low, dim.high, log=dim.log)
    return keys


class TrialLog(tracking.ActiveRunLog):
    """The run's per-epoch metrics, and each epoch's validation accuracy reported to the trial (the pruner's). The
    last epoch is never pruned: the training is done, so the trial counts as complete."""

    def __init__(self, trial: optuna.Trial, prune: bool, epochs: int):
        self.trial, self.prune, self.epochs = trial, prune, epochs

    def epoch(self, record) -> None:
        super().epoch(record)
        self.trial.report(record.val_acc, record.epoch)
        if self.prune and record.epoch < self.epochs and self.trial.should_prune():
            raise optuna.TrialPruned(f"epoch {record.epoch}: best validation accuracy below the median of the "
                                     "complete trials at this epoch")


class Objective:
    def __init__(self, spec: studies.Spec, paths: TrainPaths, root: Path, study_name: str):
        self.spec, self.paths, self.root, self.study_name = spec, paths, root, study_name

    def __call__(self, trial: optuna.Trial) -> float:
        from fmnist.training.plan import plan_run
        from fmnist.workflows.fit_data import load_fit_data

        spec, run = self.spec, self.spec.run
        if spec.kind == "seeds":
            seed, keys = trial.suggest_categorical("seed", spec.seeds), dict(spec.keys)
        else:
            seed, keys = run.train.seed, {**spec.sweep.fixed, **suggest(trial, spec.sweep.space)}
        recipe = with_keys(run.recipe, keys, f"sweep {self.study_name} trial {trial.number}")
        plan = plan_run(run.model_copy(update={"recipe": recipe}), seed)
        data = load_fit_data(plan, self.paths)
        tags = {**tracking.base_tags(f"sweep@{run.name}", spec.data_sha256, self.root),
                **tracking.environment_tags(str(plan.device)), "arch": run.name, "network": plan.info.name,
                "profile": run.profile, "kind": plan.info.kind.value,
                studies.SWEEP_TAG: self.study_name, studies.TRIAL_TAG: str(trial.number)}
        if spec.kind == "seeds":  # read by the report's seed spread like a train stage's seeds
            tags.update({SEED_GROUP_TAG: self.study_name, PRIMARY_TAG: str(seed == min(spec.seeds)).lower()})
        pruned = None
        with tracking.tracked_run(spec.experiment, run_name=f"{self.study_name} #{trial.number}", tags=tags,
                                  root=self.root) as active:
            trial.set_user_attr("mlflow_run_id", active.info.run_id)
            sizes = {"train": len(data.train), "val": len(data.val), "test": len(data.test)}
            tracking.log_params({**plan.logged_params(sizes), **{f"sweep.{k}": v for k, v in trial.params.items()}})
            report = TrialLog(trial, spec.kind == "search", plan.recipe.epochs)
            with tempfile.TemporaryDirectory(prefix="fmnist-trial-") as scratch:
                try:
                    trained = plan.trainer.fit(plan, data, report, Path(scratch))
                except optuna.TrialPruned as stop:
                    pruned = stop
            mlflow.set_tag(STATE_TAG, "PRUNED" if pruned else "COMPLETE")
            if not pruned:
                mlflow.log_metrics(trained.summary.metrics())
                mlflow.set_tags(trained.summary.tags())
        if pruned:
            raise pruned
        return trained.summary.best_val_acc


def check_data(spec: studies.Spec, paths: TrainPaths) -> None:
    """The worker's data files are the ones the study was created with (a machine with another split would mix)."""
    for name, path in paths.inputs().items():
        if not path.is_file():
            raise DataError(f"{path}: missing; give this worker the split the study was created with (--split, "
                            "--prepared; `dvc repro split` makes it)")
        if file_sha256(path) != spec.data_sha256[name]:
            raise DataError(f"{path}: not the {name} data the study was created with (SHA-256 differs); give this "
                            "worker the same split (`dvc pull` or a copy)")


def run_worker(name: str, url: str, paths: TrainPaths, root: Path = Path("."), threads: int = 0,
               gpu: str | None = None, max_trials: int | None = None) -> int:
    """Trials until the study has its count (or `max_trials` here); returns how many this worker ran."""
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu  # before CUDA starts in this process
    import torch

    if threads:
        torch.set_num_threads(threads)
    study, spec = studies.load(name, url)
    check_data(spec, paths)
    os.environ["MLFLOW_TRACKING_URI"] = spec.tracking_uri  # the store the study names, whichever machine this is
    tracking.configure(root)
    studies.reconcile(study, spec)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    objective, ran, outage_since = Objective(spec, paths, root, name), 0, None
    while max_trials is None or ran < max_trials:
        try:
            if not studies.has_work(study, spec):
                if not studies.running(study):
                    break
                # Others' trials still run: wait for them, so that a dead one's retry is not left to nobody.
                studies.reconcile(study, spec)
                time.sleep(spec.heartbeat_s)
                continue
            study.optimize(objective, n_trials=1, catch=(ConfigError,))
            ran, outage_since = ran + 1, None
        except Exception as err:  # noqa: BLE001 (only the storage's own failures are waited out)
            if not _storage_failure(err):
                raise
            outage_since = outage_since or time.monotonic()
            if time.monotonic() - outage_since > STORE_OUTAGE_S:
                raise
            log.warning("sweep %s: the study's database failed (%s); retrying in 5 s", name,
                        str(err).splitlines()[0][:120])
            time.sleep(5)
    return ran


def _storage_failure(err: BaseException) -> bool:
    import sqlalchemy.exc

    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError,
                             optuna.exceptions.StorageInternalError)):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
