"""One plan per run: a resolved recipe turned once (network, model options, device, runtime, precision,
trainer) into a value the workflow passes down."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from fmnist.core.config import Recipe, RecipeRun, TrainConfig, to_flat_dict
from fmnist.core.errors import DeviceError
from fmnist.core.recipe import BUDGET_RUN_FIELDS
from fmnist.core.runs import StopRule
from fmnist.models import ModelInfo
from fmnist.models.checks import check_recipe, network_of
from fmnist.training.runtime import Runtime
from fmnist.training.trainers import Trainer, trainer_for


@dataclass(frozen=True)
class RunPlan:
    arch: str  # the recipe's name: its stage, output folders and MLflow run name
    info: ModelInfo  # its network
    trainer: Trainer
    profile: str  # recorded on the run only
    experiment: str
    recipe: Recipe
    model_options: dict[str, Any]  # the builder's options as run: the recipe's, a baseline's seed
    train: TrainConfig
    device: torch.device
    runtime: Runtime | None  # networks only
    seed: int  # this run's; a recipe with `seeds: n` plans n runs, seeds train.seed .. train.seed + n - 1

    @property
    def stop_rule(self) -> StopRule:
        """The early-stopping rule the report restates (whether training actually stops is not part of it)."""
        es = self.recipe.early_stopping
        return StopRule(es.monitor, es.patience, es.min_delta)

    def logged_params(self, sizes: dict[str, int]) -> dict[str, Any]:
        """The run's MLflow params: the recipe as it applies to this kind, and what the run was given."""
        skipped = (*BUDGET_RUN_FIELDS, "network", "model", *self.trainer.unlogged_fields)
        flat = {f"recipe.{k}": v for k, v in to_flat_dict(self.recipe).items() if k.split(".")[0] not in skipped}
        flat.update({f"recipe.model.{k}": v for k, v in to_flat_dict(self.model_options).items() if k})
        flat.update({"arch": self.arch, "network": self.info.name, "kind": self.info.kind.value,
                     "profile": self.profile, "epochs": self.trainer.epochs(self.recipe),
                     "train_subset": self.recipe.train_subset, "eval_subset": self.recipe.eval_subset,
                     "seed": self.seed, "deterministic": self.train.deterministic, "device": str(self.device),
                     # the precision auto resolved to on this machine: part of the resume key, like the recipe
                     **({"precision_used": self.runtime.precision} if self.runtime is not None else {}),
                     **{f"n_{k}": v for k, v in sizes.items()}})
        return flat


def seeds_of(run: RecipeRun) -> list[int]:
    """The seeds a train stage runs for its recipe, the first one's model the stage's."""
    return [run.train.seed + i for i in range(run.recipe.seeds)]


def plan_run(run: RecipeRun, seed: int | None = None) -> RunPlan:
    """Turn and check everything a run of the recipe needs before any work: a bad value fails here."""
    seed = run.train.seed if seed is None else seed
    recipe = run.recipe
    info = network_of(run.name, recipe)
    check_recipe(f"recipes.{run.name}", info, recipe)
    trainer = trainer_for(info)
    device = trainer.device(run.train.device)
    options = trainer.model_options(info, recipe.model, seed)
    try:
        runtime = trainer.runtime(recipe, device)
    except DeviceError as err:
        raise DeviceError(f"recipes.{run.name}.precision: {err}") from None
    return RunPlan(arch=run.name, info=info, trainer=trainer, profile=run.profile, experiment=run.experiment,
                   recipe=recipe, model_options=options, train=run.train, device=device, runtime=runtime, seed=seed)
