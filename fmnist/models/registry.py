"""Models registered by name and built by one factory (as in timm and torchvision's get_model)."""

from __future__ import annotations

import inspect
from typing import Any, Callable

from torch import nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


class UnknownModelError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return str(self.args[0])


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def decorator(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model '{name}' is registered twice")
        _REGISTRY[name] = builder
        return builder
    return decorator


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def check_model_options(name: str, options: dict[str, Any]) -> str | None:
    """A message naming the problem if `options` are not keyword arguments of model `name`."""
    signature = inspect.signature(_REGISTRY[name])
    allowed = [p for p in signature.parameters if p != "num_classes"]
    unknown = sorted(set(options) - set(allowed))
    if "num_classes" in options:
        return "num_classes comes from the data (preprocess.classes), do not set it here"
    if unknown:
        return f"unknown option '{unknown[0]}' for '{name}'; allowed options: {', '.join(allowed) or '(none)'}"
    try:  # values too: building the model is cheap next to training it
        _REGISTRY[name](**options)
    except (TypeError, ValueError) as err:
        return f"options {options} do not build '{name}': {err}"
    return None


def create_model(name: str, num_classes: int = 10, **kwargs: Any) -> nn.Module:
    if name not in _REGISTRY:
        raise UnknownModelError(f"unknown architecture '{name}'; known architectures: {', '.join(list_models())}")
    try:
        return _REGISTRY[name](num_classes=num_classes, **kwargs)
    except TypeError as err:
        raise TypeError(f"architecture '{name}': bad model options {kwargs}: {err}") from err
