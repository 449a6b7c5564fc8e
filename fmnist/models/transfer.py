"""ImageNet-pretrained ResNet-50 fine-tuned on Fashion-MNIST in two phases.

The model takes pixels in [0, 1] (registered with input="unit") and does what the ImageNet weights
expect itself: pad 28x28 to 32x32, repeat the grey channel three times, normalise with ImageNet's
mean and std. Phase 1 trains the new head and the batch-norm affine parameters on a frozen backbone;
`begin_finetune` then unfreezes the last stages (phase 2).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from urllib.error import URLError
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import nn

from fmnist.core.errors import WeightsError
from fmnist.models.lazy import torchvision_models as models
from fmnist.models.registry import TRANSFER_STAGES as FINETUNE_STAGES

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_weights():
    """torchvision's ResNet-50 ImageNet weights entry (IMAGENET1K_V2): its URL names the cached file."""
    return models.ResNet50_Weights.IMAGENET1K_V2


class PretrainedWeightsNotFound(WeightsError):
    """The ImageNet weights are not in torch.hub's cache and could not be downloaded."""


def weights_path() -> str:
    """Where torch.hub looks for the weights file: <torch.hub.get_dir()>/checkpoints/<name in the URL>."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(urlparse(imagenet_weights().url).path))


def load_weights_file(path: str) -> dict[str, torch.Tensor]:
    """ImageNet ResNet-50 weights from a file the user names (an offline machine's copy of torchvision's file, or
    any state dict of torchvision's resnet50), loaded without unpickling code."""
    where = "recipes.resnet50_transfer.model.weights_file"
    if not os.path.isfile(path):
        raise PretrainedWeightsNotFound(
            f"{where}: no file at '{path}'; copy torchvision's ResNet-50 weights ({imagenet_weights().url}) there, "
            "fix the path, or set `pretrained: false` to train from scratch")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a file that is not a state dict
        raise WeightsError(f"{where}: '{path}' is not a readable torch state dict ({type(err).__name__}); give "
                           "torchvision's ResNet-50 weights file") from None
    if not isinstance(state, dict) or "conv1.weight" not in state or "layer4.2.bn3.running_mean" not in state:
        raise WeightsError(f"{where}: '{path}' does not hold ResNet-50 weights (no conv1 / layer4 keys); give "
                           "torchvision's ResNet-50 weights file")
    return state


def load_imagenet_state_dict(weights_file: str | None = None) -> dict[str, torch.Tensor]:
    """The named file's weights, else the cached (or freshly downloaded) ones; a missing file that cannot be
    fetched says how to fix it."""
    if weights_file:
        return load_weights_file(weights_file)
    path = weights_path()
    try:
        return imagenet_weights().get_state_dict(progress=False, check_hash=True, weights_only=True)
    except (OSError, URLError, RuntimeError) as err:
        if os.path.exists(path):  # the file is there but unreadable: not a download problem
            raise
        name, directory = os.path.basename(path), os.path.dirname(path)
        raise PretrainedWeightsNotFound(
            f"resnet50_transfer needs the ImageNet weights file '{name}' in '{directory}', and downloading it "
            f"from {imagenet_weights().url} failed ({type(err).__name__}: {err}). Fetch that URL on a machine with "
            f"network access and put the file in that directory (or set TORCH_HOME to a folder whose hub/checkpoints "
            f"holds it, or name the file in recipes.resnet50_transfer.model.weights_file), or set "
            f"`pretrained: false` in recipes.resnet50_transfer.model to train from scratch."
        ) from err


class ResNet50Transfer(nn.Module):
    """torchvision's ResNet-50 (original ImageNet stem) with a new MLP head; input [N, 1, 28, 28] in [0, 1]."""

    finetune_stages = FINETUNE_STAGES

    def __init__(self, num_classes: int, pretrained: bool, hidden: int, dropout: float,
                 weights_file: str | None = None):
        super().__init__()
        if hidden < 1:
            raise ValueError(f"hidden must be a positive integer, got {hidden}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.backbone = models.resnet50(weights=None)
        if pretrained:  # random weights have nothing to keep: then every layer trains from the start
            # strict: fc is still the 1000-way one
            self.backbone.load_state_dict(load_imagenet_state_dict(weights_file))
            self._freeze_backbone()
        self.backbone.fc = nn.Sequential(
            nn.Linear(self.backbone.fc.in_features, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.BatchNorm1d(hidden), nn.Linear(hidden, num_classes),
        )

    @property
    def head(self) -> nn.Module:
        return self.backbone.fc

    def _freeze_backbone(self) -> None:
        """Phase 1: only batch norm's affine parameters adapt the frozen ImageNet features to the new data."""
        for param in self.backbone.parameters():
            param.requires_grad_(False)
        for module in self.backbone.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                for param in module.parameters():
                    param.requires_grad_(True)

    def begin_finetune(self, stages: Iterable[str] = ("layer3", "layer4")) -> None:
        """Phase 2: make every parameter of the named backbone stages trainable."""
        stages = [stages] if isinstance(stages, str) else list(stages)
        unknown = [s for s in stages if s not in self.finetune_stages]
        if unknown:
            raise ValueError(f"unknown ResNet-50 stage(s) {unknown}; valid stages: {', '.join(self.finetune_stages)}")
        for stage in stages:
            for param in getattr(self.backbone, stage).parameters():
                param.requires_grad_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (2, 2, 2, 2)).expand(-1, 3, -1, -1)  # 28 -> 32, grey -> RGB
        return self.backbone((x - self.mean) / self.std)


def resnet50_transfer(num_classes: int = 10, pretrained: bool = True, hidden: int = 256,
                      dropout: float = 0.3, weights_file: str | None = None) -> nn.Module:
    """ImageNet ResNet-50 (IMAGENET1K_V2) with head 2048-hidden-classes; backbone frozen until begin_finetune.
    `weights_file`: a local copy of the ImageNet weights (else torch.hub's cache)."""
    return ResNet50Transfer(num_classes, pretrained, hidden, dropout, weights_file)
