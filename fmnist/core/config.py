"""The one place that reads params.yaml: a typed, validated, frozen configuration (pydantic v2).

A leaf: schema and loading only, no torch and no model imports. What needs the model registry
(architecture names, model options, what a model kind accepts) is checked by
`fmnist.models.checks`; what needs the machine (device, precision) by `fmnist.training.plan`.
Every error is one line naming the key and what is allowed, e.g.
`params.yaml: recipes.cnn4.full.epochs: got 0, allowed range [1, inf]`.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ValidationError

from fmnist.core.errors import ConfigError
from fmnist.core.validation import Range, Section, one_line

PROFILES = ("full", "quick")


Positive = Annotated[float, Range(lo=0, lo_open=True)]
NonNegative = Annotated[float, Range(lo=0)]
Fraction = Annotated[float, Range(lo=0, hi=1, lo_open=True, hi_open=True)]
Seed = Annotated[int, Range(lo=0, hi=2**32 - 1)]


class MlflowConfig(Section):
    experiment: str = "fmnist"
    quick_experiment: str = "fmnist-quick"
    registered_model: str = "fmnist-classifier"
    quick_registered_model: str = "fmnist-quick-classifier"

    def experiment_for(self, profile: str) -> str:
        return self.quick_experiment if profile == "quick" else self.experiment

    def registered_model_for(self, profile: str) -> str:
        return self.quick_registered_model if profile == "quick" else self.registered_model


class DownloadConfig(Section):
    mirrors: list[str] = []
    timeout_s: Positive = 10.0
    retries: Annotated[int, Range(lo=0)] = 2
    local_dirs: list[str] = ["/usr/share/datasets/fashion-mnist"]


class PreprocessConfig(Section):
    classes: list[int] | None = None  # null = all 10 classes


class SplitConfig(Section):
    val_fraction: Fraction = 0.1
    seed: Seed = 42


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
    """How much of a recipe to run: the full benchmark, or the quick profile's cut-down."""

    epochs: Annotated[int, Range(lo=1)] = 10
    train_subset: Annotated[int, Range(lo=100)] | None = None
    # Validation and test images scored (stratified subset): big networks on a CPU spend most of a quick
    # run evaluating otherwise. null = all; the report and metrics state how many were used.
    eval_subset: Annotated[int, Range(lo=100)] | None = None
    # Model options for this budget only, over the recipe's `model`; logged with the run like every option.
    model: dict[str, Any] = {}


class RecipeConfig(Section):
    model: dict[str, Any] = {}
    init: Literal["default", "he", "xavier"] = "default"
    batch_size: Annotated[int, Range(lo=1)] = 128
    eval_batch_size: Annotated[int, Range(lo=1)] = 1000
    optimizer: OptimizerConfig = OptimizerConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    augment: AugmentConfig = AugmentConfig()
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()
    label_smoothing: Annotated[float, Range(lo=0, hi=1, hi_open=True)] = 0.0
    grad_clip: Positive | None = None  # max gradient norm; null = no clipping
    swa: SwaConfig = SwaConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    precision: Literal["fp32", "bf16", "auto"] = "fp32"  # bf16 autocast needs CUDA; auto = bf16 on CUDA only
    channels_last: bool = False
    compile: bool = False  # torch.compile the network for training
    tta_flip: bool = False  # average the logits of each image and its mirror at evaluation
    full: BudgetConfig = BudgetConfig()
    quick: BudgetConfig = BudgetConfig(epochs=1)

    def budget(self, profile: str) -> BudgetConfig:
        return getattr(self, profile)

    def model_options(self, profile: str) -> dict[str, Any]:
        return {**self.model, **self.budget(profile).model}

    def changed_from_default(self, names: typing.Iterable[str]) -> list[str]:
        """Which of `names` this recipe sets to something other than the default."""
        return [n for n in names if getattr(self, n) != RecipeConfig.model_fields[n].default]


class TrainConfig(Section):
    seed: Seed = 42
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: Annotated[int, Range(lo=0)] = 0
    deterministic: bool = True
    log_test_each_epoch: bool = True
    resume: bool = True  # continue an interrupted training of the same recipe, data and code


class EvaluateConfig(Section):
    misclassified: Annotated[int, Range(lo=0, hi=400)] = 36


class ReportConfig(Section):
    diminishing_returns_tolerance: Annotated[float, Range(lo=0, hi=1)] = 0.005


class Params(Section):
    """The whole of params.yaml."""

    profile: Literal["full", "quick"] = "full"
    architectures: list[str] = []
    mlflow: MlflowConfig = MlflowConfig()
    download: DownloadConfig = DownloadConfig()
    preprocess: PreprocessConfig = PreprocessConfig()
    split: SplitConfig = SplitConfig()
    train: TrainConfig = TrainConfig()
    recipes: dict[str, RecipeConfig] = {}
    evaluate: EvaluateConfig = EvaluateConfig()
    report: ReportConfig = ReportConfig()

    @property
    def experiment(self) -> str:
        return self.mlflow.experiment_for(self.profile)

    @property
    def registered_model(self) -> str:
        return self.mlflow.registered_model_for(self.profile)

    def recipe(self, arch: str) -> RecipeConfig:
        if arch not in self.recipes:
            known = ", ".join(sorted(self.recipes)) or "(none)"
            raise ConfigError(f"recipes.{arch}: no recipe for architecture '{arch}'; "
                              f"params.yaml has recipes for: {known}. Add a 'recipes.{arch}' section.")
        return self.recipes[arch]


def parse_params(data: Any) -> Params:
    """Validate a params mapping: types, ranges, and the checks that need no model registry."""
    if not isinstance(data, dict):
        raise ConfigError("params.yaml: expected a mapping of sections at the top level")
    try:
        params = Params.model_validate(data)
    except ValidationError as err:
        raise ConfigError(one_line(err.errors()[0], Params)) from None
    _check_cross_fields(params)
    return params


# ---------------------------------------------------------------------------- checks across keys


def _check_cross_fields(params: Params) -> None:
    if not params.architectures or len(set(params.architectures)) != len(params.architectures):
        raise ConfigError(f"architectures: got {params.architectures!r}, expected a non-empty list without "
                          "repeats of registered architectures (`fmnist models` lists them)")
    if params.mlflow.experiment == params.mlflow.quick_experiment:
        raise ConfigError("mlflow.quick_experiment: must differ from mlflow.experiment, so quick runs never mix "
                          "with full ones")
    for arch, recipe in params.recipes.items():
        _check_recipe(f"recipes.{arch}", recipe)
    classes = params.preprocess.classes
    if classes is not None:
        if len(classes) < 2 or len(set(classes)) != len(classes) or not all(0 <= c <= 9 for c in classes):
            raise ConfigError(f"preprocess.classes: got {classes!r}, expected null (all 10 classes) "
                              "or at least two distinct class indices between 0 and 9")


def _check_recipe(key: str, recipe: RecipeConfig) -> None:
    """Combinations of training options that cannot run together (whatever the model)."""
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
    for name in PROFILES:
        budget = recipe.budget(name)
        if recipe.batch_size > (budget.train_subset or 60000):
            raise ConfigError(f"{key}.batch_size: {recipe.batch_size} is larger than {name}.train_subset "
                              f"({budget.train_subset})")


# ---------------------------------------------------------------------------- loading


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `a.b.c=value` overrides (value parsed as YAML) to a params mapping, like `dvc exp run -S`."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. recipes.cnn4.full.epochs=5")
        dotted, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            problem = str(err).splitlines()[0]
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({problem}); quote it, "
                              "e.g. KEY='[1, 2]'") from None
        node = data
        parts = dotted.strip().split(".")
        for part in parts[:-1]:
            if node.get(part) is None:  # an empty section (`augment:`) means its defaults
                node[part] = {}
            node = node[part]
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: '{part}' is not a section")
        node[parts[-1]] = value
    return data


def read_params_file(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found; run from the project root or pass --params")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        problem = " ".join(str(err).split())
        raise ConfigError(f"{path}: not valid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (profile:, recipes:, ...) at the top level, "
                          f"got a {type(data).__name__}")
    return data


def load_params(path: str | Path = "params.yaml", overrides: list[str] | None = None) -> Params:
    data = read_params_file(path)
    if overrides:
        data = apply_overrides(data, overrides)
    try:
        return parse_params(data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def to_flat_dict(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten a config object to dotted keys, for logging as MLflow params."""
    if isinstance(obj, BaseModel):
        obj = {name: getattr(obj, name) for name in type(obj).model_fields}
    out: dict[str, Any] = {}
    if isinstance(obj, dict) and obj:
        for k, v in obj.items():
            out.update(to_flat_dict(v, f"{prefix}.{k}" if prefix else str(k)))
    else:
        out[prefix] = obj
    return out
