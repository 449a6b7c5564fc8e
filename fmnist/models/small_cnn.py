"""Small CNNs from the reference projects."""

from __future__ import annotations

from torch import nn


def _conv_bn(c_in: int, c_out: int, act: nn.Module) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), act]


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


def cnn1(num_classes: int = 10) -> nn.Module:
    """One 3x3 valid conv (32), pool, dropout 0.2, dense 64 (Keras 'Model 1'): the smallest CNN baseline."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(inplace=True), nn.MaxPool2d(2), nn.Dropout(0.2),
        nn.Flatten(),
        nn.Linear(32 * 13 * 13, 64), nn.ReLU(inplace=True),
        nn.Linear(64, num_classes),
    )


def cnn3(num_classes: int = 10) -> nn.Module:
    """Three valid convs 32-64-128 with pooling and dropout, dense 128 (Keras 'Model 3'); 28-26-13-11-5-3."""
    relu = nn.ReLU(inplace=True)
    return nn.Sequential(
        nn.Conv2d(1, 32, 3), relu, nn.MaxPool2d(2), nn.Dropout(0.2),
        nn.Conv2d(32, 64, 3), relu, nn.MaxPool2d(2), nn.Dropout(0.2),
        nn.Conv2d(64, 128, 3), relu, nn.Dropout(0.4),
        nn.Flatten(),
        nn.Linear(128 * 3 * 3, 128), nn.ReLU(inplace=True),
        nn.Linear(128, num_classes),
    )


def basic_cnn(num_classes: int = 10, dropout: float = 0.25, dense_dropout: float = 0.4) -> nn.Module:
    """Conv-BN-ReLU pairs 64 and 128 with pooling and dropout, one 256 conv, global average pool, dense 128.

    Global pooling instead of a big flatten keeps it near 0.6M parameters, a mid-size baseline between
    cnn4 and the ResNets.
    """
    relu = nn.ReLU(inplace=True)
    return nn.Sequential(
        *_conv_bn(1, 64, relu), *_conv_bn(64, 64, relu), nn.MaxPool2d(2), nn.Dropout(dropout),
        *_conv_bn(64, 128, relu), *_conv_bn(128, 128, relu), nn.MaxPool2d(2), nn.Dropout(dropout),
        *_conv_bn(128, 256, relu),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(256, 128), nn.ReLU(inplace=True), nn.Dropout(dense_dropout),
        nn.Linear(128, num_classes),
    )


def mini_vgg(num_classes: int = 10, dropout: float = 0.25, dense_dropout: float = 0.5) -> nn.Module:
    """Mini VGG: (conv3x3-BN-ReLU x2, pool, dropout) for widths 64-128-256 (28-14-7-3), dense 512."""
    relu = nn.ReLU(inplace=True)
    layers: list[nn.Module] = []
    c_in = 1
    for width in (64, 128, 256):
        layers += [*_conv_bn(c_in, width, relu), *_conv_bn(width, width, relu), nn.MaxPool2d(2), nn.Dropout(dropout)]
        c_in = width
    return nn.Sequential(
        *layers,
        nn.Flatten(),
        nn.Linear(256 * 3 * 3, 512), nn.ReLU(inplace=True), nn.BatchNorm1d(512), nn.Dropout(dense_dropout),
        nn.Linear(512, num_classes),
    )
