"""Floating-point operations of one training image: how much arithmetic a network asks for, to size GPU
budgets before any GPU time is spent and to state measured throughput as a share of the device's peak."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

# A training step costs the forward pass and a backward pass of about twice its arithmetic (the gradients of the
# inputs and of the weights). Counted as such rather than by tracing the backward: FlopCounterMode counts a
# grouped convolution's backward as if it were dense (MobileNetV2's depthwise layers would come out 7x too high).
TRAINING_OVER_FORWARD = 3


def forward_flops_per_image(model: nn.Module, image_shape: tuple[int, ...] = (1, 28, 28), batch: int = 4) -> float:
    """Forward FLOPs per image (a multiply-add counts as 2), counted by torch's FlopCounterMode on the CPU, so
    counting needs no GPU. Train mode: batch norm as in training; dropout and Shake-Shake change no count."""
    was_training = model.training
    model.train()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.rand(batch, *image_shape))
    finally:
        model.train(was_training)
    return counter.get_total_flops() / batch


def training_flops_per_image(model: nn.Module, image_shape: tuple[int, ...] = (1, 28, 28)) -> float:
    return TRAINING_OVER_FORWARD * forward_flops_per_image(model, image_shape)
