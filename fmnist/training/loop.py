"""The epoch loop: train, validate, (optionally) test, schedule, early-stop, average, keep the best weights."""

from __future__ import annotations

import copy
import dataclasses
import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from fmnist.core.recipe import RecipeConfig
from fmnist.core.runs import EpochRecord
from fmnist.core.stopping import EarlyStopping, mode_for
from fmnist.data.tensors import BatchAugment, DeviceDataset, Normalizer, eval_batches, train_batches
from fmnist.training.devices import sync
from fmnist.training.optim import LrSchedule, WeightAverager, build_optimizer, phase_start_epoch, recompute_batch_norm
from fmnist.training.runtime import Runtime
from fmnist.training.steps import DivergenceWatch, StepRules, evaluate, train_steps

EpochCallback = Callable[[EpochRecord], None]


@runtime_checkable
class Finetunable(Protocol):
    """A model with a frozen backbone whose named stages can be unfrozen for a second phase."""

    finetune_stages: tuple[str, ...]

    def begin_finetune(self, stages: Iterable[str]) -> None: ...


@dataclass
class FitResult:
    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int | None = None
    best_value: float | None = None
    early_stop_epoch: int | None = None
    stopped_early: bool = False
    best_state: dict | None = None
    swa: dict | None = None  # val (and test) figures of the averaged model, when SWA ran

    @property
    def epochs_run(self) -> int:
        return len(self.history)


def _plain_batches(data: DeviceDataset, batch_size: int, normalize: Normalizer, runtime: Runtime
                   ) -> Iterable[torch.Tensor]:
    # batch norm cannot train on a single image: a trailing batch of one is left out
    return (runtime.prepare_input(x) for x, _ in eval_batches(data, batch_size, normalize) if len(x) > 1)


class Fitter:
    """The state of one training run between epochs, so it can be saved after every epoch and resumed.

    `state_dict()` holds everything the next epoch depends on: weights, optimiser, schedule, SWA
    average, early-stopping state, the data-order and augmentation generator, torch's, NumPy's and
    Python's global generators (and the CUDA ones, once CUDA is in use: Shake-Shake draws from them),
    fp16's loss scale, the history and the best weights so far. Resuming from it gives the same epochs,
    bit for bit on the CPU, as never stopping. It holds references to live tensors: copy it before
    training goes on (`resume.snapshot`).
    """

    def __init__(self, model: nn.Module, recipe: RecipeConfig, epochs: int, train: DeviceDataset, val: DeviceDataset,
                 normalize: Normalizer, generator: torch.Generator, test: DeviceDataset | None = None,
                 runtime: Runtime | None = None, progress=None):
        self.model, self.recipe, self.epochs, self.progress = model, recipe, epochs, progress
        self.train, self.val, self.test, self.normalize, self.generator = train, val, test, normalize, generator
        self.runtime = runtime or Runtime.for_recipe(recipe, train.x.device)
        self.net = self.runtime.prepare_model(model)
        self.steps_per_epoch = math.ceil(len(train) / recipe.batch_size)
        self.mode = mode_for(recipe.early_stopping.monitor)
        self.optimizer = build_optimizer(model, recipe.optimizer)
        self.schedule = LrSchedule(self.optimizer, recipe.scheduler, epochs, self.steps_per_epoch, self.mode)
        self.finetune_epoch = (phase_start_epoch(recipe.finetune.start, epochs) if recipe.finetune.enabled else None)
        self.averager = WeightAverager(recipe.swa, epochs) if recipe.swa.enabled else None
        es = recipe.early_stopping
        self.stopper = EarlyStopping(patience=es.patience, min_delta=es.min_delta, mode=self.mode)
        self.augment = BatchAugment.from_config(recipe.augment)
        self.rules = StepRules(recipe.label_smoothing, recipe.grad_clip)
        self.scaler = self.runtime.grad_scaler()  # fp16's loss scale, carried from epoch to epoch (else a no-op)
        self.result, self.cumulative, self.next_epoch = FitResult(), 0.0, 1

    def _begin_phases(self, epoch: int) -> None:
        """Enter the fine-tuning phase and the SWA phase at their epochs (also when resuming past them)."""
        recipe = self.recipe
        if epoch == self.finetune_epoch:
            if not isinstance(self.model, Finetunable):
                raise TypeError(f"{type(self.model).__name__} declares no fine-tuning stages (begin_finetune)")
            self.model.begin_finetune(recipe.finetune.stages)
            self.optimizer = build_optimizer(self.model, recipe.optimizer, lr=recipe.finetune.lr)
            self.schedule = LrSchedule(self.optimizer, recipe.scheduler, self.epochs - epoch + 1,
                                       self.steps_per_epoch, self.mode)
        if self.averager is not None and epoch == self.averager.start_epoch:
            self.averager.begin(self.model, self.optimizer)

    def run_epoch(self) -> EpochRecord:
        epoch, recipe, runtime = self.next_epoch, self.recipe, self.runtime
        self._begin_phases(epoch)
        averaging = self.averager is not None and self.averager.active(epoch)
        lr = self.schedule.lr
        device = self.train.x.device
        sync(device)
        start = time.perf_counter()
        batches = train_batches(self.train, recipe.batch_size, self.generator, self.normalize, self.augment)
        watch = DivergenceWatch(epoch)
        if self.progress is not None:
            self.progress.start_epoch(epoch)
        observers = (watch, self.progress) if self.progress is not None else (watch,)
        train_loss, train_acc = train_steps(self.net, batches, self.optimizer, runtime, self.rules,
                                            after_batch=None if averaging else self.schedule.after_batch,
                                            observers=observers, scaler=self.scaler)
        watch.check()
        val_loss, val_acc, _ = evaluate(self.net, self.val, self.normalize, recipe.eval_batch_size, runtime,
                                        recipe.tta_flip)
        if averaging:
            self.averager.after_epoch(self.model)
        sync(device)
        seconds = time.perf_counter() - start
        self.cumulative += seconds
        test_loss = test_acc = test_seconds = None
        if self.test is not None:
            test_start = time.perf_counter()
            test_loss, test_acc, _ = evaluate(self.net, self.test, self.normalize, recipe.eval_batch_size, runtime,
                                              recipe.tta_flip)
            test_seconds = time.perf_counter() - test_start  # evaluate returns once its figures are on the host
        record = EpochRecord(epoch=epoch, train_loss=train_loss, train_acc=train_acc, val_loss=val_loss,
                             val_acc=val_acc, test_loss=test_loss, test_acc=test_acc, lr=lr, epoch_seconds=seconds,
                             cumulative_seconds=self.cumulative, test_seconds=test_seconds)
        self.result.history.append(record)
        monitored = getattr(record, recipe.early_stopping.monitor)
        if self.stopper.update(epoch, monitored):
            self.result.best_state = copy.deepcopy(self.model.state_dict())
        if not averaging:
            self.schedule.after_epoch(monitored)
        if self.stopper.should_stop and recipe.early_stopping.stop:
            self.result.stopped_early = True
        self.next_epoch = epoch + 1
        if self.progress is not None:
            self.progress.end_epoch(record)
        return record

    @property
    def done(self) -> bool:
        return self.next_epoch > self.epochs or self.result.stopped_early

    def finish(self) -> FitResult:
        result = self.result
        result.best_epoch, result.best_value = self.stopper.best_epoch, self.stopper.best
        result.early_stop_epoch = self.stopper.stop_epoch
        if self.averager is not None:
            _finish_swa(result, self.averager, self.recipe, self.train, self.val, self.test, self.normalize,
                        self.runtime)
        return result

    def state_dict(self) -> dict:
        averager = self.averager
        return {
            "next_epoch": self.next_epoch, "cumulative": self.cumulative, "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.inner.state_dict() if self.schedule.inner is not None else None,
            "stopper": dataclasses.asdict(self.stopper), "history": [r.row() for r in self.result.history],
            "best_state": self.result.best_state, "stopped_early": self.result.stopped_early,
            "swa_model": averager.model.state_dict() if averager is not None and averager.model is not None else None,
            "swa_scheduler": (averager.scheduler.state_dict()
                              if averager is not None and averager.scheduler is not None else None),
            "scaler": self.scaler.state_dict(),
            "rng": rng_states(self.generator),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue where `state_dict()` was taken: replay the phase changes, then restore every state."""
        self.model.load_state_dict(state["model"])
        for epoch in range(1, state["next_epoch"]):
            if epoch in (self.finetune_epoch, getattr(self.averager, "start_epoch", None)):
                self._begin_phases(epoch)
        self.optimizer.load_state_dict(state["optimizer"])
        if state["schedule"] is not None:
            self.schedule.inner.load_state_dict(state["schedule"])
        if state["swa_model"] is not None:
            self.averager.model.load_state_dict(state["swa_model"])
            self.averager.scheduler.load_state_dict(state["swa_scheduler"])
        for name, value in state["stopper"].items():
            setattr(self.stopper, name, value)
        self.result.history = [EpochRecord.from_row(row) for row in state["history"]]
        self.result.best_state, self.result.stopped_early = state["best_state"], state["stopped_early"]
        self.next_epoch, self.cumulative = state["next_epoch"], state["cumulative"]
        if state.get("scaler"):  # empty when the scaler was disabled; absent from states saved before fp16
            self.scaler.load_state_dict(state["scaler"])
        restore_rng_states(self.generator, state["rng"])


def rng_states(generator: torch.Generator) -> dict:
    """Every generator the next epoch draws from: the data order's and augmentation's, then the global ones."""
    states = {"generator": generator.get_state(), "torch": torch.get_rng_state(), "numpy": np.random.get_state(),
              "python": random.getstate()}
    if torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(generator: torch.Generator, states: dict) -> None:
    generator.set_state(states["generator"])
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if "cuda" in states:  # absent from states saved before it was kept, and from CPU-only runs
        torch.cuda.set_rng_state_all(states["cuda"])


def fit(model: nn.Module, recipe: RecipeConfig, epochs: int, train: DeviceDataset, val: DeviceDataset,
        normalize: Normalizer, generator: torch.Generator, test: DeviceDataset | None = None,
        on_epoch: EpochCallback | None = None, runtime: Runtime | None = None, resume: dict | None = None,
        on_state: Callable[[Fitter], None] | None = None, progress=None) -> FitResult:
    """Train for up to `epochs`; the returned best_state is the model to keep.

    That is the best-validation checkpoint, or with SWA the averaged weights (batch-norm statistics
    recomputed on the training images). Timings (epoch_seconds, cumulative_seconds) cover training and
    validation only: the optional per-epoch test evaluation is for the diminishing-returns table and
    is not counted in them (its own cost is test_seconds). `resume` is a `Fitter.state_dict()` to continue
    from; `on_state` is called after every epoch (before `on_epoch`) with the fitter, to save its state.
    """
    fitter = Fitter(model, recipe, epochs, train, val, normalize, generator, test, runtime, progress)
    if resume is not None:
        fitter.load_state_dict(resume)
    while not fitter.done:
        record = fitter.run_epoch()
        if on_state is not None:
            on_state(fitter)
        if on_epoch is not None:
            on_epoch(record)
    return fitter.finish()


def _finish_swa(result: FitResult, averager: WeightAverager, recipe: RecipeConfig, train: DeviceDataset,
                val: DeviceDataset, test: DeviceDataset | None, normalize: Normalizer, runtime: Runtime) -> None:
    """Recompute the averaged model's batch-norm statistics, score it, and keep it as the result."""
    averaged = averager.model.module
    sync(train.x.device)
    start = time.perf_counter()
    recompute_batch_norm(averaged, _plain_batches(train, recipe.eval_batch_size, normalize, runtime))
    val_loss, val_acc, _ = evaluate(averaged, val, normalize, recipe.eval_batch_size, runtime, recipe.tta_flip)
    sync(train.x.device)
    result.swa = {"swa_val_loss": val_loss, "swa_val_acc": val_acc, "swa_start_epoch": averager.start_epoch,
                  "swa_bn_seconds": time.perf_counter() - start}
    if test is not None:
        result.swa["swa_test_loss"], result.swa["swa_test_acc"], _ = evaluate(
            averaged, test, normalize, recipe.eval_batch_size, runtime, recipe.tta_flip)
    result.best_state = copy.deepcopy(averaged.state_dict())
