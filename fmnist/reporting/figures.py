"""Plots people look at: confusion matrices, misclassified examples, learning curves."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from fmnist.io import atomic_write_bytes  # noqa: E402


def save_figure(fig: plt.Figure, path: str | Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def confusion_figure(matrix: np.ndarray, class_names: list[str], title: str) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=45, ha="right")
    ax.set_yticks(ticks, class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    threshold = matrix.max() / 2 if matrix.size else 0
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, str(value), ha="center", va="center", fontsize=7,
                color="white" if value > threshold else "black")
    return fig


def misclassified_figure(images: np.ndarray, true: list[str], predicted: list[str], confidence: np.ndarray,
                         title: str) -> plt.Figure:
    count = len(images)
    cols = min(6, max(count, 1))
    rows = max(1, int(np.ceil(count / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.9, rows * 2.2), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, t, p, c in zip(axes.flat, images, true, predicted, confidence):
        ax.imshow(image, cmap="gray_r", vmin=0, vmax=255)
        ax.set_title(f"true: {t}\npred: {p} ({c:.0%})", fontsize=7)
    if count == 0:
        axes.flat[0].text(0.5, 0.5, "no misclassified images", ha="center", va="center")
    fig.suptitle(title)
    return fig


def learning_curves_figure(histories: dict[str, dict[str, list]], x: str = "epoch") -> plt.Figure:
    """Loss and accuracy against `x` (epoch or cumulative_seconds) for every architecture."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, (arch, history) in enumerate(histories.items()):
        color = f"C{i}"
        ax_loss.plot(history[x], history["train_loss"], "--", color=color, label=f"{arch} train")
        ax_loss.plot(history[x], history["val_loss"], "-", color=color, label=f"{arch} val")
        ax_acc.plot(history[x], history["train_acc"], "--", color=color, label=f"{arch} train")
        ax_acc.plot(history[x], history["val_acc"], "-", color=color, label=f"{arch} val")
        if "test_acc" in history:
            ax_acc.plot(history[x], history["test_acc"], ":", color=color, label=f"{arch} test")
    x_label = "epoch" if x == "epoch" else "cumulative training time (s)"
    for ax, label in ((ax_loss, "cross-entropy loss"), (ax_acc, "accuracy")):
        ax.set_xlabel(x_label)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    ax_acc.legend(fontsize=7, ncol=2)
    fig.suptitle(f"Learning curves against {x_label} (dashed: train, solid: validation, dotted: test)")
    return fig


def accuracy_vs_time_figure(histories: dict[str, dict[str, list]]) -> plt.Figure:
    """Validation accuracy against cumulative training time: the diminishing-returns picture."""
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for i, (arch, history) in enumerate(histories.items()):
        ax.plot(history["cumulative_seconds"], history["val_acc"], "o-", color=f"C{i}", label=arch, markersize=3)
    ax.set_xlabel("cumulative training time (s)")
    ax.set_ylabel("validation accuracy")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("Validation accuracy against training time")
    return fig


def per_class_f1_figure(f1: dict[str, dict[str, float]], class_names: list[str]) -> plt.Figure:
    """Grouped bars: test F1 per class, one bar per architecture."""
    fig, ax = plt.subplots(figsize=(11, 4.5))
    width = 0.8 / max(len(f1), 1)
    positions = np.arange(len(class_names))
    for i, (arch, scores) in enumerate(f1.items()):
        ax.bar(positions + i * width - 0.4 + width / 2, [scores.get(c, 0.0) for c in class_names], width,
               label=arch, color=f"C{i}")
    ax.set_xticks(positions, class_names, rotation=30, ha="right")
    ax.set_ylabel("test F1")
    ax.set_ylim(0, 1)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Per-class F1 on the test set")
    return fig


def unit_weights_figure(weights: np.ndarray, epochs: np.ndarray, units: np.ndarray, arch: str,
                        max_columns: int = 6) -> plt.Figure:
    """Incoming weights of a few first-layer units drawn as 28x28 images, at several epochs.

    `weights` is [epochs, units, 784]; columns are a spread of the recorded epochs.
    """
    columns = np.unique(np.linspace(0, len(epochs) - 1, min(max_columns, len(epochs))).round().astype(int))
    fig, axes = plt.subplots(len(units), len(columns), figsize=(1.6 * len(columns), 1.6 * len(units)),
                             squeeze=False)
    for r, unit in enumerate(units):
        for c, e in enumerate(columns):
            image = weights[e, r].reshape(28, 28)
            limit = np.abs(image).max() or 1.0
            ax = axes[r, c]
            ax.imshow(image, cmap="RdBu_r", vmin=-limit, vmax=limit)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"epoch {int(epochs[e])}", fontsize=8)
            if c == 0:
                ax.set_ylabel(f"unit {int(unit)}", fontsize=8)
    fig.suptitle(f"{arch}: incoming weights of first-layer units (red positive, blue negative)")
    return fig
