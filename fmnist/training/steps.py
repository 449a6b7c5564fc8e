"""One optimiser step per batch, and scoring: the pieces an epoch is made of (the benchmark times the
same `train_steps` the pipeline trains with)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from fmnist.core.errors import FmnistError
from fmnist.data.tensors import BatchAugment, DeviceDataset, Normalizer, eval_batches, train_batches
from fmnist.models.wrapper import logits_of
from fmnist.training.runtime import Runtime

Batch = tuple[torch.Tensor, torch.Tensor]


class Diverged(FmnistError):
    """The loss became NaN or infinite: the run stops as FAILED, and earlier outputs stay."""


def _logits(model: nn.Module, x: torch.Tensor, runtime: Runtime, tta_flip: bool) -> torch.Tensor:
    x = runtime.prepare_input(x)
    with runtime.autocast():
        return logits_of(model, x, tta_flip)


@torch.no_grad()
def evaluate(model: nn.Module, data: DeviceDataset, normalize: Normalizer, batch_size: int,
             runtime: Runtime | None = None, tta_flip: bool = False) -> tuple[float, float, torch.Tensor]:
    """(mean loss, accuracy, logits on the data's device) over the whole dataset.

    Everything stays on the device until both figures cross to the host together at the end: a per-batch
    `.item()` would make the CPU wait for the GPU after every batch."""
    runtime = runtime or Runtime(data.x.device)
    model.eval()
    # float64, added batch by batch: the same sum, to the bit, as adding the batches' losses as Python floats
    total_loss = torch.zeros((), dtype=torch.float64, device=data.x.device)
    outputs = []
    for x, y in eval_batches(data, batch_size, normalize):
        logits = _logits(model, x, runtime, tta_flip)
        total_loss += nn.functional.cross_entropy(logits, y, reduction="sum")
        outputs.append(logits)
    logits = torch.cat(outputs)
    acc = (logits.argmax(1) == data.y).float().mean()
    loss_sum, acc = torch.stack([total_loss, acc.double()]).tolist()
    return loss_sum / len(data), acc, logits


@dataclass
class StepRules:
    """What happens around each optimiser step."""

    label_smoothing: float = 0.0
    grad_clip: float | None = None


class DivergenceWatch:
    """Notes the first batch whose loss is NaN or infinite, in one tensor on the device: no host sync
    and no allocation per batch; `check` reads it once, after the epoch."""

    def __init__(self, epoch: int):
        self.epoch = epoch
        self.first_bad: torch.Tensor | None = None  # -1 while every loss was finite

    def see(self, index: int, loss: torch.Tensor) -> None:
        if self.first_bad is None:
            self.first_bad = torch.full((), -1, dtype=torch.long, device=loss.device)
        bad = (self.first_bad < 0) & ~torch.isfinite(loss.detach())
        self.first_bad.masked_fill_(bad, index)

    def check(self) -> None:
        if self.first_bad is not None and int(self.first_bad) >= 0:
            raise Diverged(f"training diverged: the loss became NaN or infinite in epoch {self.epoch}, batch "
                           f"{int(self.first_bad) + 1}; the learning rate is likely too high for this recipe (or "
                           "the inputs hold bad values); lower optimizer.lr or set grad_clip. Earlier outputs are "
                           "kept.")


def train_steps(model: nn.Module, batches: Iterable[Batch], optimizer: torch.optim.Optimizer,
                runtime: Runtime, rules: StepRules | None = None,
                after_batch: Callable[[], None] | None = None,
                observers: Iterable = (), scaler: torch.amp.GradScaler | None = None) -> tuple[float, float]:
    """One optimiser step per batch of (normalised images, labels): (mean loss, accuracy) over them.

    The pipeline feeds it `train_batches`; the benchmark feeds it other data paths, so both time the
    same step. `scaler` carries the fp16 loss scale from one call to the next (a fresh one otherwise);
    with bf16 or fp32 it is disabled and each of its calls is a plain backward or step. Observers see the
    unscaled loss: a step the scaler skips for inf gradients is not a divergence while the loss is finite."""
    rules = rules or StepRules()
    scaler = scaler or runtime.grad_scaler()
    model.train()
    total_loss = torch.zeros((), device=runtime.device)
    correct = torch.zeros((), device=runtime.device, dtype=torch.long)
    seen = 0
    for index, (x, y) in enumerate(batches):
        with runtime.autocast():
            logits = model(runtime.prepare_input(x))
            loss = nn.functional.cross_entropy(logits.float(), y, label_smoothing=rules.label_smoothing)
        for observer in observers:
            observer.see(index, loss)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if rules.grad_clip is not None:
            scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
            nn.utils.clip_grad_norm_(model.parameters(), rules.grad_clip)
        scaler.step(optimizer)
        scaler.update()
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
