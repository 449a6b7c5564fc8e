"""Tables as pure functions of run summaries and per-epoch histories (no torch, no files).

The same functions serve the report stage (from DVC outputs) and anything that rebuilds the
tables from MLflow alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from fmnist.core.runs import LEADERBOARD_COLUMNS, EpochRecord, StopRule
from fmnist.core.stopping import early_stopping_point, mode_for

DIMINISHING_RULE = ("the first epoch whose validation accuracy is within {points:g} percentage points "
                    "of the best validation accuracy of the run (later epochs added less than that)")


def diminishing_returns_epoch(val_acc: list[float], tolerance: float) -> int | None:
    if not val_acc:
        return None
    target = max(val_acc) - tolerance
    return next(epoch for epoch, acc in enumerate(val_acc, start=1) if acc >= target)


@dataclass
class EpochTimeTable:
    arch: str
    rows: list[dict]  # epoch, train_acc, val_acc, test_acc, cumulative_seconds, marks
    best_epoch: int | None
    diminishing_epoch: int | None
    early_stop_epoch: int | None
    monitor: str
    diminishing_rule: str
    early_stop_rule: str


def epoch_time_table(arch: str, history: list[EpochRecord], tolerance: float, rule: StopRule) -> EpochTimeTable:
    values = [getattr(row, rule.monitor) for row in history]
    best_epoch, stop_epoch = early_stopping_point(values, rule.patience, rule.min_delta, mode_for(rule.monitor))
    dr_epoch = diminishing_returns_epoch([row.val_acc for row in history], tolerance)
    rows = []
    for row in history:
        marks = [label for label, at in (("best", best_epoch), ("diminishing returns", dr_epoch),
                                         ("early stop", stop_epoch)) if at == row.epoch]
        rows.append({"epoch": row.epoch, "train_acc": row.train_acc, "val_acc": row.val_acc,
                     "test_acc": row.test_acc, "cumulative_seconds": row.cumulative_seconds,
                     "marks": ", ".join(marks)})
    return EpochTimeTable(arch, rows, best_epoch, dr_epoch, stop_epoch, rule.monitor,
                          DIMINISHING_RULE.format(points=round(tolerance * 100, 4)), rule.describe())


def leaderboard(entries: list[dict]) -> list[dict]:
    """Rows sorted by test accuracy, best first; each entry carries LEADERBOARD_COLUMNS."""
    rows = [{col: entry.get(col) for col in LEADERBOARD_COLUMNS} for entry in entries]
    return sorted(rows, key=lambda r: (r["test_acc"] is None, -(r["test_acc"] or 0.0), r["arch"]))


@dataclass
class ReportInputs:
    """What the tables are built from, whether read from DVC outputs or from MLflow."""

    architectures: list[str]
    tolerance: float
    entries: list[dict] = field(default_factory=list)  # one per architecture: runs.leaderboard_entry rows
    histories: dict[str, list[EpochRecord]] = field(default_factory=dict)
    rules: dict[str, StopRule] = field(default_factory=dict)


@dataclass
class ReportTables:
    leaderboard: list[dict]
    epoch_tables: list[EpochTimeTable]

    def to_dict(self) -> dict:
        return {"leaderboard": self.leaderboard, "epoch_tables": [asdict(t) for t in self.epoch_tables]}


def build_tables(inputs: ReportInputs) -> ReportTables:
    board = leaderboard(inputs.entries)
    tables = [epoch_time_table(arch, inputs.histories[arch], inputs.tolerance, inputs.rules[arch])
              for arch in inputs.architectures]
    return ReportTables(board, tables)


def cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def markdown_table(rows: list[dict], columns: list[str], headers: list[str] | None = None) -> str:
    headers = headers or columns
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)
