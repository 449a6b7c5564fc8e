"""Soft voting: the mean of several models' class probabilities, its members chosen on validation alone.

Pure NumPy over saved logits (each member's `evaluation/logits.npz`): which models join is decided by the
validation images, and the test images are scored once, for the ensemble that validation chose.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def probabilities(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    return float((probs.argmax(axis=1) == labels).mean())


@dataclass(frozen=True)
class Member:
    run_id: str
    name: str
    val_logits: np.ndarray
    test_logits: np.ndarray


@dataclass(frozen=True)
class Ensemble:
    members: list[Member]
    val_acc: float
    test_acc: float


def choose(members: list[Member], val_y: np.ndarray, test_y: np.ndarray, max_members: int) -> Ensemble:
    """Greedy forward selection on validation (Caruana et al. 2004): start from the best single model, add the
    model that raises the ensemble's validation accuracy most, stop when none does or `max_members` joined."""
    val = {m.run_id: probabilities(m.val_logits) for m in members}
    ranked = sorted(members, key=lambda m: -accuracy(val[m.run_id], val_y))
    chosen = [ranked[0]]
    best = accuracy(val[ranked[0].run_id], val_y)
    while len(chosen) < max_members:
        trials = [(accuracy(np.mean([val[c.run_id] for c in (*chosen, m)], axis=0), val_y), m)
                  for m in ranked if m not in chosen]
        if not trials:
            break
        score, pick = max(trials, key=lambda t: t[0])
        if score <= best:
            break
        chosen.append(pick)
        best = score
    test = np.mean([probabilities(m.test_logits) for m in chosen], axis=0)
    return Ensemble(chosen, best, accuracy(test, test_y))
