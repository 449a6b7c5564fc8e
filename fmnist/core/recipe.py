"""A recipe: how one network trains (optimiser, schedule, augmentation, stopping, precision), and how
much of it a profile runs (its budget). The layers of params.yaml (bases, recipes, budgets, profiles)
are merged by `fmnist.core.layers` into one flat `Recipe` per recipe name: the only recipe the code
below the config ever sees. A leaf of `fmnist.core.config`.
"""

from __future__ import annotations

import typing
from typing import Annotated, Any, Literal

from fmnist.core.errors import ConfigError
from fmnist.core.validation import Range, Section

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
    """How much of a recipe a profile runs; under `recipes.NAME.budgets.PROFILE` (or a profile's defaults)."""

    epochs: Annotated[int, Range(lo=1)] = 10
    # Trainings, one MLflow run each, with seeds train.seed, train.seed + 1, ...: the leaderboard shows the spread.
    seeds: Annotated[int, Range(lo=1, hi=20)] = 1
    train_subset: Annotated[int, Range(lo=100)] | None = None
    # Validation and test images scored (stratified subset): big networks on a CPU spend most of a quick
    # run evaluating otherwise. null = all; the report and metrics state how many were used.
    eval_subset: Annotated[int, Range(lo=100)] | None = None
    # Model options for this budget only, over the recipe's `model`; logged with the run like every option.
    model: dict[str, Any] = {}
    # Recipe keys for this profile only, over the recipe's (may `extends:` a base): e.g. a CPU schedule.
    recipe: dict[str, Any] = {}


BUDGET_RUN_FIELDS = ("epochs", "seeds", "train_subset", "eval_subset")  # what a budget adds to the flat recipe


class RecipeConfig(Section):
    """The training keys of a recipe (every one optional: the defaults are here)."""

    network: str | None = None  # the registered network it trains (`fmnist models`); required once resolved
    model: dict[str, Any] = {}  # the network builder's options
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
    # auto = bf16 autocast where the device computes bf16 natively (CUDA, CPUs with AVX512-BF16/AMX), fp16 with a
    # gradient scaler on CUDA GPUs without it (T4, V100), else fp32; fp16 only on CUDA
    precision: Literal["fp32", "bf16", "fp16", "auto"] = "auto"
    channels_last: bool = True  # NHWC convolutions: with bf16 on our CPU, most networks train faster (make bench)
    compile: bool = False  # torch.compile the network for training
    tta_flip: bool = False  # average the logits of each image and its mirror at evaluation

    def changed_from_default(self, names: typing.Iterable[str]) -> list[str]:
        """Which of `names` this recipe sets to something other than the default."""
        return [n for n in names if getattr(self, n) != type(self).model_fields[n].default]


class Recipe(RecipeConfig):
    """One recipe resolved for the active profile: its bases, its own keys, the profile's budget defaults
    and its budget merged. Flat: the budget's run fields sit beside the training keys."""

    network: str
    epochs: Annotated[int, Range(lo=1)] = 10
    seeds: Annotated[int, Range(lo=1, hi=20)] = 1
    train_subset: Annotated[int, Range(lo=100)] | None = None
    eval_subset: Annotated[int, Range(lo=100)] | None = None


def check_combinations(key: str, recipe: Recipe) -> None:
    """Combinations of training options that cannot run together (whatever the network)."""
    opt, sched = recipe.optimizer, recipe.scheduler
    if opt.nesterov and (opt.name != "sgd" or opt.momentum <= 0):
        raise ConfigError(f"{key}.optimizer.nesterov: Nesterov momentum needs name: sgd and momentum > 0")
    if opt.momentum > 0 and opt.name != "sgd":
        raise ConfigError(f"{key}.optimizer.momentum: only sgd takes momentum; {opt.name} uses its own betas")
    if sched.name in ("onecycle", "cyclic") and (sched.max_lr is None or sched.max_lr <= opt.lr):
        what = "peak" if sched.name == "onecycle" else "upper bound"
        raise ConfigError(f"{key}.scheduler.max_lr: {sched.name} needs max_lr (its {what}) above optimizer.lr "
                          f"({opt.lr}); got {sched.max_lr}")
    if sched.name == "multistep" and (not sched.milestones or sched.milestones != sorted(set(sched.milestones))
                                      or sched.milestones[0] < 1):
        raise ConfigError(f"{key}.scheduler.milestones: multistep needs increasing epochs >= 1; "
                          f"got {sched.milestones}")
    if recipe.swa.enabled and recipe.early_stopping.stop:
        raise ConfigError(f"{key}.swa: SWA averages the weights up to the last epoch; set early_stopping.stop: "
                          "false (the stopping point is still recorded)")
    if recipe.finetune.enabled and recipe.swa.enabled:
        raise ConfigError(f"{key}.swa: SWA and a fine-tuning phase cannot be combined; disable one of them")
    if recipe.batch_size > (recipe.train_subset or 60000):
        raise ConfigError(f"{key}.batch_size: {recipe.batch_size} is larger than its train_subset "
                          f"({recipe.train_subset})")
