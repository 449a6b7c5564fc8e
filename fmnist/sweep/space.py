"""The `sweeps:` section of params.yaml: per sweep, the recipe and profile it starts from, the keys it fixes to make
a trial cheap, and the space it searches. No DVC stage lists this section, so editing it reruns nothing.

A key is a dotted recipe key as `fmnist recipe NAME` prints it (`optimizer.lr`, `augment.translate`, `epochs`);
a dimension is a range (`{low, high, log}`: integers if both bounds are, else floats) or choices (a list of values,
or a mapping of names to blocks of keys: `scheduler: {choices: {cosine: {name: cosine}, plateau: {...}}}`).
Torch-free: the CLI checks a sweep before anything is imported or stored.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import ValidationError, model_validator

from fmnist.core.config import RecipeRun, load_file, read_params_file
from fmnist.core.errors import ConfigError
from fmnist.core.layers import merge
from fmnist.core.recipe import BUDGET_RUN_FIELDS, Recipe, check_combinations
from fmnist.core.validation import Range, Section, one_line

Scalar = bool | int | float | str | None


class Dimension(Section):
    low: int | float | None = None
    high: int | float | None = None
    log: bool = False
    choices: list[Scalar] | dict[str, dict[str, Any]] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Dimension:
        ranged = self.low is not None and self.high is not None
        if ranged == (self.choices is not None) or (not ranged and (self.low, self.high) != (None, None)):
            raise ValueError("give either low and high (a range) or choices (a list, or a mapping of names to "
                             "blocks of keys)")
        if ranged and not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if ranged and self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0; got {self.low}")
        if self.choices is not None and len(self.choices) < 1:
            raise ValueError("choices: give at least one")
        return self

    @property
    def integer(self) -> bool:
        return isinstance(self.low, int) and isinstance(self.high, int)

    def extremes(self) -> list[Any]:
        """The values a trial can get at the edges: what is checked against the recipe before a study exists."""
        if self.choices is None:
            return [self.low, self.high]
        return list(self.choices.values()) if isinstance(self.choices, dict) else list(self.choices)


class PrunerConfig(Section):
    """Optuna's MedianPruner: from epoch warmup_epochs + 1 on, once startup_trials trials are complete, a trial
    whose best validation accuracy so far is below the median of the complete trials' at the same epoch stops."""

    startup_trials: Annotated[int, Range(lo=0)] = 4
    warmup_epochs: Annotated[int, Range(lo=0)] = 1
    enabled: bool = True


class SweepConfig(Section):
    recipe: str
    profile: str | None = None  # default: params.yaml's profile
    trials: Annotated[int, Range(lo=1, hi=10000)] = 16
    fixed: dict[str, Any] = {}  # every search trial runs with these keys (a cheaper budget); never written back
    space: dict[str, Dimension]
    pruner: PrunerConfig = PrunerConfig()


def nested(dotted: dict[str, Any]) -> dict[str, Any]:
    """{'optimizer.lr': 0.1} -> {'optimizer': {'lr': 0.1}}."""
    out: dict[str, Any] = {}
    for key, value in dotted.items():
        node = out
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def with_keys(recipe: Recipe, dotted: dict[str, Any], where: str) -> Recipe:
    """The recipe with these dotted keys over it, checked like a recipe in params.yaml."""
    try:
        changed = Recipe.model_validate(merge(recipe.model_dump(), nested(dotted)))
    except ValidationError as err:
        raise ConfigError(f"{where}: {one_line(err.errors()[0], Recipe)}") from None
    check_combinations(where, changed)
    return changed


def check_key(key: str, where: str) -> None:
    """A dotted key must name a recipe key (or an option under model.)."""
    node: Any = Recipe
    for part in key.split("."):
        if node is dict:
            return  # model options: the network's builder checks them
        fields = getattr(node, "model_fields", {})
        if part not in fields:
            known = ", ".join(fields) if fields else "(none: a value)"
            raise ConfigError(f"{where}: '{key}' is not a recipe key ('{part}' not among {known})")
        annotation = fields[part].annotation
        node = dict if part == "model" else annotation
    return


def load_sweep(params_file, name: str) -> tuple[SweepConfig, RecipeRun]:
    """A sweep and the recipe it starts from, as its profile runs it, every key of its space checked."""
    raw = load_file(params_file)
    sweeps = read_params_file(params_file).get("sweeps") or {}
    if name not in sweeps:
        known = ", ".join(sorted(sweeps)) or "(none)"
        raise ConfigError(f"{params_file}: no sweep '{name}' under sweeps: (it has {known}); add 'sweeps.{name}' "
                          "(docs/scale.md)")
    where = f"sweeps.{name}"
    try:
        sweep = SweepConfig.model_validate(sweeps[name])
    except ValidationError as err:
        raise ConfigError(f"{params_file}: {where}.{one_line(err.errors()[0], SweepConfig)}") from None
    run = raw.resolve(sweep.profile).run_of(sweep.recipe)
    for key in [*sweep.fixed, *sweep.space]:
        check_key(key, f"{where}")
    cheap = with_keys(run.recipe, sweep.fixed, f"{where}.fixed")
    for key, dim in sweep.space.items():
        for value in dim.extremes():
            with_keys(cheap, {key: value} if not isinstance(value, dict) else
                      {f"{key}.{k}": v for k, v in value.items()}, f"{where}.space.{key}")
    return sweep, run


def chosen_keys(sweep: SweepConfig, params: dict[str, Any]) -> dict[str, Any]:
    """A trial's Optuna params as dotted recipe keys (a named choice becomes its block's keys); `seed` is not one."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        dim = sweep.space.get(key)
        if dim is not None and isinstance(dim.choices, dict):
            out.update({f"{key}.{k}": v for k, v in dim.choices[value].items()})
        elif key != "seed":
            out[key] = value
    return out


def budget_or_recipe(key: str) -> str:
    """Where a recipe key lives in a profile's budget: its run fields and model options at the budget's level,
    the training keys under its `recipe:`."""
    return key if key.split(".")[0] in (*BUDGET_RUN_FIELDS, "model") else f"recipe.{key}"
