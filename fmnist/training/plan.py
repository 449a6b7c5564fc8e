"""One plan per run: params and architecture resolved once (recipe, budget, model options, device,
runtime, precision, trainer) into a value the workflow passes down."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from fmnist.core.config import PROFILES, BudgetConfig, Params, RecipeConfig, TrainConfig, to_flat_dict
from fmnist.core.errors import DeviceError
from fmnist.core.runs import StopRule
from fmnist.models import ModelInfo, model_info
from fmnist.models.checks import check_params
from fmnist.training.runtime import Runtime
from fmnist.training.trainers import Trainer, trainer_for


@dataclass(frozen=True)
class RunPlan:
    arch: str
    info: ModelInfo
    trainer: Trainer
    profile: str
    experiment: str
    recipe: RecipeConfig
    budget: BudgetConfig
    model_options: dict[str, Any]  # the builder's options as run: the recipe's, this budget's, a baseline's seed
    train: TrainConfig
    device: torch.device
    runtime: Runtime | None  # networks only
    seed: int  # this run's; a budget with `seeds: n` plans n runs, seeds train.seed .. train.seed + n - 1

    @property
    def stop_rule(self) -> StopRule:
        """The early-stopping rule the report restates (whether training actually stops is not part of it)."""
        es = self.recipe.early_stopping
        return StopRule(es.monitor, es.patience, es.min_delta)

    def logged_params(self, sizes: dict[str, int]) -> dict[str, Any]:
        """The run's MLflow params: the recipe as it applies to this kind, and what the run was given."""
        skipped = (*PROFILES, "model", *self.trainer.unlogged_fields)
        flat = {f"recipe.{k}": v for k, v in to_flat_dict(self.recipe).items() if k.split(".")[0] not in skipped}
        flat.update({f"recipe.model.{k}": v for k, v in to_flat_dict(self.model_options).items() if k})
        flat.update({"arch": self.arch, "kind": self.info.kind.value, "profile": self.profile,
                     "epochs": self.trainer.epochs(self.budget), "train_subset": self.budget.train_subset,
                     "eval_subset": self.budget.eval_subset, "seed": self.seed,
                     "deterministic": self.train.deterministic, "device": str(self.device),
                     # the precision auto resolved to on this machine: part of the resume key, like the recipe
                     **({"precision_used": self.runtime.precision} if self.runtime is not None else {}),
                     **{f"n_{k}": v for k, v in sizes.items()}})
        return flat


def seeds_of(params: Params, arch: str) -> list[int]:
    """The seeds a train stage runs for `arch` under the current profile, the first one's model the stage's."""
    return [params.train.seed + i for i in range(params.recipe(arch).budget(params.profile).seeds)]


def plan_run(params: Params, arch: str, seed: int | None = None) -> RunPlan:
    """Resolve and check everything a run of `arch` needs before any work: a bad value fails here."""
    seed = params.train.seed if seed is None else seed
    recipe = params.recipe(arch).for_profile(params.profile, f"recipes.{arch}")  # with the budget's own keys
    check_params(params, [arch])
    info = model_info(arch)
    trainer = trainer_for(info)
    device = trainer.device(params.train.device)
    options = trainer.model_options(info, recipe.model_options(params.profile), seed)
    try:
        runtime = trainer.runtime(recipe, device)
    except DeviceError as err:
        raise DeviceError(f"recipes.{arch}.precision: {err}") from None
    return RunPlan(arch=arch, info=info, trainer=trainer, profile=params.profile, experiment=params.experiment,
                   recipe=recipe, budget=recipe.budget(params.profile), model_options=options, train=params.train,
                   device=device, runtime=runtime, seed=seed)
