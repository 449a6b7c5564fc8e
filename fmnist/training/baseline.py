"""Fit a scikit-learn baseline and score it like a network's single epoch."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import log_loss

from fmnist.core.runs import EpochRecord
from fmnist.data.prepare import Arrays
from fmnist.models.wrapper import estimator_scores

TRAIN_SCORE_SAMPLE = 10_000  # scoring all 54,000 training images would cost k-NN and SVC minutes


def features(arrays: Arrays) -> np.ndarray:
    """uint8 images [N, 28, 28] -> float32 [N, 784] in [0, 1]."""
    return arrays.x.reshape(len(arrays.x), -1).astype(np.float32) / 255.0


def _loss_and_accuracy(estimator, arrays: Arrays, labels: np.ndarray) -> tuple[float | None, float]:
    """The same scores as the logged classifier: the prediction is their argmax."""
    scores = estimator_scores(estimator, features(arrays))
    accuracy = float((labels[scores.argmax(1)] == arrays.y).mean())
    if not hasattr(estimator, "predict_proba"):
        return None, accuracy  # an SVC without probability calibration has no likelihood
    return float(log_loss(arrays.y, np.exp(scores), labels=labels)), accuracy


def _train_sample(train: Arrays, seed: int) -> Arrays:
    if len(train) <= TRAIN_SCORE_SAMPLE:
        return train
    idx = np.sort(np.random.default_rng(seed).choice(len(train), TRAIN_SCORE_SAMPLE, replace=False))
    return Arrays(train.x[idx], train.y[idx])


@dataclass
class BaselineResult:
    history: list[EpochRecord] = field(default_factory=list)  # one row, in the networks' per-epoch format
    fit_seconds: float = 0.0


def fit_baseline(estimator, train: Arrays, val: Arrays, test: Arrays | None, seed: int) -> BaselineResult:
    """Fit on the training images; the row's timings cover the fit and the validation scoring.

    train_loss/train_acc are measured on up to TRAIN_SCORE_SAMPLE training images (a fixed sample).
    """
    labels = np.unique(train.y)
    start = time.perf_counter()
    estimator.fit(features(train), train.y)
    fit_seconds = time.perf_counter() - start
    val_loss, val_acc = _loss_and_accuracy(estimator, val, labels)
    seconds = time.perf_counter() - start
    train_loss, train_acc = _loss_and_accuracy(estimator, _train_sample(train, seed), labels)
    test_loss = test_acc = None
    if test is not None:
        test_loss, test_acc = _loss_and_accuracy(estimator, test, labels)
    record = EpochRecord(epoch=1, train_loss=train_loss, train_acc=train_acc, val_loss=val_loss, val_acc=val_acc,
                         test_loss=test_loss, test_acc=test_acc, epoch_seconds=seconds, cumulative_seconds=seconds)
    return BaselineResult([record], fit_seconds)
