"""Networks registered by name and built by one factory (as in timm and torchvision's get_model).

The registry lists networks only; a recipe in params.yaml names the network it trains (`network:`),
as timm keeps a pretrained tag apart from its architecture: fast92, fast93 and fast94 are recipes of
the one network fastcnn.

The registry is a catalog: each entry names its builder as `module:function` and carries what the
rest of the pipeline must know before building it (its kind, the input it expects, the stages it
can fine-tune). Nothing here imports torch or a model family: a builder's module is imported when
the model is built (or its options inspected), so listing, describing and planning stay cheap.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from fmnist.core.errors import UnknownModelError


class ModelKind(str, Enum):  # noqa: UP042 (StrEnum changes str(kind), which logs and messages print)
    """How a model is trained: a torch network (epochs of SGD) or a scikit-learn estimator (one fit)."""

    TORCH = "torch"
    SKLEARN = "sklearn"


@dataclass(frozen=True)
class ModelInfo:
    name: str
    target: str  # "package.module:builder"
    kind: ModelKind = ModelKind.TORCH
    input: str = "standardized"  # "unit": the model normalises pixels in [0, 1] itself
    finetune: tuple[str, ...] = ()  # stages `begin_finetune` can unfreeze (two-phase transfer); () = none
    probe: bool = True  # build it (on the meta device) to validate options at start-up

    @property
    def builder(self) -> Callable[..., Any]:
        module, _, function = self.target.partition(":")
        return getattr(importlib.import_module(module), function)

    @property
    def options(self) -> list[str]:
        """The builder's keyword arguments (imports the builder's module)."""
        return [p for p in inspect.signature(self.builder).parameters if p != "num_classes"]


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(name: str, target: str, *, kind: ModelKind | str = ModelKind.TORCH, input: str = "standardized",
                   finetune: tuple[str, ...] = (), probe: bool = True) -> ModelInfo:
    if name in _REGISTRY:
        raise ValueError(f"model '{name}' is registered twice")
    info = ModelInfo(name, target, ModelKind(kind), input, tuple(finetune), probe)
    _REGISTRY[name] = info
    return info


def list_models(kind: ModelKind | str | None = None) -> list[str]:
    return sorted(name for name, info in _REGISTRY.items() if kind is None or info.kind == ModelKind(kind))


def model_info(name: str) -> ModelInfo:
    if name not in _REGISTRY:
        raise UnknownModelError(f"unknown architecture '{name}'; known architectures: {', '.join(list_models())}")
    return _REGISTRY[name]


def create_model(name: str, num_classes: int = 10, **kwargs: Any) -> Any:
    info = model_info(name)
    try:
        return info.builder(num_classes=num_classes, **kwargs)
    except TypeError as err:
        raise TypeError(f"architecture '{name}': bad model options {kwargs}: {err}") from err


TRANSFER_STAGES = ("layer1", "layer2", "layer3", "layer4")

_FAMILIES = {
    "fmnist.models.mlp": ["mlp"],
    "fmnist.models.small_cnn": ["cnn1", "cnn3", "cnn4", "qstp_cnn5", "basic_cnn", "mini_vgg"],
    "fmnist.models.wide_resnet": ["wrn16_4", "wide_resnet"],
    "fmnist.models.resnets": ["resnet18", "resnet34", "resnet50"],
    "fmnist.models.mobile": ["mobilenet_v2", "shufflenet_v2"],
    "fmnist.models.shakeshake": ["shakeshake_resnet34"],
    "fmnist.models.speedrun": ["speedrun", "fastcnn"],
}
for _module, _names in _FAMILIES.items():
    for _name in _names:
        register_model(_name, f"{_module}:{_name}")
register_model("resnet50_transfer", "fmnist.models.transfer:resnet50_transfer", input="unit",
               finetune=TRANSFER_STAGES, probe=False)
for _name in ("sk_logreg", "sk_random_forest", "sk_svc", "sk_knn", "sk_mlp"):
    register_model(_name, f"fmnist.models.baselines:{_name}", kind=ModelKind.SKLEARN)
