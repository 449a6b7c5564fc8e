"""Wide residual network (Zagoruyko & Komodakis, 2016) for 1-channel 28x28 images.

torchvision has no CIFAR-style WRN, so this follows the authors' layout: pre-activation wide basic
blocks (BN-ReLU-conv3x3-BN-ReLU-dropout-conv3x3), (depth - 4) / 6 blocks per group, widths
16 -> 16k, 32k, 64k with strides 1, 2, 2, then BN-ReLU, global average pool and a linear layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class WideBasicBlock(nn.Module):
    """Pre-activation block; when the shape changes a 1x1 conv projects the pre-activated input."""

    def __init__(self, c_in: int, c_out: int, stride: int, dropout: float):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.dropout = dropout
        self.shortcut = (None if c_in == c_out and stride == 1
                         else nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = F.relu(self.bn2(self.conv1(out)))
        if self.dropout > 0:
            out = F.dropout(out, p=self.dropout, training=self.training)
        return self.conv2(out) + shortcut


class WideResNet(nn.Module):
    def __init__(self, depth: int, widen: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        if (depth - 4) % 6 != 0 or depth < 10:
            raise ValueError(f"WideResNet depth must be 6n + 4 (10, 16, 22, 28, ...), got {depth}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        blocks = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(1, widths[0], 3, stride=1, padding=1, bias=False)
        self.layer1 = self._group(widths[0], widths[1], blocks, 1, dropout)
        self.layer2 = self._group(widths[1], widths[2], blocks, 2, dropout)
        self.layer3 = self._group(widths[2], widths[3], blocks, 2, dropout)
        self.bn = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    @staticmethod
    def _group(c_in: int, c_out: int, blocks: int, stride: int, dropout: float) -> nn.Sequential:
        return nn.Sequential(*(WideBasicBlock(c_in if i == 0 else c_out, c_out, stride if i == 0 else 1, dropout)
                               for i in range(blocks)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        out = F.relu(self.bn(out))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


def wrn16_4(num_classes: int = 10, dropout: float = 0.0) -> nn.Module:
    """WRN-16-4: 2 blocks per group, widths 64-128-256 (about 2.75M parameters); maps 28-28-14-7."""
    return WideResNet(16, 4, num_classes, dropout)


def wide_resnet(num_classes: int = 10, depth: int = 28, widen: int = 10, dropout: float = 0.0) -> nn.Module:
    """WRN-depth-widen at any size; WRN-28-10 (about 36.5M parameters) is the network of the best published
    current-data recipes (random erasing, 300 epochs: about 95.8%)."""
    return WideResNet(depth, widen, num_classes, dropout)
