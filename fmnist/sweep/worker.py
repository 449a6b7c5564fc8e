"""One `fmnist sweep worker`: a process that takes trials from the study until it has its count, each trial a
training of the recipe with the trial's keys, in an MLflow run of its own (the sweep's experiment, tagged with the
sweep and the trial; a seed grid's runs also share a seed group, as a train stage's seeds do), reporting the
validation accuracy of every epoch to the trial so that the pruner can stop it.

Pinned by its launcher: --gpu sets CUDA_VISIBLE_DEVICES before CUDA starts, --threads torch's CPU threads.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import mlflow
import optuna
from optuna.trial import TrialState

from fmnist import tracking
from fmnist.core.errors import ConfigError, DataError
from fmnist.core.io import file_sha256
from fmnist.core.seeds import PRIMARY_TAG, SEED_GROUP_TAG
from fmnist.sweep import study as studies
from fmnist.sweep.space import Dimension, with_keys
from fmnist.workflows.fit_data import TrainPaths

log = logging.getLogger("fmnist")
STATE_TAG = "fmnist.sweep.state"  # COMPLETE or PRUNED (the run itself ends FINISHED either way)
STORE_OUTAGE_S = 300  # how long a worker waits for the study's database to come back
RETRY_S = 2.0  # between tries of a write to the study's database while it is away
T = TypeVar("T")


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
        through_outage(lambda: self.trial.report(record.val_acc, record.epoch), f"trial {self.trial.number}'s report")
        if self.prune and record.epoch < self.epochs and through_outage(self.trial.should_prune, "the pruner"):
            raise optuna.TrialPruned(f"epoch {record.epoch}: best validation accuracy below the median of the "
                                     "complete trials at this epoch")


class Objective:
    def __init__(self, spec: studies.Spec, paths: TrainPaths, root: Path, study_name: str):
        self.spec, self.paths, self.root, self.study_name = spec, paths, root, study_name
        self.run_ids: dict[int, str] = {}  # trial number -> its MLflow run, as started here

    def taken_over(self, number: int) -> None:
        """Another worker failed this trial while it ran here (its retry runs there): the run says so."""
        from fmnist.tracking.stale import END_REASON_TAG

        log.warning("sweep %s: trial %d was failed by the heartbeat rule while it ran here (a frozen process or a "
                    "long database outage); its retry runs elsewhere and this result is dropped", self.study_name,
                    number)
        if number in self.run_ids:
            client = mlflow.MlflowClient()
            client.set_tag(self.run_ids[number], STATE_TAG, "FAIL")
            client.set_tag(self.run_ids[number], END_REASON_TAG, f"sweep trial {number} was failed by the heartbeat "
                           "rule while it ran; retried as another trial")

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
            self.run_ids[trial.number] = active.info.run_id
            through_outage(lambda: trial.set_user_attr("mlflow_run_id", active.info.run_id), "the trial's run id")
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
            studies.reconcile(study, spec)  # dead trials failed (and retried) before a new one is asked for
            run_trial(study, objective, spec.heartbeat_s)
            ran, outage_since = ran + 1, None
        except Exception as err:  # noqa: BLE001 (only the storage's own failures are waited out)
            if not _storage_failure(err):
                raise
            outage_since = outage_since or time.monotonic()
            if time.monotonic() - outage_since > STORE_OUTAGE_S:
                raise
            log.warning("sweep %s: the study's database failed (%s); retrying in 5 s", name, _reason(err))
            time.sleep(5)
    return ran


def run_trial(study: optuna.Study, objective: Objective, heartbeat_s: float) -> None:
    """One trial as `study.optimize` runs it, but with a heartbeat that outlives a database restart and told with
    skip_if_finished: a trial that another worker failed meanwhile (its heartbeat looked stopped: a frozen process,
    an outage longer than the grace period) stays failed, its retry runs there, and this worker goes on."""
    with warnings.catch_warnings():  # Optuna warns that a heartbeat outside study.optimize is unusual: ours is here
        warnings.filterwarnings("ignore", "Heartbeat of storage is supposed to be used with Study.optimize")
        trial = study.ask()
    with Heartbeat(study, trial, heartbeat_s):
        value, state = None, TrialState.FAIL
        try:
            value, state = objective(trial), TrialState.COMPLETE
        except optuna.TrialPruned:
            state = TrialState.PRUNED
        except optuna.exceptions.UpdateFinishedTrialError:
            objective.taken_over(trial.number)
            return
        except ConfigError as err:  # keys the recipe refuses: this trial fails, the sweep goes on
            log.warning("sweep %s: trial %d failed: %s", study.study_name, trial.number, err)
        except BaseException:
            with contextlib.suppress(Exception):
                study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            raise
        told = through_outage(lambda: study.tell(trial, value, state=state, skip_if_finished=True), "the trial's end")
    if told.state != state:
        objective.taken_over(trial.number)


class Heartbeat:
    """The trial's heartbeat, written by a thread while it runs. Optuna's own (inside `study.optimize`) ends at the
    first write that fails, so after a database restart a live trial looked dead, and was failed and run again."""

    def __init__(self, study: optuna.Study, trial: optuna.Trial, interval: float):
        # No public way: Optuna runs a trial's heartbeat only inside study.optimize.
        self.storage, self.trial_id = study._storage, trial._trial_id  # noqa: SLF001
        self.interval, self.stopped = interval, threading.Event()
        self.thread = threading.Thread(target=self._beat, name=f"heartbeat of trial {trial.number}", daemon=True)

    def _beat(self) -> None:
        failing_since = None
        while True:
            try:
                self.storage.record_heartbeat(self.trial_id)
                if failing_since is not None:
                    log.warning("sweep: %s written again after %.0f s", self.thread.name,
                                time.monotonic() - failing_since)
                failing_since, wait = None, self.interval
            except Exception as err:  # noqa: BLE001
                if not _storage_failure(err):
                    raise
                if failing_since is None:
                    failing_since = time.monotonic()
                    log.warning("sweep: %s not written (%s); trying every %g s", self.thread.name, _reason(err),
                                min(RETRY_S, self.interval))
                wait = min(RETRY_S, self.interval)  # beat again as soon as the database is back
            if self.stopped.wait(wait):
                return

    def __enter__(self) -> Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.thread.join(timeout=60)  # a write stuck on a vanished server must not hold the worker


def through_outage(call: Callable[[], T], what: str) -> T:
    """`call`, tried again every RETRY_S seconds while the study's database is away (up to STORE_OUTAGE_S), so that a
    restart in the middle of a trial costs a pause, not the trial."""
    since = time.monotonic()
    while True:
        try:
            return call()
        except Exception as err:
            if not _storage_failure(err) or time.monotonic() - since > STORE_OUTAGE_S:
                raise
            log.warning("sweep: %s: the study's database failed (%s); retrying in %g s", what, _reason(err), RETRY_S)
            time.sleep(RETRY_S)


def _chain(err: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while err is not None and err not in seen:
        seen.append(err)
        err = err.__cause__ or err.__context__
    return seen


def _storage_failure(err: BaseException) -> bool:
    import sqlalchemy.exc

    return any(isinstance(e, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError,
                              optuna.exceptions.StorageInternalError)) for e in _chain(err))


def _reason(err: BaseException) -> str:
    """The driver's own message (Optuna's wrapper only guesses at invalid data)."""
    import sqlalchemy.exc

    chain = _chain(err)
    said = next((e for e in chain if isinstance(e, sqlalchemy.exc.DBAPIError)), None) or chain[0]
    return (str(said.orig) if isinstance(said, sqlalchemy.exc.DBAPIError) else str(said)).strip().splitlines()[0][:160]
