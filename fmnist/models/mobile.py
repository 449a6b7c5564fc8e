"""torchvision's mobile architectures (MobileNetV2, ShuffleNetV2) adapted to 1-channel 28x28 images.

As in the usual CIFAR adaptations, the first conv takes one channel at stride 1 and one more
downsampling step is removed, so the last feature map is 4x4 rather than 1x1 on 28x28 input.
"""

from __future__ import annotations

from torch import nn

from fmnist.models.lazy import torchvision_models as models


def _one_channel_stride1(conv: nn.Conv2d) -> nn.Conv2d:
    """The same 3x3 conv, but on one input channel and at stride 1."""
    new = nn.Conv2d(1, conv.out_channels, conv.kernel_size, stride=1, padding=conv.padding, bias=conv.bias is not None)
    nn.init.kaiming_normal_(new.weight, mode="fan_out")  # as torchvision initialises these models' convs
    return new


def mobilenet_v2(num_classes: int = 10, width_mult: float = 1.0) -> nn.Module:
    """MobileNetV2 with a stride-1 stem and a stride-1 first 24-channel stage: maps 28-28-28-14-7-4."""
    model = models.mobilenet_v2(weights=None, num_classes=num_classes, width_mult=width_mult)
    model.features[0][0] = _one_channel_stride1(model.features[0][0])
    from torchvision.models.mobilenetv2 import InvertedResidual

    block = next(b for b in model.features if isinstance(b, InvertedResidual) and b.stride == 2)
    for conv in block.modules():  # its depthwise conv carries the stride; no residual is added as c_in != c_out
        if isinstance(conv, nn.Conv2d) and conv.stride == (2, 2):
            conv.stride = (1, 1)
    block.stride = 1
    return model


_SHUFFLENETS = {"0.5": "shufflenet_v2_x0_5", "1.0": "shufflenet_v2_x1_0",
                "1.5": "shufflenet_v2_x1_5", "2.0": "shufflenet_v2_x2_0"}


def shufflenet_v2(num_classes: int = 10, width: str = "1.0") -> nn.Module:
    """ShuffleNetV2 (width x0.5 to x2.0) with a stride-1 3x3 stem and no max pool: maps 28-28-14-7-4."""
    try:  # a YAML recipe may give 1.0 or 2 as numbers
        key = f"{float(width):.1f}"
    except (TypeError, ValueError):
        key = str(width)
    if key not in _SHUFFLENETS:
        raise ValueError(f"unknown ShuffleNetV2 width '{width}'; choose one of {', '.join(_SHUFFLENETS)}")
    model = getattr(models, _SHUFFLENETS[key])(weights=None, num_classes=num_classes)
    model.conv1[0] = _one_channel_stride1(model.conv1[0])
    model.maxpool = nn.Identity()
    return model
