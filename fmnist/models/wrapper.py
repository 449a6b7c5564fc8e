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
        x = (x - self.mean) / self.std
        logits = self.net(x)
        if self.tta_flip:  # as in training's evaluation: average with the mirror image
            logits = (logits + self.net(x.flip(-1))) / 2
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = x.reshape(len(x), -1).detach().cpu().numpy()
        if hasattr(self.estimator, "predict_proba"):
            scores = np.log(np.clip(self.estimator.predict_proba(features), 1e-12, None))
        else:
            scores = self.estimator.decision_function(features)
        return torch.from_numpy(np.asarray(scores, dtype=np.float32))
