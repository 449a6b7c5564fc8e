"""Small CNNs from the reference projects."""

from __future__ import annotations

from torch import nn

from fmnist.models.registry import register_model


def _conv_bn(c_in: int, c_out: int, act: nn.Module) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), act]


@register_model("cnn4")
def cnn4(num_classes: int = 10) -> nn.Module:
    """4 conv layers 32-32-64-128 with batch norm and dropout, dense 512-128 (Keras 'Model 4')."""
    relu = nn.ReLU(inplace=True)
    return nn.Sequential(
        *_conv_bn(1, 32, relu),
        *_conv_bn(32, 32, relu), nn.MaxPool2d(2), nn.Dropout(0.2),
        *_conv_bn(32, 64, relu), nn.Dropout(0.2),
        *_conv_bn(64, 128, relu), nn.MaxPool2d(2), nn.Dropout(0.3),
        nn.Flatten(),
        nn.Linear(128 * 7 * 7, 512), nn.ReLU(inplace=True), nn.BatchNorm1d(512), nn.Dropout(0.4),
        nn.Linear(512, 128), nn.ReLU(inplace=True), nn.BatchNorm1d(128), nn.Dropout(0.4),
        nn.Linear(128, num_classes),
    )


@register_model("qstp_cnn5")
def qstp_cnn5(num_classes: int = 10, dropout: float = 0.1, dense_dropout: float = 0.5,
              negative_slope: float = 0.01) -> nn.Module:
    """QSTP2018: 5 conv layers 32-64-128-256-512 (BN, LeakyReLU, dropout), pool after 2 and 4, dense 100."""
    def block(c_in: int, c_out: int) -> list[nn.Module]:
        return [*_conv_bn(c_in, c_out, nn.LeakyReLU(negative_slope, inplace=True)), nn.Dropout(dropout)]

    return nn.Sequential(
        *block(1, 32), *block(32, 64), nn.MaxPool2d(2),
        *block(64, 128), *block(128, 256), nn.MaxPool2d(2),
        *block(256, 512),
        nn.Flatten(),
        nn.Linear(512 * 7 * 7, 100), nn.BatchNorm1d(100), nn.LeakyReLU(negative_slope, inplace=True),
        nn.Dropout(dense_dropout),
        nn.Linear(100, num_classes),
    )
