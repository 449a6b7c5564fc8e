"""Plots people look at: the leaderboard, confusion matrices, misclassified examples, learning curves."""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from fmnist.core.io import atomic_write_bytes  # noqa: E402
from fmnist.reporting.notes import divergence_limit  # noqa: E402
from fmnist.reporting.references import reference_for, source_label  # noqa: E402


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


def arch_color(i: int, n: int):
    """Distinct colours for up to 40 architectures (tab10 for a few, then tab20, then tab20 + tab20b)."""
    if n <= 10:
        return plt.get_cmap("tab10")(i)
    if n <= 20:
        return plt.get_cmap("tab20")(i)
    return plt.get_cmap("tab20" if i % 40 < 20 else "tab20b")(i % 20)


def _line(ax, xs, ys, style: str, color, **kw) -> None:
    """A curve, or a marker where a run has one point (a fitted baseline)."""
    ax.plot(xs, ys, style, color=color, marker="o" if len(xs) == 1 else None, markersize=4, **kw)


def loss_range(histories: dict[str, dict[str, list]], leave_out: Iterable[str] = ()) -> tuple[float, float] | None:
    """The loss axis's limits, with a little room: every finite, positive loss of the runs drawn that is
    under its run's divergence limit (notes.DIVERGED_RULE), so a loss that exploded to 1e10 is clipped
    rather than flattening every other curve; None when there is nothing to scale by."""
    values, leave_out = [], set(leave_out)
    for arch, history in histories.items():
        if arch in leave_out:
            continue
        run = [v for key in ("train_loss", "val_loss") for v in history.get(key, [])
               if v is not None and np.isfinite(v) and v > 0]
        val = [v for v in history.get("val_loss", []) if v is not None and np.isfinite(v)]
        limit = divergence_limit(min(val) if val else None)
        values += [v for v in run if v <= limit]
    if not values:
        return None
    return min(values) / 1.5, max(values) * 1.5


def learning_curves_figure(histories: dict[str, dict[str, list]], x: str = "epoch", single_fits: Iterable[str] = (),
                           diverged: Mapping[str, str] | None = None) -> plt.Figure:
    """Loss and accuracy against `x` (epoch or cumulative_seconds) for every architecture.

    One-shot fits (`single_fits`: a scikit-learn estimator's one point is not a curve, and a k-NN's
    training loss is ~0) are left out of the loss panel; its range leaves out losses above their run's
    divergence limit (`loss_range`), so one run whose loss exploded does not flatten the rest, and the
    runs in `diverged` (arch -> what happened) say so in the legend and the panel's title.
    """
    single_fits, diverged = set(single_fits), dict(diverged or {})
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(14, 5))
    n = len(histories)
    for i, (arch, history) in enumerate(histories.items()):
        color = arch_color(i, n)
        for ax, key, style in ((ax_loss, "train_loss", "--"), (ax_loss, "val_loss", "-"),
                               (ax_acc, "train_acc", "--"), (ax_acc, "val_acc", "-"), (ax_acc, "test_acc", ":")):
            if key in history and not (ax is ax_loss and arch in single_fits):  # an SVC has no loss
                _line(ax, history[x], history[key], style, color)
        label = f"{arch} (diverged: {diverged[arch]})" if arch in diverged else arch
        ax_acc.plot([], [], "-", color=color, label=label)  # one legend entry per architecture
    x_label = "epoch" if x == "epoch" else "cumulative training time (s)"
    for ax, label in ((ax_loss, "cross-entropy loss (log scale)"), (ax_acc, "accuracy")):
        ax.set_xlabel(x_label)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    ax_loss.set_yscale("log")
    limits = loss_range(histories, single_fits)
    if limits is not None:
        ax_loss.set_ylim(*limits)
    notes = [f"diverged, off the scale: {', '.join(sorted(diverged))}" if diverged else "",
             "scikit-learn single fits left out" if single_fits & set(histories) else ""]
    ax_loss.set_title("; ".join(filter(None, notes)), fontsize=9)
    ax_acc.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle(f"Learning curves against {x_label} (dashed: train, solid: validation, dotted: test)")
    fig.tight_layout()
    return fig


def accuracy_vs_time_figure(histories: dict[str, dict[str, list]]) -> plt.Figure:
    """Validation accuracy against cumulative training time: the diminishing-returns picture."""
    fig, ax = plt.subplots(figsize=(9, 5))
    n = len(histories)
    for i, (arch, history) in enumerate(histories.items()):
        ax.plot(history["cumulative_seconds"], history["val_acc"], "o-", color=arch_color(i, n), label=arch,
                markersize=3)
    ax.set_xscale("log")  # seconds for a baseline, hours for a ResNet
    ax.set_xlabel("cumulative training time (s, log scale)")
    ax.set_ylabel("validation accuracy")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
    ax.set_title("Validation accuracy against training time")
    fig.tight_layout()
    return fig


def per_class_f1_figure(f1: dict[str, dict[str, float]], class_names: list[str]) -> plt.Figure:
    """Test F1 per class (columns) and architecture (rows), as an annotated heat map."""
    archs = list(f1)
    values = np.array([[f1[a].get(c, np.nan) for c in class_names] for a in archs])
    fig, ax = plt.subplots(figsize=(1.0 * len(class_names) + 3, 0.38 * len(archs) + 1.8))
    image = ax.imshow(values, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(class_names)), class_names, rotation=30, ha="right")
    ax.set_yticks(range(len(archs)), archs)
    for r in range(len(archs)):
        for c in range(len(class_names)):
            if not np.isnan(values[r, c]):
                ax.text(c, r, f"{values[r, c]:.2f}", ha="center", va="center", fontsize=7,
                        color="black" if values[r, c] > 0.6 else "white")
    fig.colorbar(image, ax=ax, label="test F1")
    ax.set_title("Per-class F1 on the test set")
    fig.tight_layout()
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


WINNER_COLOR, OTHER_COLOR, REFERENCE_COLOR = "#1f77b4", "#b9cde5", "#d62728"


def board_accuracy(row: dict) -> tuple[float | None, float | None]:
    """The accuracy a leaderboard row is drawn at, the mean over seeds (the evaluated model's when no seed
    scored the test set), and the error bar: the seeds' std, only where there are several seeds."""
    mean = row.get("test_acc_mean") if row.get("test_acc_mean") is not None else row.get("test_acc")
    several = (row.get("n_seeds") or 0) > 1 and row.get("test_acc_std") is not None
    return mean, row["test_acc_std"] if several else None


def _board_label(row: dict, mean: float | None, std: float | None) -> str:
    """What the figure prints right of each bar: ours, the published figure and the difference."""
    ours = "no test accuracy" if mean is None else f"{mean:.4f}" + (f" ± {std:.4f} (n={row['n_seeds']})" if std else "")
    ref = reference_for(row["arch"])
    if ref is None:
        return f"{ours}   no published figure"
    diff = row.get("difference") or ""
    diff = f"{diff} points" if diff and not diff.startswith("n/a") else f"not compared ({ref.classes} classes)"
    return f"{ours}   published {ref.published} {source_label(ref.source)}: {diff}"


def _axis_limits(values: list[float]) -> tuple[float, float]:
    """The accuracy axis: from a round 0.05 under the lowest value drawn to one over the highest, so close
    accuracies stay apart."""
    if not values:
        return 0.0, 1.0
    return max(0.0, np.floor((min(values) - 0.02) * 20) / 20), min(1.0, np.ceil((max(values) + 0.01) * 20) / 20)


def leaderboard_figure(rows: list[dict]) -> plt.Figure:
    """The leaderboard as a picture, in its order (best first, on top): each architecture's test accuracy
    (mean over seeds, with the seeds' std as an error bar where there are several), the published
    reference beside it (a diamond: filled where the setting counts as many classes as the run, hollow
    where no difference is shown), the leader in a strong colour, the numbers printed right of the axes."""
    drawn = [(row, *board_accuracy(row)) for row in rows]
    refs = [reference_for(row["arch"]) for row in rows]
    values = [m for _, m, _ in drawn if m is not None] + [r.accuracy for r in refs if r is not None]
    start, end = _axis_limits(values)
    fig, ax = plt.subplots(figsize=(11, max(2.0, 0.22 * len(rows) + 1.0)))
    y = np.arange(len(rows))
    means = [start if m is None else m for _, m, _ in drawn]
    ax.barh(y, [m - start for m in means], left=start, height=0.7,
            color=[WINNER_COLOR if i == 0 else OTHER_COLOR for i in range(len(rows))])
    spread = [(i, m, s) for i, (_, m, s) in enumerate(drawn) if s]  # one seed has no error bar
    if spread:
        at, mean, std = zip(*spread)
        ax.errorbar(mean, at, xerr=std, fmt="none", ecolor="#333", capsize=3, elinewidth=1)
    for i, (row, ref) in enumerate(zip(rows, refs)):
        if ref is not None:
            compared = not (row.get("difference") or "").startswith("n/a")
            ax.plot(ref.accuracy, i, "D", color=REFERENCE_COLOR, markersize=6,
                    markerfacecolor=REFERENCE_COLOR if compared else "white")
        ax.text(1.01, i, _board_label(*drawn[i]), transform=ax.get_yaxis_transform(), va="center", fontsize=8.5,
                fontweight="bold" if i == 0 else "normal")
    ax.set_yticks(y, [row["arch"] for row in rows])
    for i, label in enumerate(ax.get_yticklabels()):
        label.set_fontweight("bold" if i == 0 else "normal")
    ax.set_ylim(len(rows) - 0.5, -0.5)  # the leader on top
    ax.set_xlim(start, end)
    ax.set_xlabel(f"test accuracy (the axis starts at {start:.2f})" if start > 0 else "test accuracy")
    ax.grid(axis="x", alpha=0.3)
    ax.plot([], [], "D", color=REFERENCE_COLOR, label="published figure")
    ax.plot([], [], "D", color=REFERENCE_COLOR, markerfacecolor="white",
            label="published on another number of classes (not compared)")
    ax.legend(fontsize=8, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=2, frameon=False)
    fig.tight_layout()
    return fig
