"""Weight initialisation schemes a recipe can ask for."""

from __future__ import annotations

from torch import nn

INIT_SCHEMES = ("default", "he", "xavier")


def init_weights(model: nn.Module, scheme: str) -> nn.Module:
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"unknown init scheme '{scheme}'; known: {', '.join(INIT_SCHEMES)}")
    if scheme == "default":
        return model
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            if scheme == "he":
                nn.init.kaiming_normal_(module.weight, nonlinearity="leaky_relu")
            else:
                nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model
