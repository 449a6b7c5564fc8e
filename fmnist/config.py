"""The one place that reads params.yaml: typed, validated configuration objects.

Every section of params.yaml maps to a frozen dataclass. Loading checks unknown keys, types and
ranges before any work is done, and the error names the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

PROFILES = ("full", "quick")


class ConfigError(ValueError):
    """params.yaml (or an override) holds a value the pipeline cannot run with."""


def _spec(default: Any = dataclasses.MISSING, *, lo=None, hi=None, lo_open=False, hi_open=False,
          default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with an allowed numeric range, checked by `build`."""
    meta = {"lo": lo, "hi": hi, "lo_open": lo_open, "hi_open": hi_open}
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


# ---------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class MlflowConfig:
    experiment: str = "fmnist"
    quick_experiment: str = "fmnist-quick"
    registered_model: str = "fmnist-classifier"
    quick_registered_model: str = "fmnist-quick-classifier"

    def experiment_for(self, profile: str) -> str:
        return self.quick_experiment if profile == "quick" else self.experiment

    def registered_model_for(self, profile: str) -> str:
        return self.quick_registered_model if profile == "quick" else self.registered_model


@dataclass(frozen=True)
class DownloadConfig:
    mirrors: list[str] = field(default_factory=list)
    timeout_s: float = _spec(10.0, lo=0, lo_open=True)
    retries: int = _spec(2, lo=0)
    local_dirs: list[str] = field(default_factory=lambda: ["/usr/share/datasets/fashion-mnist"])


@dataclass(frozen=True)
class PreprocessConfig:
    classes: list[int] | None = None


@dataclass(frozen=True)
class SplitConfig:
    val_fraction: float = _spec(0.1, lo=0, hi=1, lo_open=True, hi_open=True)
    seed: int = _spec(42, lo=0, hi=2**32 - 1)


@dataclass(frozen=True)
class OptimizerConfig:
    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = _spec(1e-3, lo=0, lo_open=True)
    weight_decay: float = _spec(0.0, lo=0)
    momentum: float = _spec(0.0, lo=0, hi=1, hi_open=True)
    nesterov: bool = False


@dataclass(frozen=True)
class SchedulerConfig:
    """Learning-rate schedule. onecycle and cyclic step every batch, the others once per epoch."""

    name: Literal["none", "plateau", "step", "multistep", "cosine", "onecycle", "cyclic"] = "none"
    factor: float = _spec(0.1, lo=0, hi=1, lo_open=True, hi_open=True)  # plateau, step, multistep
    patience: int = _spec(2, lo=0)  # plateau
    step_size: int = _spec(10, lo=1)  # step: epochs between reductions
    milestones: list[int] = field(default_factory=list)  # multistep: epochs after which lr *= factor
    min_lr: float = _spec(0.0, lo=0)  # plateau, cosine
    max_lr: float | None = _spec(None, lo=0, lo_open=True)  # onecycle peak; cyclic upper bound
    pct_start: float = _spec(0.25, lo=0, hi=1, lo_open=True, hi_open=True)  # onecycle: share of steps warming up
    cycle_epochs: float = _spec(2.0, lo=0, lo_open=True)  # cyclic: epochs per half cycle (base -> max)


@dataclass(frozen=True)
class SwaConfig:
    """Stochastic weight averaging over the last part of the budget (Izmailov et al., 2018)."""

    enabled: bool = False
    start: float = _spec(0.75, lo=0, hi=1, hi_open=True)  # share of the epochs before averaging starts
    lr: float = _spec(0.01, lo=0, lo_open=True)  # constant SWA learning rate, reached by annealing
    anneal_epochs: int = _spec(1, lo=0)


@dataclass(frozen=True)
class FinetuneConfig:
    """Two-phase transfer: train the head on a frozen backbone, then unfreeze `stages` with a small lr."""

    enabled: bool = False
    start: float = _spec(0.3, lo=0, hi=1, lo_open=True, hi_open=True)  # share of the epochs for phase 1
    lr: float = _spec(1e-5, lo=0, lo_open=True)
    stages: list[str] = field(default_factory=lambda: ["layer3", "layer4"])


@dataclass(frozen=True)
class AugmentConfig:
    """Whole-batch tensor augmentation of training images (never of validation or test images)."""

    hflip: float = _spec(0.0, lo=0, hi=1)  # probability of a horizontal flip
    translate: int = _spec(0, lo=0, hi=8)  # random shift up to this many pixels = random crop with zero padding
    zoom: float = _spec(0.0, lo=0, hi=0.5)  # random scale in [1 - zoom, 1 + zoom], about the centre
    erasing: float = _spec(0.0, lo=0, hi=1)  # probability of erasing one random rectangle (Zhong et al.)
    erasing_max_area: float = _spec(0.33, lo=0.02, hi=1)  # largest erased share of the image


@dataclass(frozen=True)
class EarlyStoppingConfig:
    monitor: Literal["val_acc", "val_loss"] = "val_acc"
    patience: int = _spec(5, lo=1)
    min_delta: float = _spec(0.0, lo=0)
    stop: bool = True


@dataclass(frozen=True)
class BudgetConfig:
    """How much of a recipe to run: the full benchmark, or the quick profile's cut-down."""

    epochs: int = _spec(10, lo=1)
    train_subset: int | None = _spec(None, lo=100)
    # Validation and test images scored (stratified subset): big networks on a CPU spend most of a quick
    # run evaluating otherwise. null = all; the report and metrics state how many were used.
    eval_subset: int | None = _spec(None, lo=100)
    # Model options for this budget only, over the recipe's `model` (e.g. a narrower network, or no
    # pretrained weights, for the quick smoke run); logged with the run like every option.
    model: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RecipeConfig:
    model: dict[str, Any] = field(default_factory=dict)
    init: Literal["default", "he", "xavier"] = "default"
    batch_size: int = _spec(128, lo=1)
    eval_batch_size: int = _spec(1000, lo=1)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    label_smoothing: float = _spec(0.0, lo=0, hi=1, hi_open=True)
    grad_clip: float | None = _spec(None, lo=0, lo_open=True)  # max gradient norm; null = no clipping
    swa: SwaConfig = field(default_factory=SwaConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    precision: Literal["fp32", "bf16", "auto"] = "fp32"  # bf16 autocast needs CUDA; auto = bf16 on CUDA only
    channels_last: bool = False
    compile: bool = False  # torch.compile the network for training
    tta_flip: bool = False  # average the logits of each image and its mirror at evaluation
    full: BudgetConfig = field(default_factory=BudgetConfig)
    quick: BudgetConfig = field(default_factory=lambda: BudgetConfig(epochs=1))

    def budget(self, profile: str) -> BudgetConfig:
        return self.quick if profile == "quick" else self.full

    def model_options(self, profile: str) -> dict[str, Any]:
        return {**self.model, **self.budget(profile).model}


@dataclass(frozen=True)
class TrainConfig:
    seed: int = _spec(42, lo=0, hi=2**32 - 1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = _spec(0, lo=0)
    deterministic: bool = True
    log_test_each_epoch: bool = True


@dataclass(frozen=True)
class EvaluateConfig:
    misclassified: int = _spec(36, lo=0, hi=400)


@dataclass(frozen=True)
class ReportConfig:
    diminishing_returns_tolerance: float = _spec(0.005, lo=0, hi=1)


@dataclass(frozen=True)
class Params:
    """The whole of params.yaml."""

    profile: Literal["full", "quick"] = "full"
    architectures: list[str] = field(default_factory=list)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    download: DownloadConfig = field(default_factory=DownloadConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    recipes: dict[str, RecipeConfig] = field(default_factory=dict)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

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


# ---------------------------------------------------------------------------- building


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false",
            type(None): "null", Any: "any value"}.get(tp, getattr(tp, "__name__", str(tp)))


def _convert(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _convert(value, option, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: got {value!r}, expected {_type_name(tp)}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{key}: got {value!r}, allowed values: {', '.join(map(str, allowed))}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: got {value!r}, expected {_type_name(tp)}")
        (item_tp,) = typing.get_args(tp)
        return [_convert(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: got {value!r}, expected a mapping")
        _, val_tp = typing.get_args(tp)
        return {str(k): _convert(v, val_tp, f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: got {value!r}, expected a mapping")
        return build(tp, value, key)
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{key}: got {value!r}, expected null")
        return None
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: got {value!r}, expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: got {value!r}, expected an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: got {value!r}, expected a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: got {value!r}, expected a string")
        return value
    raise TypeError(f"unsupported config type {tp} at {key}")


def _check_range(value: Any, meta: typing.Mapping, key: str) -> None:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    lo, hi = meta.get("lo"), meta.get("hi")
    too_low = lo is not None and (value <= lo if meta.get("lo_open") else value < lo)
    too_high = hi is not None and (value >= hi if meta.get("hi_open") else value > hi)
    if too_low or too_high:
        left = "(" if meta.get("lo_open") else "["
        right = ")" if meta.get("hi_open") else "]"
        lo_s = "-inf" if lo is None else lo
        hi_s = "inf" if hi is None else hi
        raise ConfigError(f"{key}: got {value!r}, allowed range {left}{lo_s}, {hi_s}{right}")


def build(cls: type, data: dict, prefix: str = "") -> Any:
    """Build dataclass `cls` from `data`, naming the offending key in every error."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = prefix or "params.yaml"
        raise ConfigError(f"{_join(prefix, unknown[0])}: unknown key in {where}; "
                          f"allowed keys: {', '.join(fields)}")
    kwargs = {}
    for name, value in data.items():
        key = _join(prefix, name)
        converted = _convert(value, hints[name], key)
        _check_range(converted, fields[name].metadata, key)
        kwargs[name] = converted
    return cls(**kwargs)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def parse_params(data: dict) -> Params:
    if not isinstance(data, dict):
        raise ConfigError("params.yaml: expected a mapping of sections at the top level")
    params = build(Params, data)
    _check_cross_fields(params)
    return params


def _check_cross_fields(params: Params) -> None:
    from fmnist.models import check_model_options, list_models, model_info  # the registry lists the architectures

    known = list_models()
    if not params.architectures or len(set(params.architectures)) != len(params.architectures):
        raise ConfigError(f"architectures: got {params.architectures!r}, expected a non-empty list without "
                          f"repeats from: {', '.join(known)}")
    if params.mlflow.experiment == params.mlflow.quick_experiment:
        raise ConfigError("mlflow.quick_experiment: must differ from mlflow.experiment, so quick runs never mix "
                          "with full ones")
    for i, arch in enumerate(params.architectures):
        if arch not in known:
            raise ConfigError(f"architectures[{i}]: unknown architecture '{arch}'; known architectures: "
                              f"{', '.join(known)}")
        params.recipe(arch)
    for arch, recipe in params.recipes.items():
        key = f"recipes.{arch}"
        if arch not in known:
            raise ConfigError(f"{key}: unknown architecture '{arch}'; known architectures: {', '.join(known)}")
        for where, options in (("model", recipe.model), ("full.model", recipe.model_options("full")),
                               ("quick.model", recipe.model_options("quick"))):
            problem = check_model_options(arch, options)
            if problem:
                raise ConfigError(f"{key}.{where}: {problem}")
        _check_recipe(key, model_info(arch), recipe, params.train)
    classes = params.preprocess.classes
    if classes is not None:
        if len(classes) < 2 or len(set(classes)) != len(classes) or not all(0 <= c <= 9 for c in classes):
            raise ConfigError(f"preprocess.classes: got {classes!r}, expected null (all 10 classes) "
                              "or at least two distinct class indices between 0 and 9")


TORCH_ONLY_FIELDS = ("init", "batch_size", "eval_batch_size", "optimizer", "scheduler", "augment", "early_stopping",
                     "label_smoothing", "grad_clip", "swa", "finetune", "precision", "channels_last", "compile",
                     "tta_flip")


def _check_recipe(key: str, info: Any, recipe: RecipeConfig, train: TrainConfig) -> None:
    """Combinations of recipe options that cannot run together, rejected before any work."""
    if info.kind == "sklearn":
        default = RecipeConfig()
        changed = [f for f in TORCH_ONLY_FIELDS if getattr(recipe, f) != getattr(default, f)]
        if changed:
            raise ConfigError(f"{key}.{changed[0]}: '{info.name}' is a scikit-learn baseline; only model, full "
                              "and quick apply to it. Remove this key.")
        return
    opt, sched = recipe.optimizer, recipe.scheduler
    pretrained = any(recipe.model_options(p).get("pretrained", "pretrained" in info.options) for p in PROFILES)
    if recipe.init != "default" and pretrained:
        raise ConfigError(f"{key}.init: '{recipe.init}' would overwrite the pretrained weights of '{info.name}'; "
                          "use init: default, or model.pretrained: false")
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
    if recipe.finetune.enabled:
        if not info.finetune:
            raise ConfigError(f"{key}.finetune: '{info.name}' has no frozen backbone to fine-tune; finetune "
                              "applies to transfer models (e.g. resnet50_transfer)")
        if recipe.swa.enabled:
            raise ConfigError(f"{key}.swa: SWA and a fine-tuning phase cannot be combined; disable one of them")
        unknown = [s for s in recipe.finetune.stages if s not in info.finetune]
        if unknown or not recipe.finetune.stages:
            raise ConfigError(f"{key}.finetune.stages: got {recipe.finetune.stages}, expected stages of "
                              f"'{info.name}' among: {', '.join(info.finetune)}")
        if sched.name in ("onecycle", "cyclic"):
            raise ConfigError(f"{key}.scheduler: {sched.name} would raise the fine-tuning lr back to max_lr; use "
                              "none, step, multistep, cosine or plateau with finetune")
        if recipe.early_stopping.stop:
            raise ConfigError(f"{key}.early_stopping.stop: early stopping could end the run in the frozen phase "
                              "before fine-tuning starts; set stop: false (the stopping point is still recorded)")
        for name, budget in (("full", recipe.full), ("quick", recipe.quick)):
            if budget.epochs < 2:
                raise ConfigError(f"{key}.{name}.epochs: fine-tuning needs at least 2 epochs (one per phase); "
                                  f"got {budget.epochs}")
    if recipe.precision == "bf16" and train.device == "cpu":
        raise ConfigError(f"{key}.precision: bf16 autocast is for CUDA devices but train.device is cpu; "
                          "use fp32, or auto (bf16 on CUDA, fp32 on the CPU)")
    for name, budget in (("full", recipe.full), ("quick", recipe.quick)):
        if recipe.batch_size > (budget.train_subset or 60000):
            raise ConfigError(f"{key}.batch_size: {recipe.batch_size} is larger than {name}.train_subset "
                              f"({budget.train_subset})")


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `a.b.c=value` overrides (value parsed as YAML) to a params mapping, like `dvc exp run -S`."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. recipes.cnn4.full.epochs=5")
        dotted, raw = item.split("=", 1)
        node = data
        parts = dotted.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: '{part}' is not a section")
        node[parts[-1]] = yaml.safe_load(raw)
    return data


def load_params(path: str | Path = "params.yaml", overrides: list[str] | None = None) -> Params:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found; run from the project root or pass --params")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if overrides:
        data = apply_overrides(data, overrides)
    try:
        return parse_params(data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def to_flat_dict(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten a config object to dotted keys, for logging as MLflow params."""
    if dataclasses.is_dataclass(obj):
        obj = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    out: dict[str, Any] = {}
    if isinstance(obj, dict) and obj:
        for k, v in obj.items():
            out.update(to_flat_dict(v, _join(prefix, str(k))))
    else:
        out[prefix] = obj
    return out
