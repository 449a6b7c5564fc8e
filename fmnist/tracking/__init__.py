"""MLflow: runs with tags, per-epoch metrics, models and artifacts; runs always end with a status.

The embedded default is a SQLite store (`mlflow.db`) with artifacts in `mlartifacts/`, both at the
project root; an MLFLOW_TRACKING_URI in the environment wins.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Run, RunStatus, RunTag
from mlflow.exceptions import MlflowException

from fmnist.core.commit import git_commit
from fmnist.core.errors import StoreError, Terminated
from fmnist.core.runs import EpochRecord
from fmnist.tracking import system
from fmnist.tracking.journal import OutageTooLong, quick_calls
from fmnist.tracking.stale import process_tags
from fmnist.tracking.store import check_store, is_store_failure, schema_lock, sqlite_path, store_errors

STAGE_TAG = "fmnist.stage"


class _KnownPickleWarning(logging.Filter):
    """MLflow warns at every logged model that pickles can run code; we log pickles on purpose and check
    their SHA-256 before loading (tracking/trust.py), so the warning says nothing a user can act on."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Pickle or CloudPickle" not in record.getMessage()


logging.getLogger("mlflow.pytorch").addFilter(_KnownPickleWarning())


_VERIFIED: set[str] = set()  # tracking URIs this process has checked and whose schema exists


def configure(root: str | Path = ".", uri: str | None = None, must_exist: bool = False) -> str:
    """Point MLflow at `uri`, else the environment's tracking URI, else the embedded SQLite store under
    `root`. With `must_exist` (read-only commands), a SQLite store that is not there is an error rather
    than a new empty database."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(root).resolve() / 'mlflow.db'}"
    path = sqlite_path(uri)
    if must_exist and path is not None and not path.is_file():
        raise StoreError(f"no MLflow database at {path}; pass --tracking-uri, set MLFLOW_TRACKING_URI, or run "
                         "from the project root")
    mlflow.set_tracking_uri(uri)
    if uri not in _VERIFIED:  # once per process: a server probe costs a round trip
        check_store(uri)
        with store_errors(uri), schema_lock(uri):  # the first touch of a new store creates its tables
            MlflowClient().search_experiments(max_results=1)
        _VERIFIED.add(uri)
    return uri


def _artifact_location(uri: str, experiment: str) -> str | None:
    """Embedded SQLite store: artifacts in `mlartifacts/<experiment>/` beside the database.
    A tracking server decides for itself."""
    if uri.startswith("sqlite:///"):
        folder = re.sub(r"[^A-Za-z0-9_.-]+", "_", experiment)
        return (Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts" / folder).as_uri()
    return None


# Says what the experiment holds (model training, not GenAI traces). MLflow 3.17's UI no longer picks its pages
# from it: the links of `fmnist ui` (workflows/ui.py) carry workflowType=machine_learning for that.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def ensure_experiment(name: str) -> str:
    with schema_lock(mlflow.get_tracking_uri()):  # two first users of one experiment name
        return _ensure_experiment(name)


def _ensure_experiment(name: str) -> str:
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is None:
        try:
            return mlflow.create_experiment(name, artifact_location=_artifact_location(mlflow.get_tracking_uri(), name),
                                            tags=EXPERIMENT_KIND)
        except MlflowException as err:
            # Another process created it first: on a tracking server no lock of ours serialises them.
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            experiment = mlflow.get_experiment_by_name(name)
    if "mlflow.experimentKind" not in experiment.tags:
        MlflowClient().set_experiment_tag(experiment.experiment_id, *next(iter(EXPERIMENT_KIND.items())))
    return experiment.experiment_id


def environment_tags(device: str | None = None) -> dict[str, str]:
    import torch

    tags = {
        "torch_version": torch.__version__,
        "cuda_version": str(torch.version.cuda),
        "python_version": platform.python_version(),
        "mlflow_version": mlflow.__version__,
        "platform": platform.platform(),
        # Which GPUs this process was given (one per worker of a queue or a sweep) and its CPU threads.
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", "(unset)"),
        "torch_threads": str(torch.get_num_threads()),
    }
    if device is not None:
        tags["device"] = device
        if device.startswith("cuda"):
            tags["device_name"] = torch.cuda.get_device_name(0)
    return tags


def base_tags(stage: str, data_hashes: dict[str, str] | None = None, root: str | Path = ".") -> dict[str, str]:
    commit = git_commit(root)
    tags = {STAGE_TAG: stage, "git_commit": commit, "mlflow.source.git.commit": commit.removesuffix("-dirty")}
    for name, digest in (data_hashes or {}).items():
        tags[f"data_sha256.{name}"] = digest
    return tags


def _parent_run_id() -> str | None:
    # `mlflow run` exports MLFLOW_RUN_ID for its own run: our stage runs nest under it.
    return os.environ.pop("MLFLOW_RUN_ID", None)


@contextlib.contextmanager
def tracked_run(experiment: str, run_name: str | None = None, tags: dict[str, str] | None = None,
                root: str | Path = ".", resume_run_id: str | None = None,
                system_metrics: bool = False) -> Iterator[mlflow.ActiveRun]:
    """A run that ends FINISHED, FAILED on error, KILLED on Ctrl-C or SIGTERM: never left RUNNING by us;
    the host and pid it records let the next start find it if the process is killed outright.
    `resume_run_id` reopens that run (back to RUNNING) instead of starting a new one. `system_metrics`
    (training runs) samples the machine into the run unless FMNIST_SYSTEM_METRICS says off (tracking/system.py)."""
    log_system, system_tags = system.prepare() if system_metrics else (False, {})
    configure(root)
    all_tags = {**(tags or {}), **system_tags, **process_tags()}
    parent = _parent_run_id()
    if parent:
        all_tags["mlflow.parentRunId"] = parent
    previous = _install_sigterm()  # before the run exists, so no signal can leave it RUNNING
    try:
        experiment_id = ensure_experiment(experiment)
        if resume_run_id:
            run = mlflow.start_run(run_id=resume_run_id, log_system_metrics=log_system)
            mlflow.set_tags(all_tags)
        else:
            run = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=all_tags,
                                   log_system_metrics=log_system)
        yield run
    except (KeyboardInterrupt, Terminated):
        _end_active(RunStatus.KILLED)
        raise
    except MlflowException as err:
        _end_active(RunStatus.FAILED)
        if not is_store_failure(err):
            raise  # a bug of ours, not the store: keep the traceback
        raise StoreError(f"the tracking store {mlflow.get_tracking_uri()} failed during the run "
                         f"({str(err).splitlines()[0][:200]}); check its disk and that it is reachable, then run "
                         "again (it resumes)") from err
    except OutageTooLong:
        _end_active(RunStatus.FAILED, say_failure=False)  # its one line says what becomes of the run
        raise
    except BaseException:
        _end_active(RunStatus.FAILED)
        raise
    else:
        _end_active(RunStatus.FINISHED)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _end_active(status: int, say_failure: bool = True) -> None:
    if mlflow.active_run() is not None:
        try:
            # On the way out after an error, a store that does not answer gets seconds, not minutes of retries.
            with contextlib.nullcontext() if status == RunStatus.FINISHED else quick_calls():
                mlflow.end_run(RunStatus.to_string(status))
        except MlflowException:  # the store itself failed: `fmnist runs --close` closes the run later
            if say_failure:
                logging.getLogger("fmnist").warning("could not mark the MLflow run %s in the store",
                                                    RunStatus.to_string(status))


def existing_run(client: MlflowClient, run_id: str, recorded_in: str | Path) -> Run:
    """The run a stage output points at, or a clear error if this tracking store does not hold it."""
    try:
        run = client.get_run(run_id)
    except MlflowException as err:
        if err.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        raise StoreError(
            f"{recorded_in}: MLflow run {run_id} is not in the tracking store {mlflow.get_tracking_uri()} "
            "(was mlflow.db deleted, or MLFLOW_TRACKING_URI changed?). Re-run its training stage: "
            "`dvc repro --force train@ARCH`.") from None
    if run.info.lifecycle_stage != "active":
        raise StoreError(f"{recorded_in}: MLflow run {run_id} was deleted; restore it (`mlflow runs restore "
                         f"--run-id {run_id}`) or re-run its training stage (`dvc repro --force train@ARCH`)")
    return run


def log_to_finished_run(client: MlflowClient, run_id: str, metrics: dict[str, float],
                        artifacts: list[tuple[Path, str]], texts: dict[str, str], tags: dict[str, str]) -> None:
    """Add results to a finished run without reopening it, so its status stays as training left it."""
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
                     tags=[RunTag(k, v) for k, v in tags.items()])
    for path, artifact_dir in artifacts:
        client.log_artifact(run_id, str(path), artifact_dir)
    for artifact_file, text in texts.items():
        client.log_text(run_id, text, artifact_file)


def _install_sigterm() -> Any:
    def handler(signum, frame):  # noqa: ARG001
        raise Terminated(f"received signal {signum}")
    return signal.signal(signal.SIGTERM, handler)


def log_params(flat: dict[str, Any]) -> None:
    mlflow.log_params({k: ("null" if v is None else v) for k, v in flat.items()})


def log_epoch(record: EpochRecord) -> None:
    """Log one epoch's metrics with step=epoch, so the MLflow compare view overlays runs."""
    mlflow.log_metrics(record.metrics(), step=record.epoch)


def log_missing_epochs(run_id: str, rows: list[dict]) -> None:
    """After a resume: the epochs the saved state holds but the run did not log (killed in between)."""
    logged = {m.step for m in MlflowClient().get_metric_history(run_id, "val_acc")}
    for row in rows:
        if row["epoch"] not in logged:
            log_epoch(EpochRecord.from_row(row))


class ActiveRunLog:
    """What a trainer reports while it fits, into the active run (the `RunLog` trainers expect)."""

    def params(self, flat: dict[str, Any]) -> None:
        log_params(flat)

    def epoch(self, record: EpochRecord) -> None:
        log_epoch(record)

    def artifact(self, path: Path, artifact_dir: str) -> None:
        mlflow.log_artifact(str(path), artifact_dir)


def log_classifier(model: Any, input_example: Any, name: str = "model", requirements: list[str] = ()) -> Any:
    """Log a torch classifier with signature, input example, class names and this package's code, so
    `mlflow.pytorch.load_model` returns the same nn.Module (eval(), .class_names and all) anywhere
    torch is installed, and `mlflow models serve` serves it."""
    import mlflow.pytorch
    import numpy as np
    import torch
    from mlflow.models import infer_signature

    with torch.no_grad():
        output = model(torch.from_numpy(input_example)).numpy()
    signature = infer_signature(input_example, output.astype(np.float32))
    import cloudpickle

    pins = [f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}",
                    f"mlflow=={mlflow.__version__}", f"cloudpickle=={cloudpickle.__version__}",
                    *requirements]
    logged = mlflow.pytorch.log_model(
        model, name=name, signature=signature, input_example=input_example, serialization_format="pickle",
        code_paths=[str(Path(__file__).resolve().parents[1])],
        metadata={"class_names": list(getattr(model, "class_names", []))}, pip_requirements=pins,
    )
    from fmnist.tracking.trust import record_digest

    record_digest(logged.model_uri, mlflow.active_run().info.run_id)  # checked before it is ever unpickled
    return logged

