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


def learning_curves_figure(histories: dict[str, "object"]) -> plt.Figure:
    """Loss and accuracy against epoch for every architecture (train dashed, validation solid)."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, (arch, history) in enumerate(histories.items()):
        color = f"C{i}"
        ax_loss.plot(history["epoch"], history["train_loss"], "--", color=color, label=f"{arch} train")
        ax_loss.plot(history["epoch"], history["val_loss"], "-", color=color, label=f"{arch} val")
        ax_acc.plot(history["epoch"], history["train_acc"], "--", color=color, label=f"{arch} train")
        ax_acc.plot(history["epoch"], history["val_acc"], "-", color=color, label=f"{arch} val")
        if "test_acc" in history:
            ax_acc.plot(history["epoch"], history["test_acc"], ":", color=color, label=f"{arch} test")
    for ax, label in ((ax_loss, "cross-entropy loss"), (ax_acc, "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    ax_acc.legend(fontsize=7, ncol=2)
    fig.suptitle("Learning curves (dashed: train, solid: validation, dotted: test)")
    return fig


def accuracy_vs_time_figure(histories: dict[str, "object"]) -> plt.Figure:
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
