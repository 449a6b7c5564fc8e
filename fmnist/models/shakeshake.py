"""Shake-Shake regularisation (Gastaldi, 2017) on a ResNet-34 layout for 1-channel 28x28 images.

Each residual block has two parallel conv branches. In training their outputs are mixed with a random
per-sample alpha in the forward pass, and the gradient is split with an independent random beta in
the backward pass ("shake-shake-image"); at evaluation the mix is the expectation, 0.5 / 0.5.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class ShakeShake(torch.autograd.Function):
    """alpha * x1 + (1 - alpha) * x2 forward; gradients beta * g and (1 - beta) * g backward."""

    @staticmethod
    def forward(ctx: Any, x1: torch.Tensor, x2: torch.Tensor, alpha: torch.Tensor,
                beta: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(beta)
        return alpha * x1 + (1 - alpha) * x2

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None, None]:
        (beta,) = ctx.saved_tensors
        return beta * grad, (1 - beta) * grad, None, None


def shake_shake(x1: torch.Tensor, x2: torch.Tensor, training: bool) -> torch.Tensor:
    """Mix two branch outputs: random per-sample coefficients when training, the plain mean otherwise."""
    if not training:
        return 0.5 * (x1 + x2)
    shape = (x1.shape[0],) + (1,) * (x1.dim() - 1)
    alpha = torch.rand(shape, device=x1.device, dtype=x1.dtype)
    beta = torch.rand(shape, device=x1.device, dtype=x1.dtype)
    return ShakeShake.apply(x1, x2, alpha, beta)


def _branch(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False), nn.BatchNorm2d(c_out),
    )


class ShakeBlock(nn.Module):
    """A ResNet basic block with two shaken branches; identity shortcut, or 1x1 conv + BN on a shape change."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.branch1 = _branch(c_in, c_out, stride)
        self.branch2 = _branch(c_in, c_out, stride)
        self.shortcut = (nn.Identity() if c_in == c_out and stride == 1 else
                         nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = shake_shake(self.branch1(x), self.branch2(x), self.training)
        return F.relu(self.shortcut(x) + mixed)


class ShakeShakeResNet(nn.Module):
    def __init__(self, blocks: tuple[int, ...], width: int, num_classes: int):
        super().__init__()
        if width < 1:
            raise ValueError(f"width must be a positive integer, got {width}")
        self.conv1 = nn.Conv2d(1, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        stages, c_in = [], width
        for i, count in enumerate(blocks):
            c_out = width * 2 ** i
            stages.append(nn.Sequential(*(ShakeBlock(c_in if j == 0 else c_out, c_out,
                                                     2 if i > 0 and j == 0 else 1) for j in range(count))))
            c_in = c_out
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(c_in, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


def shakeshake_resnet34(num_classes: int = 10, width: int = 64) -> nn.Module:
    """ResNet-34 layout (3-4-6-3 blocks, widths w-2w-4w-8w, maps 28-28-14-7-4) with shake-shake blocks."""
    return ShakeShakeResNet((3, 4, 6, 3), int(width), num_classes)
