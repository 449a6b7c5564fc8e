"""The one place that reads params.yaml: a typed, validated, frozen configuration (pydantic v2), resolved
once for the active profile.

`ParamsFile` is the file as written: profiles, recipe bases, recipes with their budgets. `Params` is
what every layer below sees: the active profile's experiment, registered model and `train:` keys, and
one flat `Recipe` per recipe name (fmnist.core.layers merges the layers). Nothing below this module
reads a profile's name except to record it.

A leaf: schema and loading only, no torch and no model imports. What needs the model registry
(network names, model options, what a model kind accepts) is checked by `fmnist.models.checks`; what
needs the machine (device, precision) by `fmnist.training.plan`. Every error is one line naming the
key where the value is written and what is allowed (`recipes.cnn4.budgets.full.epochs: got 0, ...`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ValidationError

from fmnist.core.errors import ConfigError
from fmnist.core.layers import check_budget, check_layer, resolve_recipe
from fmnist.core.recipe import Fraction, Positive, Recipe, Seed, check_combinations
from fmnist.core.validation import Range, Section, one_line

NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")  # profile and recipe names: stage names, folders, MLflow runs


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
    """When a retrained model replaces the champion (fmnist/reporting/gate.py)."""

    margin: Annotated[float, Range(lo=0, hi=1)] = 0.002  # validation accuracy it must gain
    test_tolerance: Annotated[float, Range(lo=0, hi=1)] = 0.005  # test accuracy it may lose


class ReportConfig(Section):
    diminishing_returns_tolerance: Annotated[float, Range(lo=0, hi=1)] = 0.005
    gate: GateConfig = GateConfig()


class ProfileConfig(Section):
    """One profile, named once: what it is for, where its runs go, and its defaults."""

    about: str = ""
    experiment: str  # its MLflow experiment: runs of different profiles never mix
    registered_model: str  # the report registers its best model here, with the alias `champion`
    budget: dict[str, Any] = {}  # budget keys every recipe gets under its own budget for this profile
    train: dict[str, Any] = {}  # `train:` keys this profile changes (e.g. deterministic: false on a GPU)
    parts: dict[str, list[str]] = {}  # groups of recipes, one GPU command each (docs/gpu.md)


class ParamsFile(Section):
    """params.yaml as written."""

    profile: str = "full"
    profiles: dict[str, ProfileConfig] = {}
    train_recipes: list[str] = []  # the recipes the DAG trains: one train@NAME and evaluate@NAME stage each
    download: DownloadConfig = DownloadConfig()
    preprocess: PreprocessConfig = PreprocessConfig()
    split: SplitConfig = SplitConfig()
    train: TrainConfig = TrainConfig()
    recipe_bases: dict[str, dict[str, Any]] = {}
    recipes: dict[str, dict[str, Any] | None] = {}
    evaluate: EvaluateConfig = EvaluateConfig()
    report: ReportConfig = ReportConfig()
    sweeps: dict[str, Any] = {}  # `fmnist sweep`'s searches, checked by fmnist/sweep/space.py; no stage reads it

    def resolve(self, profile: str | None = None) -> Params:
        """The params as `profile` (default: the file's `profile:`) runs them."""
        name = self.profile if profile is None else profile
        if name not in self.profiles:
            raise ConfigError(f"profile: got {name!r}, allowed values: {', '.join(self.profiles)} (the names under "
                              "profiles:; add a profile there)")
        chosen, train = self.profiles[name], self.train_of(name)
        recipes = {r: resolve_recipe(r, layer or {}, self.recipe_bases, name, chosen.budget)
                   for r, layer in self.recipes.items()}
        params = Params(profile=name, about=chosen.about, experiment=chosen.experiment,
                        registered_model=chosen.registered_model, train_recipes=list(self.train_recipes),
                        parts=dict(chosen.parts),
                        download=self.download, preprocess=self.preprocess, split=self.split, train=train,
                        recipes=recipes, evaluate=self.evaluate, report=self.report)
        for recipe_name, recipe in recipes.items():
            try:
                check_combinations(f"recipes.{recipe_name}", recipe)
            except ConfigError as err:
                raise ConfigError(f"{err} (as profile {name} resolves it; `fmnist recipe {recipe_name} --profile "
                                  f"{name}` prints the merged recipe)") from None
        return params

    def train_of(self, profile: str) -> TrainConfig:
        """`train:` with the profile's own train keys over it."""
        try:
            return TrainConfig.model_validate({**self.train.model_dump(), **self.profiles[profile].train})
        except ValidationError as err:
            raise ConfigError(f"profiles.{profile}.train.{one_line(err.errors()[0], TrainConfig)}") from None


class RecipeRun(Section):
    """What one train stage runs: a resolved recipe and the profile's context. The resolve stage writes
    one per recipe (resolved/NAME.json) and each train stage depends on its own file alone, so a change
    anywhere in the layers reruns exactly the stages whose resolved recipe changed."""

    name: str
    profile: str  # recorded on the run, never branched on
    experiment: str
    train: TrainConfig
    recipe: Recipe

    def to_json(self) -> str:
        return self.model_dump_json(indent=1) + "\n"

    @classmethod
    def read(cls, path: str | Path) -> RecipeRun:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: no resolved recipe; run `dvc repro resolve` (it writes one per recipe "
                              "in train_recipes from params.yaml)")
        try:
            return cls.model_validate_json(path.read_text())
        except ValidationError as err:
            raise ConfigError(f"{path}: not a resolved recipe of this version ({one_line(err.errors()[0], cls)}); "
                              "run `dvc repro resolve` again") from None


class Params(Section):
    """The params the code runs with: one profile, resolved. No layers, no other profiles."""

    profile: str
    about: str = ""
    experiment: str
    registered_model: str
    train_recipes: list[str]
    parts: dict[str, list[str]] = {}  # the profile's GPU command parts (ProfileConfig.parts)
    download: DownloadConfig
    preprocess: PreprocessConfig
    split: SplitConfig
    train: TrainConfig
    recipes: dict[str, Recipe]
    evaluate: EvaluateConfig
    report: ReportConfig

    def recipe(self, name: str) -> Recipe:
        if name not in self.recipes:
            known = ", ".join(sorted(self.recipes)) or "(none)"
            raise ConfigError(f"recipes.{name}: no recipe '{name}'; params.yaml has recipes: {known}. Add a "
                              f"'recipes.{name}' section.")
        return self.recipes[name]

    def run_of(self, name: str) -> RecipeRun:
        return RecipeRun(name=name, profile=self.profile, experiment=self.experiment, train=self.train,
                         recipe=self.recipe(name))


def parse_file(data: Any) -> ParamsFile:
    """Validate a params mapping as written: types, ranges, names, every layer on its own."""
    if not isinstance(data, dict):
        raise ConfigError("params.yaml: expected a mapping of sections at the top level")
    try:
        raw = ParamsFile.model_validate(data)
    except ValidationError as err:
        raise ConfigError(one_line(err.errors()[0], ParamsFile)) from None
    _check_file(raw)
    return raw


def parse_params(data: Any, profile: str | None = None) -> Params:
    """Validate a params mapping and resolve it for `profile` (default: its own `profile:`)."""
    return parse_file(data).resolve(profile)


# ---------------------------------------------------------------------------- checks across keys


def _check_file(raw: ParamsFile) -> None:
    if not raw.profiles:
        raise ConfigError("profiles: none defined; name at least one profile with its experiment and "
                          "registered_model (see the profiles: section of the project's params.yaml)")
    names = list(raw.profiles)
    for kind, values in (("profile", names), ("recipe", list(raw.recipes)), ("recipe base", list(raw.recipe_bases))):
        bad = next((v for v in values if not NAME.match(v)), None)
        if bad is not None:
            raise ConfigError(f"{kind} name {bad!r}: use letters, digits, '_' and '-', starting with a letter "
                              "(it names stages, folders and MLflow runs)")
    for field in ("experiment", "registered_model"):
        values = [getattr(p, field) for p in raw.profiles.values()]
        clash = next((n for n, v in zip(names, values) if values.count(v) > 1), None)
        if clash:
            raise ConfigError(f"profiles.{clash}.{field}: every profile needs its own {field}, so runs of "
                              f"different profiles never mix; got {dict(zip(names, values))}")
    for name, profile in raw.profiles.items():
        budget = profile.budget
        if "model" in budget:  # options belong to one network; the profile's budget applies to every recipe
            raise ConfigError(f"profiles.{name}.budget.model: a profile's budget cannot set model options (they "
                              f"belong to one network); set them in a recipe's budgets.{name}.model")
        check_budget(budget, f"profiles.{name}.budget", names, raw.recipe_bases)
        for part, members in profile.parts.items():
            if unknown := [n for n in members if n not in raw.recipes]:
                raise ConfigError(f"profiles.{name}.parts.{part}: no recipe {', '.join(map(repr, unknown))}; a "
                                  f"part lists names under recipes: ({', '.join(raw.recipes)})")
        raw.train_of(name)
    for name, layer in raw.recipe_bases.items():
        check_layer(layer, f"recipe_bases.{name}", names, raw.recipe_bases)
    for name, layer in raw.recipes.items():
        check_layer(layer, f"recipes.{name}", names, raw.recipe_bases)
    if raw.profile not in raw.profiles:
        raise ConfigError(f"profile: got {raw.profile!r}, allowed values: {', '.join(names)} (the names under "
                          "profiles:; add a profile there)")
    for name in names:  # every profile resolves, not only the active one: a switch must not find a broken file
        raw.resolve(name)
    recipes = raw.train_recipes
    if not recipes or len(set(recipes)) != len(recipes):
        raise ConfigError(f"train_recipes: got {recipes!r}, expected a non-empty list without repeats of "
                          "names under recipes:")
    missing = next((r for r in recipes if r not in raw.recipes), None)
    if missing:
        raise ConfigError(f"train_recipes[{recipes.index(missing)}]: no recipe '{missing}' under recipes:; "
                          f"add 'recipes.{missing}' or remove it from the list")
    classes = raw.preprocess.classes
    if classes is not None:
        if len(classes) < 2 or len(set(classes)) != len(classes) or not all(0 <= c <= 9 for c in classes):
            raise ConfigError(f"preprocess.classes: got {classes!r}, expected null (all 10 classes) "
                              "or at least two distinct class indices between 0 and 9")


# ---------------------------------------------------------------------------- loading


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `a.b.c=value` overrides (value parsed as YAML) to a params mapping, like `dvc exp run -S`."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. recipes.cnn4.budgets.full.epochs=5")
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


def load_file(path: str | Path = "params.yaml", overrides: list[str] | None = None) -> ParamsFile:
    """params.yaml as written (with any `KEY=VALUE` overrides), validated layer by layer."""
    data = read_params_file(path)
    if overrides:
        data = apply_overrides(data, overrides)
    try:
        return parse_file(data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def load_params(path: str | Path = "params.yaml", overrides: list[str] | None = None,
                profile: str | None = None) -> Params:
    """params.yaml resolved for `profile` (default: its `profile:`): what every stage and command runs with."""
    raw = load_file(path, overrides)
    try:
        return raw.resolve(profile)
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
