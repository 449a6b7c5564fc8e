"""A speed run: one fixed recipe timed as the speed-run community times it (airbench's rules).

The whole schedule runs, and the last epoch's model is scored on every test image: no early stopping, no
checkpoint chosen, no validation pass, so nothing is chosen with the test set. The clock runs from the first
training batch to the final test accuracy, with the data already on the device, after a warm-up in the same
process (the first steps of the same recipe: allocation, autotuning, compilation), which is timed and reported
beside it. No MLflow here: the same run is timed on a machine without it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from fmnist.core.errors import ConfigError
from fmnist.core.recipe import Recipe
from fmnist.data.tensors import BatchAugment, DeviceDataset, Normalizer, eval_batches, train_batches
from fmnist.models import create_model
from fmnist.models.init import init_weights
from fmnist.training.devices import sync
from fmnist.training.optim import LrSchedule, WeightAverager, build_optimizer, recompute_batch_norm
from fmnist.training.runtime import Runtime, seed_everything
from fmnist.training.steps import StepRules, evaluate, train_steps


@dataclass
class SpeedEpoch:
    epoch: int
    train_loss: float
    train_acc: float
    lr: float
    seconds: float  # on the clock since the first batch, at the end of this epoch


@dataclass
class SpeedResult:
    seed: int
    seconds: float  # the speed-run figure: first training batch to final test accuracy
    test_acc: float
    test_loss: float
    epochs: list[SpeedEpoch] = field(default_factory=list)


def check_speed_recipe(name: str, recipe: Recipe) -> None:
    """A speed run is a fixed schedule scored once at its end: what chooses by validation cannot run."""
    if recipe.scheduler.name == "plateau":
        raise ConfigError(f"recipes.{name}.scheduler: a plateau schedule needs validation figures, which a speed run "
                          "has none of; use a fixed schedule (onecycle, cosine, step)")
    if recipe.finetune.enabled:
        raise ConfigError(f"recipes.{name}.finetune: a speed run trains one phase; time a recipe without finetune")


class SpeedRun:
    """One recipe's network, data and rules, ready to time a seed after another."""

    def __init__(self, recipe: Recipe, train: DeviceDataset, test: DeviceDataset, normalize: Normalizer,
                 runtime: Runtime, num_classes: int, deterministic: bool = False):
        self.recipe, self.train, self.test, self.normalize, self.runtime = recipe, train, test, normalize, runtime
        self.num_classes, self.deterministic = num_classes, deterministic
        self.augment = BatchAugment.from_config(recipe.augment)
        self.rules = StepRules(recipe.label_smoothing, recipe.grad_clip)

    def _model(self, seed: int) -> nn.Module:
        seed_everything(seed, self.deterministic)
        model = create_model(self.recipe.network, num_classes=self.num_classes, **self.recipe.model)
        init_weights(model, self.recipe.init)
        return model.to(self.train.x.device)

    def warm_up(self, steps: int = 20) -> float:
        """The recipe's first steps and a test pass on a throwaway model, timed: what a first run pays once."""
        device = self.train.x.device
        sync(device)
        start = time.perf_counter()
        model = self._model(0)
        net = self.runtime.prepare_model(model)
        optimizer = build_optimizer(model, self.recipe.optimizer)
        generator = torch.Generator(device=device).manual_seed(0)
        batches = train_batches(self.train, self.recipe.batch_size, generator, self.normalize, self.augment)
        train_steps(net, (b for _, b in zip(range(steps), batches)), optimizer, self.runtime, self.rules)
        evaluate(net, self.test, self.normalize, self.recipe.eval_batch_size, self.runtime, self.recipe.tta_flip)
        sync(device)
        return time.perf_counter() - start

    def run(self, seed: int) -> SpeedResult:
        recipe, device = self.recipe, self.train.x.device
        model = self._model(seed)
        net = self.runtime.prepare_model(model)
        generator = torch.Generator(device=device).manual_seed(seed)
        optimizer = build_optimizer(model, recipe.optimizer)
        steps = math.ceil(len(self.train) / recipe.batch_size)
        schedule = LrSchedule(optimizer, recipe.scheduler, recipe.epochs, steps, "max")
        averager = WeightAverager(recipe.swa, recipe.epochs) if recipe.swa.enabled else None
        scaler = self.runtime.grad_scaler()
        epochs = []
        sync(device)
        start = time.perf_counter()
        for epoch in range(1, recipe.epochs + 1):
            if averager is not None and epoch == averager.start_epoch:
                averager.begin(model, optimizer)
            averaging = averager is not None and averager.active(epoch)
            lr = schedule.lr
            batches = train_batches(self.train, recipe.batch_size, generator, self.normalize, self.augment)
            loss, acc = train_steps(net, batches, optimizer, self.runtime, self.rules,
                                    after_batch=None if averaging else schedule.after_batch, scaler=scaler)
            if averaging:
                averager.after_epoch(model)
            else:
                schedule.after_epoch(acc)
            epochs.append(SpeedEpoch(epoch, loss, acc, lr, time.perf_counter() - start))  # the loss read synced
        final = self._final_model(net, averager)
        test_loss, test_acc, _ = evaluate(final, self.test, self.normalize, recipe.eval_batch_size, self.runtime,
                                          recipe.tta_flip)
        sync(device)
        return SpeedResult(seed, time.perf_counter() - start, test_acc, test_loss, epochs)

    def _final_model(self, net: nn.Module, averager: WeightAverager | None) -> nn.Module:
        """The last epoch's model, or with SWA the average, its batch norm recomputed on the training images (on
        the clock: it is part of the recipe)."""
        if averager is None:
            return net
        averaged = averager.model.module
        batches = (self.runtime.prepare_input(x) for x, _ in eval_batches(self.train, self.recipe.eval_batch_size,
                                                                            self.normalize) if len(x) > 1)
        recompute_batch_norm(averaged, batches)
        return averaged
