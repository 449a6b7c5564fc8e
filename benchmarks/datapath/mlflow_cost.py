"""The cost of the per-epoch MLflow logging: a short training with and without logging the pipeline's
per-epoch record (`fmnist.core.runs.EpochRecord`, via `fmnist.tracking.log_epoch`) to a real run in
a temporary SQLite store; the logging calls are timed one by one."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
from torch import nn

from fmnist import tracking
from fmnist.core.runs import EpochRecord
from fmnist.training.devices import sync
from fmnist.training.runtime import Runtime

from .paths import endless
from .timing import LR, Setup, build_model, fresh_optimizer, progress, run_steps


@contextlib.contextmanager
def temporary_tracking_store() -> Iterator[Path]:
    """A fresh SQLite MLflow store in a temporary directory; the project's mlflow.db is never touched."""
    previous_env, previous_uri = os.environ.get("MLFLOW_TRACKING_URI"), mlflow.get_tracking_uri()
    with tempfile.TemporaryDirectory(prefix="bench-mlflow-") as tmp:
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        os.environ["MLFLOW_TRACKING_URI"] = uri  # fmnist.tracking.configure reads it first
        mlflow.set_tracking_uri(uri)
        try:
            yield Path(tmp)
        finally:
            if previous_env is None:
                os.environ.pop("MLFLOW_TRACKING_URI", None)
            else:
                os.environ["MLFLOW_TRACKING_URI"] = previous_env
            mlflow.set_tracking_uri(previous_uri)


def short_training(s: Setup, model: nn.Module, state: dict, log: Callable[[EpochRecord], None] | None
                   ) -> tuple[float, list[float], int]:
    """--mlflow-epochs 'epochs' of N batches; returns (wall seconds, seconds of each log call, images)."""
    n, epochs = s.timed_batches(s.args.mlflow_model), s.args.mlflow_epochs
    runtime = Runtime(s.device)
    optimizer = fresh_optimizer(model, state, s.args.seed)
    log_seconds, cumulative, images_total = [], 0.0, 0
    with endless(s.ours) as batches:
        run_steps(model, optimizer, runtime, batches, s.args.warmup_batches)
        sync(s.device)
        start = time.perf_counter()
        for epoch in range(1, epochs + 1):
            t0 = time.perf_counter()
            train_loss, train_acc, images = run_steps(model, optimizer, runtime, batches, n)
            seconds = time.perf_counter() - t0
            cumulative += seconds
            images_total += images
            # The pipeline's record; the val/test fields repeat the train figures (no evaluation here:
            # what a log call costs does not depend on the values).
            record = EpochRecord(epoch=epoch, train_loss=train_loss, train_acc=train_acc, val_loss=train_loss,
                                 val_acc=train_acc, test_loss=train_loss, test_acc=train_acc, lr=LR,
                                 epoch_seconds=seconds, cumulative_seconds=cumulative)
            if log is not None:
                t0 = time.perf_counter()
                log(record)
                log_seconds.append(time.perf_counter() - t0)
        return time.perf_counter() - start, log_seconds, images_total


@dataclass
class MlflowResult:
    wall_off: float
    wall_on: float
    log_seconds: list[float]
    run_setup: float  # tracked_run start + end, per run
    images: int

    @property
    def log_mean(self) -> float:
        return sum(self.log_seconds) / len(self.log_seconds)


def bench_mlflow(s: Setup) -> MlflowResult:
    model, state = build_model(s.args.mlflow_model, s.device, s.args.seed)
    off, on, logs, setups = [], [], [], []
    with temporary_tracking_store() as tmp:
        for _ in range(s.args.repeats):
            wall, _, images = short_training(s, model, state, log=None)
            off.append(wall)
            t0 = time.perf_counter()
            with tracking.tracked_run("bench-datapath", run_name="mlflow-overhead", root=tmp):
                t1 = time.perf_counter()
                wall, seconds, _ = short_training(s, model, state, log=tracking.log_epoch)
                t2 = time.perf_counter()
            setups.append((t1 - t0) + (time.perf_counter() - t2))
            on.append(wall)
            logs.extend(seconds)
    result = MlflowResult(min(off), min(on), logs, min(setups), images)
    progress(f"  MLflow: log_epoch {result.log_mean * 1e3:.1f} ms per call, wall off {result.wall_off:.2f} s, "
             f"on {result.wall_on:.2f} s")
    return result
