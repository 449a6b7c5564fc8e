"""Checks that need the model registry: network names, model options, and the recipe options a
network's kind or family accepts. Run before any work, with the key and the fix in one line."""

from __future__ import annotations

from typing import Any

from fmnist.core.config import ConfigError, Params, ParamsFile, Recipe
from fmnist.models.registry import ModelInfo, ModelKind, list_models, model_info

# What only a network reads: a scikit-learn baseline takes network, model and the run sizes alone.
NETWORK_ONLY_FIELDS = ("init", "batch_size", "eval_batch_size", "optimizer", "scheduler", "augment",
                       "early_stopping", "label_smoothing", "grad_clip", "swa", "finetune", "precision",
                       "channels_last", "compile", "tta_flip")
IGNORED_BY_KIND = {ModelKind.TORCH: (), ModelKind.SKLEARN: NETWORK_ONLY_FIELDS}


def check_params(params: Params, recipes: list[str] | None = None) -> None:
    """Every recipe (or those named) names a registered network, and its options fit that network."""
    for name in recipes if recipes is not None else params.recipes:
        recipe = params.recipe(name)
        check_recipe(f"recipes.{name}", network_of(name, recipe), recipe)


def check_every_profile(raw: ParamsFile) -> None:
    """check_params for every profile the file defines (before switching to one, or in CI)."""
    for profile in raw.profiles:
        try:
            check_params(raw.resolve(profile))
        except ConfigError as err:
            raise ConfigError(f"{err} (in profile {profile})") from None


def network_of(name: str, recipe: Recipe) -> ModelInfo:
    if recipe.network not in list_models():
        raise ConfigError(f"recipes.{name}.network: unknown network '{recipe.network}'; registered networks: "
                          f"{', '.join(list_models())}")
    return model_info(recipe.network)


def check_recipe(key: str, info: ModelInfo, recipe: Recipe) -> None:
    problem = check_model_options(info.name, recipe.model)
    if problem:
        raise ConfigError(f"{key}.model: {problem} (the recipe's model: options with its bases' and its budget's "
                          "model: over them)")
    changed = recipe.changed_from_default(IGNORED_BY_KIND[info.kind])
    if changed:
        raise ConfigError(f"{key}.{changed[0]}: '{info.name}' is a scikit-learn baseline; only network, model and "
                          "the budgets' run sizes apply to it. Remove this key (or the base that sets it).")
    pretrained = recipe.model.get("pretrained", "pretrained" in info.options)
    if recipe.init != "default" and pretrained:
        raise ConfigError(f"{key}.init: '{recipe.init}' would overwrite the pretrained weights of '{info.name}'; "
                          "use init: default, or model.pretrained: false")
    if recipe.finetune.enabled:
        _check_finetune(key, info, recipe)


def _check_finetune(key: str, info: ModelInfo, recipe: Recipe) -> None:
    if not info.finetune:
        raise ConfigError(f"{key}.finetune: '{info.name}' has no frozen backbone to fine-tune; finetune "
                          "applies to transfer networks (e.g. resnet50_transfer)")
    unknown = [s for s in recipe.finetune.stages if s not in info.finetune]
    if unknown or not recipe.finetune.stages:
        raise ConfigError(f"{key}.finetune.stages: got {recipe.finetune.stages}, expected stages of "
                          f"'{info.name}' among: {', '.join(info.finetune)}")
    if recipe.scheduler.name in ("onecycle", "cyclic"):
        raise ConfigError(f"{key}.scheduler: {recipe.scheduler.name} would raise the fine-tuning lr back to "
                          "max_lr; use none, step, multistep, cosine or plateau with finetune")
    if recipe.early_stopping.stop:
        raise ConfigError(f"{key}.early_stopping.stop: early stopping could end the run in the frozen phase "
                          "before fine-tuning starts; set stop: false (the stopping point is still recorded)")
    if recipe.epochs < 2:
        raise ConfigError(f"{key}.epochs: fine-tuning needs at least 2 epochs (one per phase); got {recipe.epochs}")


def check_model_options(name: str, options: dict[str, Any]) -> str | None:
    """A message naming the problem if `options` are not keyword arguments of model `name`."""
    info = model_info(name)
    allowed = info.options
    unknown = sorted(set(options) - set(allowed))
    if "num_classes" in options:
        return "num_classes comes from the data (preprocess.classes), do not set it here"
    if unknown:
        return f"unknown option '{unknown[0]}' for '{name}'; allowed options: {', '.join(allowed) or '(none)'}"
    probed = options if info.probe else {**options, "pretrained": False}  # never load weights to check
    try:  # values too: on the meta device building allocates nothing, so even ResNet-50 is instant
        built = _build_on_meta(info, probed)
        validate = getattr(built, "_validate_params", None)  # scikit-learn checks values only when fitting
        if validate is not None:
            validate()
    except (TypeError, ValueError) as err:
        return f"options {options} do not build '{name}': {err}"
    return None


def _build_on_meta(info: ModelInfo, options: dict[str, Any]) -> Any:
    import torch

    with torch.device("meta"):
        return info.builder(**options)
