"""The epoch loop: train, validate, (optionally) test, schedule, early-stop, average, keep the best weights."""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Protocol, runtime_checkable

import torch
from torch import nn

from fmnist.core.config import RecipeConfig
from fmnist.core.runs import EpochRecord
from fmnist.training.devices import sync
from fmnist.models.wrapper import logits_of
from fmnist.data.tensors import BatchAugment, DeviceDataset, Normalizer, eval_batches, train_batches
from fmnist.core.stopping import EarlyStopping, mode_for
from fmnist.training.runtime import Runtime
from fmnist.training.optim import LrSchedule, WeightAverager, build_optimizer, phase_start_epoch, recompute_batch_norm

EpochCallback = Callable[[EpochRecord], None]
Batch = tuple[torch.Tensor, torch.Tensor]


@runtime_checkable
class Finetunable(Protocol):
    """A model with a frozen backbone whose named stages can be unfrozen for a second phase."""

    finetune_stages: tuple[str, ...]

    def begin_finetune(self, stages: Iterable[str]) -> None: ...


def _logits(model: nn.Module, x: torch.Tensor, runtime: Runtime, tta_flip: bool) -> torch.Tensor:
    x = runtime.prepare_input(x)
    with runtime.autocast():
        return logits_of(model, x, tta_flip)


@torch.no_grad()
def evaluate(model: nn.Module, data: DeviceDataset, normalize: Normalizer, batch_size: int,
             runtime: Runtime | None = None, tta_flip: bool = False) -> tuple[float, float, torch.Tensor]:
    """(mean loss, accuracy, logits on the CPU) over the whole dataset."""
    runtime = runtime or Runtime(data.x.device)
    model.eval()
    total_loss, outputs = 0.0, []
    for x, y in eval_batches(data, batch_size, normalize):
        logits = _logits(model, x, runtime, tta_flip)
        total_loss += nn.functional.cross_entropy(logits, y, reduction="sum").item()
        outputs.append(logits.cpu())
    logits = torch.cat(outputs)
    acc = (logits.argmax(1) == data.y.cpu()).float().mean().item()
    return total_loss / len(data), acc, logits


@dataclass
class StepRules:
    """What happens around each optimiser step."""

    label_smoothing: float = 0.0
    grad_clip: float | None = None


def train_steps(model: nn.Module, batches: Iterable[Batch], optimizer: torch.optim.Optimizer,
                runtime: Runtime, rules: StepRules | None = None,
                after_batch: Callable[[], None] | None = None) -> tuple[float, float]:
    """One optimiser step per batch of (normalised images, labels): (mean loss, accuracy) over them.

    The pipeline feeds it `train_batches`; the benchmark feeds it other data paths, so both time the
    same step."""
    rules = rules or StepRules()
    model.train()
    total_loss = torch.zeros((), device=runtime.device)
    correct = torch.zeros((), device=runtime.device, dtype=torch.long)
    seen = 0
    for x, y in batches:
        with runtime.autocast():
            logits = model(runtime.prepare_input(x))
            loss = nn.functional.cross_entropy(logits.float(), y, label_smoothing=rules.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if rules.grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), rules.grad_clip)
        optimizer.step()
        if after_batch is not None:
            after_batch()
        # Accumulate on the device: no host sync per batch.
        total_loss += loss.detach() * len(y)
        correct += (logits.argmax(1) == y).sum()
        seen += len(y)
    return total_loss.item() / max(seen, 1), correct.item() / max(seen, 1)


def train_one_epoch(model: nn.Module, data: DeviceDataset, optimizer: torch.optim.Optimizer,
                    batch_size: int, generator: torch.Generator, normalize: Normalizer,
                    augment: BatchAugment, runtime: Runtime | None = None, rules: StepRules | None = None,
                    after_batch: Callable[[], None] | None = None) -> tuple[float, float]:
    runtime = runtime or Runtime(data.x.device)
    return train_steps(model, train_batches(data, batch_size, generator, normalize, augment), optimizer, runtime,
                       rules, after_batch)


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


def fit(model: nn.Module, recipe: RecipeConfig, epochs: int, train: DeviceDataset, val: DeviceDataset,
        normalize: Normalizer, generator: torch.Generator, test: DeviceDataset | None = None,
        on_epoch: EpochCallback | None = None, runtime: Runtime | None = None) -> FitResult:
    """Train for up to `epochs`; the returned best_state is the model to keep.

    That is the best-validation checkpoint, or with SWA the averaged weights (batch-norm statistics
    recomputed on the training images). Timings (epoch_seconds, cumulative_seconds) cover training and
    validation only: the optional per-epoch test evaluation is for the diminishing-returns table and
    is not counted.
    """
    device = train.x.device
    runtime = runtime or Runtime.for_recipe(recipe, device)
    net = runtime.prepare_model(model)
    steps_per_epoch = math.ceil(len(train) / recipe.batch_size)
    es_cfg = recipe.early_stopping
    mode = mode_for(es_cfg.monitor)
    optimizer = build_optimizer(model, recipe.optimizer)
    schedule = LrSchedule(optimizer, recipe.scheduler, epochs, steps_per_epoch, mode)
    finetune_epoch = phase_start_epoch(recipe.finetune.start, epochs) if recipe.finetune.enabled else None
    averager = WeightAverager(recipe.swa, epochs) if recipe.swa.enabled else None
    stopper = EarlyStopping(patience=es_cfg.patience, min_delta=es_cfg.min_delta, mode=mode)
    augment = BatchAugment.from_config(recipe.augment)
    rules = StepRules(recipe.label_smoothing, recipe.grad_clip)
    result, cumulative = FitResult(), 0.0
    for epoch in range(1, epochs + 1):
        if epoch == finetune_epoch:
            if not isinstance(model, Finetunable):
                raise TypeError(f"{type(model).__name__} declares no fine-tuning stages (begin_finetune)")
            model.begin_finetune(recipe.finetune.stages)
            optimizer = build_optimizer(model, recipe.optimizer, lr=recipe.finetune.lr)
            schedule = LrSchedule(optimizer, recipe.scheduler, epochs - epoch + 1, steps_per_epoch, mode)
        if averager is not None and epoch == averager.start_epoch:
            averager.begin(model, optimizer)
        averaging = averager is not None and averager.active(epoch)
        lr = schedule.lr
        sync(device)
        start = time.perf_counter()
        train_loss, train_acc = train_one_epoch(net, train, optimizer, recipe.batch_size, generator, normalize,
                                                augment, runtime, rules,
                                                after_batch=None if averaging else schedule.after_batch)
        val_loss, val_acc, _ = evaluate(net, val, normalize, recipe.eval_batch_size, runtime, recipe.tta_flip)
        if averaging:
            averager.after_epoch(model)
        sync(device)
        seconds = time.perf_counter() - start
        cumulative += seconds
        test_loss = test_acc = None
        if test is not None:
            test_loss, test_acc, _ = evaluate(net, test, normalize, recipe.eval_batch_size, runtime, recipe.tta_flip)
        record = EpochRecord(epoch=epoch, train_loss=train_loss, train_acc=train_acc, val_loss=val_loss,
                             val_acc=val_acc, test_loss=test_loss, test_acc=test_acc, lr=lr, epoch_seconds=seconds,
                             cumulative_seconds=cumulative)
        result.history.append(record)
        monitored = getattr(record, es_cfg.monitor)
        if stopper.update(epoch, monitored):
            result.best_state = copy.deepcopy(model.state_dict())
        if not averaging:
            schedule.after_epoch(monitored)
        if on_epoch is not None:
            on_epoch(record)
        if stopper.should_stop and es_cfg.stop:
            result.stopped_early = True
            break
    result.best_epoch, result.best_value = stopper.best_epoch, stopper.best
    result.early_stop_epoch = stopper.stop_epoch
    if averager is not None:
        _finish_swa(result, averager, recipe, train, val, test, normalize, runtime)
    return result


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
