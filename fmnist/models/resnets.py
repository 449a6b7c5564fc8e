"""torchvision ResNets adapted to 1-channel 28x28 images.

ImageNet's 7x7 stride-2 stem and max pool would shrink 28x28 to 7x7 before the first residual stage,
so conv1 becomes a 3x3 stride-1 conv on one channel and the max pool is optional (`stem_pool`). The
rest is torchvision's model untouched, so its module names (conv1, bn1, layer1..layer4, fc) and
parameter count (up to the stem) are the reference ones.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from fmnist.models.lazy import torchvision_models as models


def _adapt(model: models.ResNet, num_classes: int, stem_pool: bool, dropout: float) -> models.ResNet:
    """Swap the stem for a 1-channel 3x3 stride-1 conv, drop the max pool if asked, put dropout before fc."""
    model.conv1 = nn.Conv2d(1, model.conv1.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")  # as torchvision does
    if not stem_pool:
        model.maxpool = nn.Identity()
    # always a Sequential, so the state-dict keys (fc.1.*) do not depend on the dropout value
    model.fc = nn.Sequential(nn.Dropout(dropout), nn.Linear(model.fc.in_features, num_classes))
    return model


def _build(factory: Callable[..., models.ResNet], num_classes: int, stem_pool: bool, dropout: float) -> nn.Module:
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    return _adapt(factory(weights=None, num_classes=num_classes), num_classes, stem_pool, dropout)


def resnet18(num_classes: int = 10, stem_pool: bool = False, dropout: float = 0.25) -> nn.Module:
    """ResNet-18, CIFAR-style stem by default: feature maps 28-28-14-7-4."""
    return _build(models.resnet18, num_classes, stem_pool, dropout)


def resnet34(num_classes: int = 10, stem_pool: bool = False, dropout: float = 0.25) -> nn.Module:
    """ResNet-34, CIFAR-style stem by default: feature maps 28-28-14-7-4."""
    return _build(models.resnet34, num_classes, stem_pool, dropout)


def resnet50(num_classes: int = 10, stem_pool: bool = True, dropout: float = 0.0) -> nn.Module:
    """ResNet-50; keeps the max pool by default (28-14-14-7-4-2) so its bottlenecks stay affordable on CPU."""
    return _build(models.resnet50, num_classes, stem_pool, dropout)
