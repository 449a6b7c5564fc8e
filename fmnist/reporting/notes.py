"""What a run's numbers mean, said next to them: which model was scored (the best epoch, the SWA
average of a range of epochs, or a one-shot scikit-learn fit) and whether the run diverged.

Pure functions of a run's summary and per-epoch history (no torch, no files): the report stage and
`fmnist tables` build the same notes, from DVC outputs or from MLflow alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fmnist.core.runs import EpochRecord, RunSummary
from fmnist.reporting.tables import EpochTimeTable, ReportInputs

# A uniform guess over the 10 classes scores ln 10 = 2.30; a trained network well under 1.
DIVERGED_FACTOR = 100.0  # times the run's own lowest validation loss
DIVERGED_FLOOR = 10.0  # ... but never flag a loss this low (a tiny synthetic set's loss can start near 0)
DIVERGED_CEILING = 1e3  # above this, always
DIVERGED_RULE = (f"a validation loss that is NaN or infinite, or above {DIVERGED_FACTOR:g} times the run's lowest "
                 f"validation loss (at least {DIVERGED_FLOOR:g}, at most {DIVERGED_CEILING:g}); a uniform guess "
                 "over the 10 classes scores 2.30")


@dataclass(frozen=True)
class Divergence:
    epoch: int  # the first epoch that broke the rule
    peak: float  # the worst validation loss (NaN counts as the worst)
    peak_epoch: int
    lowest: float | None  # the lowest finite validation loss, and its epoch
    lowest_epoch: int | None

    def short(self) -> str:
        return f"val loss {self.peak:.3g} at epoch {self.peak_epoch}"

    def sentence(self) -> str:
        lowest = (f" (its lowest was {self.lowest:.3g}, at epoch {self.lowest_epoch})"
                  if self.lowest is not None else "")
        broke = f"broke the rule at epoch {self.epoch} and " if self.epoch != self.peak_epoch else ""
        return (f"validation loss {broke}reached {self.peak:.3g} at epoch {self.peak_epoch}{lowest}; the "
                "accuracies of the affected epochs are not comparable")


def divergence_limit(lowest: float | None) -> float:
    """The validation loss above which a run with this lowest loss has diverged (DIVERGED_RULE)."""
    if lowest is None:
        return DIVERGED_CEILING
    return min(DIVERGED_CEILING, max(DIVERGED_FLOOR, DIVERGED_FACTOR * lowest))


def divergence(history: list[EpochRecord]) -> Divergence | None:
    """Where the validation loss became non-finite or exploded (DIVERGED_RULE); None for a sane run
    or one that logged no loss (an SVC)."""
    losses = [(row.epoch, row.val_loss) for row in history if row.val_loss is not None]
    finite = [(epoch, loss) for epoch, loss in losses if math.isfinite(loss)]
    lowest_epoch, lowest = min(finite, key=lambda p: p[1]) if finite else (None, None)
    limit = divergence_limit(lowest)
    broken = [(epoch, loss) for epoch, loss in losses if not math.isfinite(loss) or loss > limit]
    if not broken:
        return None
    peak_epoch, peak = max(broken, key=lambda p: math.inf if math.isnan(p[1]) else p[1])
    return Divergence(broken[0][0], peak, peak_epoch, lowest, lowest_epoch)


@dataclass(frozen=True)
class RunNote:
    """Which model a run's leaderboard row scored, and what went wrong on the way."""

    arch: str
    selected: str  # "best_epoch", "swa" or "fit" (RunSummary.selected)
    val_acc: float  # of the model scored: the leaderboard's val acc
    swa_epochs: tuple[int, int] | None = None  # the averaged epochs, first and last
    swa_test_acc: float | None = None  # the average's per-run test accuracy, when logged
    seconds: float | None = None  # training time of the kept model (fit time of a one-shot fit)
    diverged: Divergence | None = None

    @property
    def single_fit(self) -> bool:
        return self.selected == "fit"

    def flag(self) -> str:
        """The leaderboard's notes cell."""
        parts = []
        if self.swa_epochs:
            parts.append(f"SWA average of epochs {self.swa_epochs[0]}-{self.swa_epochs[1]}")
        if self.single_fit:
            parts.append("one fit")
        if self.diverged:
            parts.append(f"DIVERGED: {self.diverged.short()}")
        return "; ".join(parts)


def run_note(summary: RunSummary, history: list[EpochRecord]) -> RunNote:
    swa_epochs = swa_test = None
    if summary.selected == "swa":
        start = int(summary.extra.get("swa_start_epoch", summary.epochs_run))
        swa_epochs, swa_test = (start, summary.epochs_run), summary.extra.get("swa_test_acc")
    seconds = summary.extra.get("fit_seconds", summary.train_seconds)
    return RunNote(summary.arch, summary.selected, summary.extra.get("swa_val_acc", summary.best_val_acc),
                   swa_epochs, swa_test, seconds, divergence(history))


def run_notes(inputs: ReportInputs) -> dict[str, RunNote]:
    """One note per architecture whose summary the inputs carry."""
    return {arch: run_note(summary, inputs.histories.get(arch, [])) for arch, summary in inputs.summaries.items()}


def _epoch_or_never(epoch: int | None) -> str:
    return f"epoch {epoch}" if epoch is not None else "did not trigger within the epochs run"


def _val_acc_at(table: EpochTimeTable, epoch: int | None) -> str:
    row = next((r for r in table.rows if r["epoch"] == epoch), None)
    return f", val acc {row['val_acc']:.4f}" if row is not None and row.get("val_acc") is not None else ""


def epoch_bullets(table: EpochTimeTable, note: RunNote | None = None) -> list[str]:
    """What an epoch table's marks mean, and which model the leaderboard scored."""
    if note is not None and note.single_fit:
        return [f"**single fit**: the scikit-learn estimator was fitted once ({note.seconds:.1f} s, val acc "
                f"{note.val_acc:.4f}, the model evaluated); with no epochs, early stopping and diminishing "
                "returns do not apply."]
    best = f"epoch {table.best_epoch}{_val_acc_at(table, table.best_epoch)}"
    if note is not None and note.swa_epochs:
        first, last = note.swa_epochs
        bullets = [f"**model evaluated**: the SWA average of the weights of epochs {first}-{last}, val acc "
                   f"{note.val_acc:.4f} (the leaderboard's), scored after the last epoch",
                   f"**best single epoch** (best {table.monitor}, not the model evaluated): {best}"]
    else:
        bullets = [f"**best epoch** (best {table.monitor}, the checkpoint evaluated): {best}"]
    bullets += [f"**diminishing returns**: {_epoch_or_never(table.diminishing_epoch)}. "
                f"Rule: {table.diminishing_rule}.",
                f"**early stopping**: {_epoch_or_never(table.early_stop_epoch)}. Rule: {table.early_stop_rule}."]
    if note is not None and note.diverged:
        bullets.append(f"**diverged**: {note.diverged.sentence()}. Rule: {DIVERGED_RULE}.")
    return bullets


def epoch_rows(table: EpochTimeTable, note: RunNote | None = None) -> list[dict]:
    """The table's rows, with a one-shot fit's row marked as such and the SWA average as its own row."""
    if note is None:
        return table.rows
    rows = [{**row, "marks": "the fit"} if note.single_fit else row for row in table.rows]
    if note.diverged:
        peak = note.diverged.peak_epoch
        rows = [{**row, "marks": ", ".join(filter(None, (row["marks"], f"val loss {note.diverged.peak:.3g}")))}
                if row["epoch"] == peak else row for row in rows]
    if note.swa_epochs:
        first, last = note.swa_epochs
        rows.append({"epoch": f"SWA {first}-{last}", "val_acc": note.val_acc, "test_acc": note.swa_test_acc,
                     "cumulative_seconds": note.seconds, "marks": "weight average, evaluated"})
    return rows


def diverged_text(notes: dict[str, RunNote]) -> str | None:
    """One sentence under the leaderboard naming the runs that diverged, with the rule."""
    diverged = [f"`{n.arch}` ({n.diverged.short()})" for n in notes.values() if n.diverged]
    if not diverged:
        return None
    return (f"**Diverged runs**: {', '.join(diverged)}. Rule: {DIVERGED_RULE}. The loss plots leave the "
            "exploded losses off their scale.")
