"""A recipe: how one architecture trains (optimiser, schedule, augmentation, stopping, precision) and
the budgets each profile gives it. A leaf of `fmnist.core.config`, which re-exports every name here.

A budget may override recipe keys for its profile only (`recipe:`), so the CPU benchmark can use a
schedule of its own while the reference recipe stays for the GPU.
"""

from __future__ import annotations

import typing
from typing import Annotated, Any, Literal

from pydantic import ValidationError

from fmnist.core.errors import ConfigError
from fmnist.core.validation import Range, Section, one_line

PROFILES = ("full", "cpu", "quick")  # the GPU benchmark, the CPU benchmark, the smoke test

Positive = Annotated[float, Range(lo=0, lo_open=True)]
NonNegative = Annotated[float, Range(lo=0)]
Fraction = Annotated[float, Range(lo=0, hi=1, lo_open=True, hi_open=True)]
Seed = Annotated[int, Range(lo=0, hi=2**32 - 1)]


class OptimizerConfig(Section):
    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: Positive = 1e-3
    weight_decay: NonNegative = 0.0
    momentum: Annotated[float, Range(lo=0, hi=1, hi_open=True)] = 0.0
    nesterov: bool = False


class SchedulerConfig(Section):
    """Learning-rate schedule. onecycle and cyclic step every batch, the others once per epoch."""

    name: Literal["none", "plateau", "step", "multistep", "cosine", "onecycle", "cyclic"] = "none"
    factor: Fraction = 0.1  # plateau, step, multistep
    patience: Annotated[int, Range(lo=0)] = 2  # plateau
    step_size: Annotated[int, Range(lo=1)] = 10  # step: epochs between reductions
    milestones: list[int] = []  # multistep: epochs after which lr *= factor
    min_lr: NonNegative = 0.0  # plateau, cosine
    max_lr: Positive | None = None  # onecycle peak; cyclic upper bound
    pct_start: Fraction = 0.25  # onecycle: share of steps warming up
    cycle_epochs: Positive = 2.0  # cyclic: epochs per half cycle (base -> max)


class SwaConfig(Section):
    """Stochastic weight averaging over the last part of the budget (Izmailov et al., 2018)."""

    enabled: bool = False
    start: Annotated[float, Range(lo=0, hi=1, hi_open=True)] = 0.75  # share of the epochs before averaging
    lr: Positive = 0.01  # constant SWA learning rate, reached by annealing
    anneal_epochs: Annotated[int, Range(lo=0)] = 1


class FinetuneConfig(Section):
    """Two-phase transfer: train the head on a frozen backbone, then unfreeze `stages` with a small lr."""

    enabled: bool = False
    start: Fraction = 0.3  # share of the epochs for phase 1
    lr: Positive = 1e-5
    stages: list[str] = ["layer3", "layer4"]


class AugmentConfig(Section):
    """Whole-batch tensor augmentation of training images (never of validation or test images)."""

    hflip: Annotated[float, Range(lo=0, hi=1)] = 0.0  # probability of a horizontal flip
    translate: Annotated[int, Range(lo=0, hi=8)] = 0  # random shift up to this many pixels (zero padding)
    zoom: Annotated[float, Range(lo=0, hi=0.5)] = 0.0  # random scale in [1 - zoom, 1 + zoom]
    erasing: Annotated[float, Range(lo=0, hi=1)] = 0.0  # probability of erasing one rectangle (Zhong et al.)
    erasing_max_area: Annotated[float, Range(lo=0.02, hi=1)] = 0.33  # largest erased share of the image


class EarlyStoppingConfig(Section):
    monitor: Literal["val_acc", "val_loss"] = "val_acc"
    patience: Annotated[int, Range(lo=1)] = 5
    min_delta: NonNegative = 0.0
    stop: bool = True


class BudgetConfig(Section):
    """How much of a recipe a profile runs: the full (GPU) benchmark, the CPU benchmark, the quick smoke test."""

    epochs: Annotated[int, Range(lo=1)] = 10
    # Trainings, one MLflow run each, with seeds train.seed, train.seed + 1, ...: the leaderboard shows the spread.
    seeds: Annotated[int, Range(lo=1, hi=20)] = 1
    train_subset: Annotated[int, Range(lo=100)] | None = None
    # Validation and test images scored (stratified subset): big networks on a CPU spend most of a quick
    # run evaluating otherwise. null = all; the report and metrics state how many were used.
    eval_subset: Annotated[int, Range(lo=100)] | None = None
    # Model options for this budget only, over the recipe's `model`; logged with the run like every option.
    model: dict[str, Any] = {}
    # Recipe keys for this profile only, over the recipe's (e.g. a CPU schedule): {scheduler: {name: onecycle}}.
    recipe: dict[str, Any] = {}


class RecipeConfig(Section):
    model: dict[str, Any] = {}
    init: Literal["default", "he", "xavier"] = "default"
    batch_size: Annotated[int, Range(lo=1)] = 128
    # 256: at 1000, buffers are large enough that every batch pays fresh page faults on a CPU (docs/bench_precision.md)
    eval_batch_size: Annotated[int, Range(lo=1)] = 256
    optimizer: OptimizerConfig = OptimizerConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    augment: AugmentConfig = AugmentConfig()
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()
    label_smoothing: Annotated[float, Range(lo=0, hi=1, hi_open=True)] = 0.0
    grad_clip: Positive | None = None  # max gradient norm; null = no clipping
    swa: SwaConfig = SwaConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    # auto = bf16 autocast where the device computes bf16 natively (CUDA, CPUs with AVX512-BF16/AMX), else fp32
    precision: Literal["fp32", "bf16", "auto"] = "auto"
    channels_last: bool = True  # NHWC convolutions: with bf16 on our CPU, most networks train faster (make bench)
    compile: bool = False  # torch.compile the network for training
    tta_flip: bool = False  # average the logits of each image and its mirror at evaluation
    full: BudgetConfig = BudgetConfig()
    cpu: BudgetConfig | None = None  # null = the full budget
    quick: BudgetConfig = BudgetConfig(epochs=1)

    def budget(self, profile: str) -> BudgetConfig:
        return getattr(self, profile) or self.full

    def for_profile(self, profile: str, key: str = "recipe") -> "RecipeConfig":
        """The recipe as `profile` runs it: its budget's `recipe:` keys merged over these (sections key by key)."""
        overrides = self.budget(profile).recipe
        if not overrides:
            return self
        data = _merged(self.model_dump(), overrides, f"{key}.{profile}.recipe")
        try:
            return RecipeConfig.model_validate(data)
        except ValidationError as err:
            raise ConfigError(f"{key}.{profile}.recipe: " + one_line(err.errors()[0], RecipeConfig)) from None

    def model_options(self, profile: str) -> dict[str, Any]:
        return {**self.model, **self.budget(profile).model}

    def changed_from_default(self, names: typing.Iterable[str]) -> list[str]:
        """Which of `names` this recipe sets to something other than the default."""
        return [n for n in names if getattr(self, n) != RecipeConfig.model_fields[n].default]




def _merged(base: dict, overrides: dict, key: str) -> dict:
    """The recipe's keys with a budget's `recipe:` keys over them, section by section."""
    out = dict(base)
    for name, value in overrides.items():
        if name in (*PROFILES, "model"):
            fix = "set model options in the budget's own `model:`" if name == "model" else "budgets are not recipe keys"
            raise ConfigError(f"{key}.{name}: a budget's recipe cannot set '{name}'; {fix}")
        out[name] = _merged(out[name], value, f"{key}.{name}") if isinstance(value, dict) and isinstance(
            out.get(name), dict) else value
    return out
