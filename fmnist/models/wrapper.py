"""A self-contained classifier: raw pixels in [0, 1] -> logits, normalisation built in."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def pixels_to_input(x_uint8: np.ndarray) -> torch.Tensor:
    """uint8 images [N, 28, 28] -> the classifier's input: float32 [N, 1, 28, 28] in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(x_uint8)).float().div(255.0).unsqueeze(1)


class NormalizedClassifier(nn.Module):
    """Wraps a trained network so callers pass images as float32 [N, 1, 28, 28] in [0, 1]."""

    def __init__(self, net: nn.Module, mean: float, std: float, class_names: list[str], tta_flip: bool = False):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))
        self.class_names = list(class_names)
        self.tta_flip = tta_flip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return logits_of(self.net, (x - self.mean) / self.std, self.tta_flip)


def logits_of(net: nn.Module, x: torch.Tensor, tta_flip: bool = False) -> torch.Tensor:
    """float32 logits; with tta_flip, averaged with those of the mirror image (a mirrored garment is as
    plausible as the original). Training's evaluation, the evaluate stage and the served model all use it."""
    logits = net(x).float()
    if tta_flip:
        logits = (logits + net(x.flip(-1)).float()) / 2
    return logits


class EstimatorClassifier(nn.Module):
    """A fitted scikit-learn estimator behind the same interface: float32 [N, 1, 28, 28] in [0, 1] -> scores.

    Scores are log-probabilities where the estimator has them (softmax gives back its probabilities),
    otherwise its decision function (an SVC's one-vs-rest margins).
    """

    def __init__(self, estimator, class_names: list[str]):
        super().__init__()
        self.estimator = estimator
        self.class_names = list(class_names)

    @property
    def has_probabilities(self) -> bool:
        """False for margins (an SVC): their softmax is no probability and their cross-entropy no loss."""
        return hasattr(self.estimator, "predict_proba")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(estimator_scores(self.estimator, x.reshape(len(x), -1).detach().cpu().numpy()))


def estimator_scores(estimator, features: np.ndarray) -> np.ndarray:
    """float32 [N, classes]: log-probabilities, or one-vs-rest margins; their argmax is the prediction."""
    if hasattr(estimator, "predict_proba"):
        return np.log(np.clip(estimator.predict_proba(features), 1e-12, None)).astype(np.float32)
    margins = np.asarray(estimator.decision_function(features), dtype=np.float32)
    if margins.ndim == 1:  # two classes: one margin, positive for the second class
        margins = np.stack([-margins, margins], axis=1)
    return margins
