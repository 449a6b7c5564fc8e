"""The one place that reads params.yaml: a typed, validated, frozen configuration (pydantic v2).

A leaf: schema and loading only, no torch and no model imports. What needs the model registry
(architecture names, model options, what a model kind accepts) is checked by
`fmnist.models.checks`; what needs the machine (device, precision) by `fmnist.training.plan`.
Every error is one line naming the key and what is allowed, e.g.
`params.yaml: recipes.cnn4.full.epochs: got 0, allowed range [1, inf]`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ValidationError

from fmnist.core.errors import ConfigError
from fmnist.core.recipe import (PROFILES, AugmentConfig, BudgetConfig, EarlyStoppingConfig, FinetuneConfig,  # noqa: F401
                                 Fraction, NonNegative, OptimizerConfig, Positive, RecipeConfig, SchedulerConfig,
                                 Seed, SwaConfig)
from fmnist.core.validation import Range, Section, one_line



class MlflowConfig(Section):
    """One experiment and one registered model per profile, so runs of different budgets never mix."""

    experiment: str = "fmnist"
    cpu_experiment: str = "fmnist-cpu"
    quick_experiment: str = "fmnist-quick"
    registered_model: str = "fmnist-classifier"
    cpu_registered_model: str = "fmnist-cpu-classifier"
    quick_registered_model: str = "fmnist-quick-classifier"

    def experiment_for(self, profile: str) -> str:
        return getattr(self, "experiment" if profile == "full" else f"{profile}_experiment")

    def registered_model_for(self, profile: str) -> str:
        return getattr(self, "registered_model" if profile == "full" else f"{profile}_registered_model")


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


class TrainConfig(Section):
    seed: Seed = 42
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: Annotated[int, Range(lo=0)] = 0
    deterministic: bool = True
    log_test_each_epoch: bool = True
    resume: bool = True  # continue an interrupted training of the same recipe, data and code


class EvaluateConfig(Section):
    misclassified: Annotated[int, Range(lo=0, hi=400)] = 36


class GateConfig(Section):
    """When a retrained model replaces the champion (fmnist/ci/gate.py)."""

    margin: Annotated[float, Range(lo=0, hi=1)] = 0.002  # validation accuracy it must gain
    test_tolerance: Annotated[float, Range(lo=0, hi=1)] = 0.005  # test accuracy it may lose


class ReportConfig(Section):
    diminishing_returns_tolerance: Annotated[float, Range(lo=0, hi=1)] = 0.005
    gate: GateConfig = GateConfig()


class Params(Section):
    """The whole of params.yaml."""

    profile: Literal["full", "cpu", "quick"] = "full"
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
    for names in (("experiment", "cpu_experiment", "quick_experiment"),
                  ("registered_model", "cpu_registered_model", "quick_registered_model")):
        values = [getattr(params.mlflow, n) for n in names]
        clash = next((n for i, n in enumerate(names) if values[i] in values[:i]), None)
        if clash:
            raise ConfigError(f"mlflow.{clash}: {', '.join(names)} must all differ, so runs of different "
                              f"profiles never mix; got {values}")
    for arch, recipe in params.recipes.items():
        _check_recipe(f"recipes.{arch}", recipe)
        for profile in PROFILES:
            if recipe.budget(profile).recipe:
                _check_recipe(f"recipes.{arch}.{profile}.recipe", recipe.for_profile(profile, f"recipes.{arch}"))
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
