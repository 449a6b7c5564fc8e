"""A sweep's study: its storage, what it searches (kept in the study, so a worker on any machine needs only the
code, the data and the database), the dead-trial rule, and its counts.

The storage is a database of its own, never MLflow's: Optuna and MLflow both keep alembic's version table
(mlflow issue 3374), so one database cannot hold both schemas. PostgreSQL (`fmnist server start` runs one; the
database is created on first use) for workers on several machines, a SQLite file for one machine.

A trial's process that dies (SIGKILL, a lost machine, a frozen process) stops its heartbeat; the next worker
to start a trial, or `fmnist sweep status`, fails it after the grace period, closes its MLflow run as KILLED and
enqueues a retry with the same params (Optuna's RetryFailedTrialCallback): no pid or host check is involved.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from fmnist.core.config import RecipeRun
from fmnist.core.errors import ConfigError, StoreError
from fmnist.sweep.space import SweepConfig

log = logging.getLogger("fmnist")
STORAGE_ENV = "FMNIST_SWEEP_STORAGE"
SWEEP_TAG, TRIAL_TAG = "fmnist.sweep", "fmnist.sweep.trial"  # on every trial's MLflow run
HEARTBEAT_S = 10  # Optuna's heartbeat; a trial silent for GRACE_FACTOR heartbeats is dead
GRACE_FACTOR = 3
MAX_RETRY = 2  # a trial whose worker died runs again at most this many times
ALIVE = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)


def storage_url(given: str | None, root: Path = Path(".")) -> str:
    """--storage, else $FMNIST_SWEEP_STORAGE, else a SQLite file under .fmnist/; postgresql:// uses psycopg 3."""
    url = given or os.environ.get(STORAGE_ENV) or f"sqlite:///{(root / '.fmnist' / 'sweeps.db').resolve()}"
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if not url.startswith(("sqlite:///", "postgresql+psycopg://")):
        raise ConfigError(f"sweep storage {url!r}: give sqlite:///PATH (one machine) or postgresql://USER@HOST:PORT/DB "
                          "(workers on several machines)")
    return url


def _engine_kwargs(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 60}}  # workers' writes queue for the file's lock
    return {"pool_pre_ping": True, "pool_size": 2, "max_overflow": 2}  # survives a restart; few connections each


def ensure_database(url: str) -> None:
    """Create the sweep's PostgreSQL database on first use (connecting to the server's `postgres` database)."""
    if not url.startswith("postgresql"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return
    import psycopg
    from sqlalchemy.engine import make_url

    parts = make_url(url)
    try:
        with psycopg.connect(host=parts.host, port=parts.port, user=parts.username, password=parts.password,
                             dbname="postgres", autocommit=True, connect_timeout=10) as db:
            if db.execute("select 1 from pg_database where datname = %s", (parts.database,)).fetchone() is None:
                db.execute(f'create database "{parts.database}"')
    except psycopg.Error as err:
        raise StoreError(f"sweep storage {parts.render_as_string(hide_password=True)}: {str(err).strip()[:200]}; "
                         "start the server (fmnist server start) or fix --storage") from None


def _refuse_mlflow_database(url: str) -> None:
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, **_engine_kwargs(url))
    try:
        tables = set(sqlalchemy.inspect(engine).get_table_names())
    except sqlalchemy.exc.OperationalError as err:
        raise StoreError(f"sweep storage {engine.url.render_as_string(hide_password=True)} is not reachable "
                         f"({str(err).splitlines()[0][:160]}); start it or fix --storage") from None
    finally:
        engine.dispose()
    if {"experiments", "runs", "metrics"} <= tables:
        raise ConfigError(f"sweep storage {engine.url.render_as_string(hide_password=True)} holds MLflow's tables; "
                          "give the sweep a database of its own (both schemas use alembic_version: mlflow issue 3374)")


def open_storage(url: str, heartbeat_s: int | None = None, tracking_uri: str | None = None) -> RDBStorage:
    _refuse_mlflow_database(url)
    if heartbeat_s is None:
        return RDBStorage(url, engine_kwargs=_engine_kwargs(url))
    with _quiet():
        return RDBStorage(url, engine_kwargs=_engine_kwargs(url), heartbeat_interval=heartbeat_s,
                          grace_period=heartbeat_s * GRACE_FACTOR,
                          heartbeat_stale_trial_callback=DeadTrial(tracking_uri))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Optuna calls its heartbeat experimental (since 2.8): the warning would repeat at every command."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


@dataclass(frozen=True)
class Spec:
    """What a study runs, as `fmnist sweep create` stored it in the study's user attributes."""

    kind: str  # "search" or "seeds"
    run: RecipeRun  # the recipe as its profile runs it
    sweep: SweepConfig
    trials: int  # the study's count: COMPLETE and PRUNED trials (a dead one's retry replaces it)
    seeds: list[int]
    keys: dict[str, Any]  # seeds: the recipe keys every seed runs with (a search's best, or none)
    tracking_uri: str
    experiment: str
    heartbeat_s: int
    data_sha256: dict[str, str]

    def attrs(self) -> dict[str, Any]:
        return {"kind": self.kind, "run": self.run.model_dump(mode="json"), "sweep": self.sweep.model_dump(mode="json"),
                "trials": self.trials, "seeds": self.seeds, "keys": self.keys, "tracking_uri": self.tracking_uri,
                "experiment": self.experiment, "heartbeat_s": self.heartbeat_s, "data_sha256": self.data_sha256}

    @classmethod
    def of(cls, study: optuna.Study) -> Spec:
        a = study.user_attrs
        return cls(a["kind"], RecipeRun.model_validate(a["run"]), SweepConfig.model_validate(a["sweep"]), a["trials"],
                   a["seeds"], a["keys"], a["tracking_uri"], a["experiment"], a["heartbeat_s"], a["data_sha256"])


def create(name: str, url: str, spec: Spec) -> optuna.Study:
    """A new study holding `spec`; a seed grid's trials are enqueued now, one per seed."""
    ensure_database(url)
    storage = open_storage(url)
    if name in {s.study_name for s in optuna.get_all_study_summaries(storage)}:
        raise ConfigError(f"a study named '{name}' already exists in {_shown(url)}; start its workers "
                          f"(fmnist sweep worker {name}) or pick another name with --study")
    pruner = (optuna.pruners.MedianPruner(spec.sweep.pruner.startup_trials, spec.sweep.pruner.warmup_epochs + 1)
              if spec.kind == "search" and spec.sweep.pruner.enabled else optuna.pruners.NopPruner())
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize", pruner=pruner)
    for key, value in spec.attrs().items():
        study.set_user_attr(key, value)
    for seed in spec.seeds if spec.kind == "seeds" else []:
        study.enqueue_trial({"seed": seed})
    return study


def load(name: str, url: str, with_heartbeat: bool = True) -> tuple[optuna.Study, Spec]:
    """The study and its spec; with the heartbeat (and its dead-trial rule) as the study was created with."""
    storage = open_storage(url)
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        known = ", ".join(s.study_name for s in optuna.get_all_study_summaries(storage)) or "(none)"
        raise ConfigError(f"no study '{name}' in {_shown(url)} (it has {known}); create it: fmnist sweep create "
                          "NAME") from None
    spec = Spec.of(study)
    if with_heartbeat:
        storage.engine.dispose()  # one engine per process: its pool is the worker's whole share of connections
        study = optuna.load_study(study_name=name, storage=open_storage(url, spec.heartbeat_s, spec.tracking_uri),
                                  pruner=study.pruner)
    return study, spec


def _shown(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


class DeadTrial:
    """Optuna's stale-trial callback: the dead trial's MLflow run closed as KILLED (found by its sweep and trial
    tags, whichever machine ran it), then a retry enqueued with the same params."""

    def __init__(self, tracking_uri: str | None):
        self.tracking_uri = tracking_uri
        with _quiet():
            self.retry = RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        log.warning("sweep %s: trial %d's heartbeat stopped (worker gone); retrying it", study.study_name, trial.number)
        if self.tracking_uri:
            close_trial_runs(study.study_name, self.tracking_uri, {trial.number})
        self.retry(study, trial)


def close_trial_runs(study_name: str, tracking_uri: str, numbers: set[int] | None = None) -> int:
    """Close as KILLED the RUNNING MLflow runs of this sweep's trials `numbers` (None: every RUNNING one)."""
    from mlflow import MlflowClient

    from fmnist.tracking.stale import END_REASON_TAG

    client = MlflowClient(tracking_uri)
    query = f"tags.`{SWEEP_TAG}` = '{study_name}' and attributes.status = 'RUNNING'"
    closed = 0
    for run in client.search_runs([e.experiment_id for e in client.search_experiments()], query, max_results=1000):
        number = int(run.data.tags.get(TRIAL_TAG, "-1"))
        if numbers is not None and number not in numbers:
            continue
        client.set_tag(run.info.run_id, END_REASON_TAG, f"sweep trial {number}'s heartbeat stopped; closed by "
                       f"{socket.gethostname()} pid {os.getpid()}")
        client.set_terminated(run.info.run_id, "KILLED")
        closed += 1
    return closed


def reconcile(study: optuna.Study, spec: Spec) -> int:
    """Fail the trials whose heartbeat stopped (their runs closed, retries enqueued), then close any RUNNING run of
    the sweep whose trial is no longer RUNNING (a callback cut short): nothing stays RUNNING once its worker is gone."""
    with _quiet():
        optuna.storages.fail_stale_trials(study)
    running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    every = {t.number for t in study.get_trials(deepcopy=False)}
    return close_trial_runs(study.study_name, spec.tracking_uri, every - running)


def has_work(study: optuna.Study, spec: Spec) -> bool:
    """A trial is waiting (a seed, a retry), or fewer than the study's count are complete, pruned or running."""
    trials = study.get_trials(deepcopy=False, states=ALIVE)
    return any(t.state == TrialState.WAITING for t in trials) or len(trials) < spec.trials


def running(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


def counts(study: optuna.Study) -> dict[str, int]:
    out = {state.name: 0 for state in TrialState}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] += 1
    return out


def summary(study: optuna.Study, spec: Spec) -> str:
    c = counts(study)
    shown = ", ".join(f"{k.lower()} {v}" for k, v in c.items() if v)
    lines = [f"study {study.study_name} ({spec.kind}, {spec.run.name} on the {spec.run.profile} profile): "
             f"{shown or 'no trials yet'}; MLflow experiment {spec.experiment}"]
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if spec.kind == "seeds" and done:
        import statistics

        values = [t.value for t in done]
        std = f" ± {statistics.stdev(values):.4f}" if len(values) > 1 else ""
        lines.append(f"best validation accuracy over {len(values)} seeds: {statistics.fmean(values):.4f}{std}")
    elif done:
        best = study.best_trial
        lines.append(f"best: trial {best.number}, validation accuracy {best.value:.4f}, "
                     f"{json.dumps(best.params, sort_keys=True)}")
    return "\n".join(lines)
