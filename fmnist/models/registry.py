"""Models registered by name and built by one factory (as in timm and torchvision's get_model).

A registered builder returns an `nn.Module` (kind "torch") or a scikit-learn estimator (kind
"sklearn"). `ModelInfo` carries what the rest of the pipeline must know about a model before it
builds one: its kind, whether it expects pixels in [0, 1] rather than standardised ones, whether it
supports a fine-tuning phase, and whether building it is cheap enough to validate options by
building it at start-up.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Literal

import torch

_REGISTRY: dict[str, "ModelInfo"] = {}


@dataclass(frozen=True)
class ModelInfo:
    name: str
    builder: Callable[..., Any]
    kind: Literal["torch", "sklearn"] = "torch"
    input: Literal["standardized", "unit"] = "standardized"  # unit: the model normalises [0, 1] pixels itself
    finetune: tuple[str, ...] = ()  # stages begin_finetune can unfreeze (two-phase transfer); () = none
    probe: bool = True  # build it (on the meta device) to validate options at start-up

    @property
    def options(self) -> list[str]:
        return [p for p in inspect.signature(self.builder).parameters if p != "num_classes"]


class UnknownModelError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return str(self.args[0])


def register_model(name: str, *, kind: str = "torch", input: str = "standardized",
                   finetune: tuple[str, ...] = (), probe: bool = True) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def decorator(builder: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY:
            raise ValueError(f"model '{name}' is registered twice")
        _REGISTRY[name] = ModelInfo(name, builder, kind, input, tuple(finetune), probe)
        return builder
    return decorator


def list_models(kind: str | None = None) -> list[str]:
    return sorted(name for name, info in _REGISTRY.items() if kind is None or info.kind == kind)


def model_info(name: str) -> ModelInfo:
    if name not in _REGISTRY:
        raise UnknownModelError(f"unknown architecture '{name}'; known architectures: {', '.join(list_models())}")
    return _REGISTRY[name]


def check_model_options(name: str, options: dict[str, Any]) -> str | None:
    """A message naming the problem if `options` are not keyword arguments of model `name`."""
    info = model_info(name)
    allowed = info.options
    unknown = sorted(set(options) - set(allowed))
    if "num_classes" in options:
        return "num_classes comes from the data (preprocess.classes), do not set it here"
    if unknown:
        return f"unknown option '{unknown[0]}' for '{name}'; allowed options: {', '.join(allowed) or '(none)'}"
    if not info.probe:
        return None
    try:  # values too; on the meta device building allocates nothing, so even ResNet-50 is instant
        with torch.device("meta"):
            built = info.builder(**options)
        if info.kind == "sklearn":  # scikit-learn checks its parameters only when fitting, unless asked
            built._validate_params()
    except (TypeError, ValueError) as err:
        return f"options {options} do not build '{name}': {err}"
    return None


def create_model(name: str, num_classes: int = 10, **kwargs: Any) -> Any:
    info = model_info(name)
    try:
        return info.builder(num_classes=num_classes, **kwargs)
    except TypeError as err:
        raise TypeError(f"architecture '{name}': bad model options {kwargs}: {err}") from err
