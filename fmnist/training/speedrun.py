"""A speed run: one fixed recipe timed as the speed-run community times it (airbench's rules).

The whole schedule runs, and the last epoch's model is scored on every test image: no early stopping, no
checkpoint chosen, no validation pass, so nothing is chosen with the test set. The clock runs from the first
training batch to the final test accuracy, with the data already on the device, after a warm-up in the same
process (the first steps of the same recipe: allocation, autotuning, compilation), which is timed and reported
beside it. No MLflow here: the same run is timed on a machine without it.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from fmnist.core.config import RecipeRun
from fmnist.core.errors import ConfigError
from fmnist.core.io import read_json
from fmnist.core.recipe import Recipe
from fmnist.data.prepare import load_arrays, stratified_subset
from fmnist.data.tensors import BatchAugment, DeviceDataset, Normalizer, eval_batches, train_batches
from fmnist.models import create_model
from fmnist.models.init import init_weights
from fmnist.training.devices import sync
from fmnist.training.optim import LrSchedule, WeightAverager, build_optimizer, recompute_batch_norm
from fmnist.training.plan import RunPlan, plan_run
from fmnist.training.runtime import Runtime, seed_everything
from fmnist.training.steps import StepRules, evaluate, train_steps

GROUP_TAG = "fmnist.speedrun.group"  # one attempt's parent and seed runs, in MLflow or in run records


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
        self.steps = math.ceil(len(train) / recipe.batch_size)
        probe = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=recipe.optimizer.lr)
        LrSchedule(probe, recipe.scheduler, recipe.epochs, self.steps, "max")  # a schedule torch cannot run: now

    def _model(self, seed: int) -> nn.Module:
        seed_everything(seed, self.deterministic)
        model = create_model(self.recipe.network, num_classes=self.num_classes, **self.recipe.model)
        init_weights(model, self.recipe.init)
        return model.to(self.train.x.device)

    def warm_up(self, steps: int = 20) -> float:
        """The recipe's first steps, a step on an epoch's smaller last batch and a test pass, on a throwaway model,
        timed: what a first run pays once (a compiled network compiles for each batch shape here)."""
        device = self.train.x.device
        sync(device)
        start = time.perf_counter()
        model = self._model(0)
        net = self.runtime.prepare_model(model)
        optimizer = build_optimizer(model, self.recipe.optimizer)
        generator = torch.Generator(device=device).manual_seed(0)
        batches = train_batches(self.train, self.recipe.batch_size, generator, self.normalize, self.augment)
        train_steps(net, (b for _, b in zip(range(steps), batches)), optimizer, self.runtime, self.rules)
        last = len(self.train) % self.recipe.batch_size
        if last > 1:
            x, y = self.normalize(self.train.x[:last]), self.train.y[:last]
            train_steps(net, [(x, y)], optimizer, self.runtime, self.rules)
        evaluate(net, self.test, self.normalize, self.recipe.eval_batch_size, self.runtime, self.recipe.tta_flip)
        sync(device)
        return time.perf_counter() - start

    def run(self, seed: int) -> SpeedResult:
        recipe, device = self.recipe, self.train.x.device
        model = self._model(seed)
        net = self.runtime.prepare_model(model)
        generator = torch.Generator(device=device).manual_seed(seed)
        optimizer = build_optimizer(model, recipe.optimizer)
        schedule = LrSchedule(optimizer, recipe.scheduler, recipe.epochs, self.steps, "max")
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


DATA_CHOICES = {"all": "data/prepared/train.npz", "split": "data/split/train.npz"}  # 60,000 or 54,000 images


@dataclass
class Attempt:
    recipe: str
    device: str
    data: str
    n_train: int
    warmup_seconds: float
    results: list[SpeedResult]
    wall_seconds: float = 0.0
    parent_run_id: str | None = None

    def summary(self) -> dict[str, float]:
        times, accs = [r.seconds for r in self.results], [r.test_acc for r in self.results]
        spread = (lambda v: statistics.stdev(v) if len(v) > 1 else 0.0)  # noqa: E731
        return {"speedrun_seconds_mean": statistics.fmean(times), "speedrun_seconds_std": spread(times),
                "speedrun_test_acc_mean": statistics.fmean(accs), "speedrun_test_acc_std": spread(accs),
                "speedrun_n": float(len(self.results)), "warmup_seconds": self.warmup_seconds}

    def table(self) -> str:
        s = self.summary()
        lines = [f"Speed run of {self.recipe} on {self.device}: {self.n_train:,} training images ({self.data}), "
                 "the last epoch's model scored on all 10,000 test images", "",
                 "| seed | seconds | test acc |", "| --- | --- | --- |"]
        lines += [f"| {r.seed} | {r.seconds:.1f} | {r.test_acc:.4f} |" for r in self.results]
        lines += [f"| **mean ± std (n={len(self.results)})** | **{s['speedrun_seconds_mean']:.1f} ± "
                  f"{s['speedrun_seconds_std']:.1f}** | **{s['speedrun_test_acc_mean']:.4f} ± "
                  f"{s['speedrun_test_acc_std']:.4f}** |", "",
                  f"Warm-up (first steps and a test pass, once): {self.warmup_seconds:.1f} s. Wall time from the "
                  f"command to this table: {self.wall_seconds:.0f} s."]
        if self.parent_run_id:
            lines.append(f"MLflow: parent run {self.parent_run_id} (one child run per seed).")
        return "\n".join(lines)


def load_data(data: str, root: Path, device: torch.device, train_subset: int | None = None,
              subset_seed: int = 42) -> tuple[DeviceDataset, DeviceDataset, Normalizer, list]:
    """The training images (all, or the recipe's stratified subset of them) and every test image: a record is
    scored on the whole test set, whatever the recipe's eval_subset."""
    train_file, test_file = data_files(data, root)
    stats = read_json(root / "data/prepared/stats.json")
    train = DeviceDataset.from_arrays(stratified_subset(load_arrays(train_file), train_subset, subset_seed), device)
    test = DeviceDataset.from_arrays(load_arrays(test_file), device)
    return train, test, Normalizer(stats["mean"], stats["std"]), stats["classes"]


def check_attempt(run: RecipeRun, seeds: list[int], data: str, root: Path) -> RunPlan:
    """Every check an attempt can fail, before any work or any write."""
    plan = plan_run(run, seeds[0])
    if plan.runtime is None:
        raise ConfigError(f"recipes.{run.name}: a scikit-learn baseline is one fit, not a schedule to time")
    check_speed_recipe(run.name, run.recipe)
    data_files(data, root)
    return plan


def data_files(data: str, root: Path) -> tuple[Path, Path]:
    if data not in DATA_CHOICES:
        raise ConfigError(f"--data: got {data!r}, allowed: {', '.join(DATA_CHOICES)} (all 60,000 training images, "
                          "or the split's 54,000)")
    train_file, test_file = root / DATA_CHOICES[data], root / "data/prepared/test.npz"
    for path in (train_file, test_file):
        if not path.is_file():
            raise ConfigError(f"{path}: not found; prepare the data first (`dvc repro split`)")
    return train_file, test_file


def prepare_attempt(run: RecipeRun, seeds: list[int], data: str, root: Path, echo=print
                    ) -> tuple[RunPlan, SpeedRun, Attempt]:
    """Every check, the data on the device and the warm-up: what comes before the first timed seed."""
    plan = check_attempt(run, seeds, data, root)
    if plan.train.threads:
        torch.set_num_threads(plan.train.threads)
    train, test, normalize, classes = load_data(data, root, plan.device, run.recipe.train_subset, run.train.seed)
    recipe = run.recipe.model_copy(update={"model": plan.model_options})
    speed = SpeedRun(recipe, train, test, normalize, plan.runtime, len(classes), plan.train.deterministic)
    warmup = speed.warm_up()
    echo(f"{run.name}: warm-up {warmup:.1f} s; {len(seeds)} seed(s) of {recipe.epochs} epochs on {len(train):,} "
         f"images, {plan.runtime.precision} on {plan.device}")
    return plan, speed, Attempt(run.name, str(plan.device), data, len(train), warmup, [])


def time_seeds(speed: SpeedRun, seeds: list[int], attempt: Attempt, started: float, echo=print,
               on_result=lambda result: None) -> Attempt:
    for seed in seeds:
        result = speed.run(seed)
        attempt.results.append(result)
        echo(f"seed {seed}: {result.seconds:.1f} s, test acc {result.test_acc:.4f}")
        on_result(result)
    attempt.wall_seconds = time.perf_counter() - started
    return attempt
