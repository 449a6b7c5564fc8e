"""Test-set metrics: loss, accuracy, per-class precision/recall/F1, confusion matrix, misclassified."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from fmnist.models.wrapper import pixels_to_input


@dataclass
class TestReport:
    loss: float
    accuracy: float
    per_class: list[dict]  # class, precision, recall, f1, support
    macro_f1: float
    confusion: np.ndarray  # [true, predicted]
    predictions: np.ndarray
    probabilities: np.ndarray

    def misclassified(self, labels: np.ndarray, limit: int) -> np.ndarray:
        """Indices of wrong predictions, the most confident mistakes first."""
        wrong = np.flatnonzero(self.predictions != labels)
        confidence = self.probabilities[wrong, self.predictions[wrong]]
        return wrong[np.argsort(-confidence, kind="stable")][:limit]


@torch.no_grad()
def pixel_logits(model: torch.nn.Module, x_uint8: np.ndarray, batch_size: int = 1000,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """Logits (on the CPU) of a NormalizedClassifier-style model for uint8 images [N, 28, 28], in batches
    on `device`."""
    return torch.cat([model(pixels_to_input(x_uint8[start:start + batch_size]).to(device)).float().cpu()
                      for start in range(0, len(x_uint8), batch_size)])


def score_predictions(logits: torch.Tensor, labels: np.ndarray, class_names: list[str]) -> TestReport:
    logits = logits.float()
    target = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    loss = torch.nn.functional.cross_entropy(logits, target).item()
    probabilities = torch.softmax(logits, 1).numpy()
    predictions = probabilities.argmax(1)
    classes = np.arange(len(class_names))
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predictions, labels=classes, zero_division=0)
    per_class = [{"class": name, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                 for name, p, r, f, s in zip(class_names, precision, recall, f1, support)]
    return TestReport(loss=loss, accuracy=float((predictions == labels).mean()), per_class=per_class,
                      macro_f1=float(np.mean(f1)), confusion=confusion_matrix(labels, predictions, labels=classes),
                      predictions=predictions, probabilities=probabilities)
