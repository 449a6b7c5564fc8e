"""The epoch loop: train, validate, (optionally) test, schedule, early-stop, keep the best weights."""

from __future__ import annotations

import copy
import os
import random
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from fmnist.config import RecipeConfig
from fmnist.data.tensors import BatchAugment, DeviceDataset, Normalizer, eval_batches, train_batches
from fmnist.stopping import EarlyStopping, mode_for
from fmnist.training.optim import EpochScheduler, build_optimizer

EpochCallback = Callable[[dict], None]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    return torch.device(name)


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def evaluate(model: nn.Module, data: DeviceDataset, normalize: Normalizer, batch_size: int
             ) -> tuple[float, float, torch.Tensor]:
    """(mean loss, accuracy, logits on the CPU) over the whole dataset."""
    model.eval()
    total_loss, outputs = 0.0, []
    for x, y in eval_batches(data, batch_size, normalize):
        logits = model(x)
        total_loss += nn.functional.cross_entropy(logits, y, reduction="sum").item()
        outputs.append(logits.float().cpu())
    logits = torch.cat(outputs)
    acc = (logits.argmax(1) == data.y.cpu()).float().mean().item()
    return total_loss / len(data), acc, logits


def train_one_epoch(model: nn.Module, data: DeviceDataset, optimizer: torch.optim.Optimizer,
                    batch_size: int, generator: torch.Generator, normalize: Normalizer,
                    augment: BatchAugment) -> tuple[float, float]:
    model.train()
    total_loss = torch.zeros((), device=data.x.device)
    correct = torch.zeros((), device=data.x.device, dtype=torch.long)
    for x, y in train_batches(data, batch_size, generator, normalize, augment):
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        # Accumulate on the device: no host sync per batch.
        total_loss += loss.detach() * len(y)
        correct += (logits.argmax(1) == y).sum()
    return total_loss.item() / len(data), correct.item() / len(data)


@dataclass
class FitResult:
    history: list[dict] = field(default_factory=list)
    best_epoch: int | None = None
    best_value: float | None = None
    early_stop_epoch: int | None = None
    stopped_early: bool = False
    best_state: dict | None = None

    @property
    def epochs_run(self) -> int:
        return len(self.history)


def fit(model: nn.Module, recipe: RecipeConfig, epochs: int, train: DeviceDataset, val: DeviceDataset,
        normalize: Normalizer, generator: torch.Generator, test: DeviceDataset | None = None,
        on_epoch: EpochCallback | None = None) -> FitResult:
    """Train for up to `epochs`; the returned best_state is the best-validation checkpoint.

    Timings (epoch_seconds, cumulative_seconds) cover training and validation only: the optional
    per-epoch test evaluation is for the diminishing-returns table and is not counted.
    """
    device = train.x.device
    optimizer = build_optimizer(model, recipe.optimizer)
    es_cfg = recipe.early_stopping
    mode = mode_for(es_cfg.monitor)
    scheduler = EpochScheduler(optimizer, recipe.scheduler, epochs, mode)
    stopper = EarlyStopping(patience=es_cfg.patience, min_delta=es_cfg.min_delta, mode=mode)
    augment = BatchAugment(recipe.augment.hflip, recipe.augment.translate)
    result, cumulative = FitResult(), 0.0
    for epoch in range(1, epochs + 1):
        lr = scheduler.lr
        _sync(device)
        start = time.perf_counter()
        train_loss, train_acc = train_one_epoch(model, train, optimizer, recipe.batch_size, generator,
                                                normalize, augment)
        val_loss, val_acc, _ = evaluate(model, val, normalize, recipe.eval_batch_size)
        _sync(device)
        seconds = time.perf_counter() - start
        cumulative += seconds
        record = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc, "val_loss": val_loss,
                  "val_acc": val_acc, "lr": lr, "epoch_seconds": seconds, "cumulative_seconds": cumulative}
        if test is not None:
            record["test_loss"], record["test_acc"], _ = evaluate(model, test, normalize, recipe.eval_batch_size)
        result.history.append(record)
        monitored = record[es_cfg.monitor]
        if stopper.update(epoch, monitored):
            result.best_state = copy.deepcopy(model.state_dict())
        scheduler.step(monitored)
        if on_epoch is not None:
            on_epoch(record)
        if stopper.should_stop and es_cfg.stop:
            result.stopped_early = True
            break
    result.best_epoch, result.best_value = stopper.best_epoch, stopper.best
    result.early_stop_epoch = stopper.stop_epoch
    return result
