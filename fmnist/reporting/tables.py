"""Tables as pure functions of run summaries and per-epoch histories (no torch, no files).

The same functions serve the report stage (from DVC outputs) and anything that rebuilds the
tables from MLflow alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from fmnist.core.runs import LEADERBOARD_COLUMNS as RUN_COLUMNS
from fmnist.core.runs import EpochRecord, RunSummary, StopRule
from fmnist.core.seeds import SeedSpread
from fmnist.core.stopping import early_stopping_point, mode_for
from fmnist.reporting.references import (
    REFERENCE_COLUMNS,
    REFERENCE_HEADERS,
    REFERENCE_NOTE,
    compare,
    difference_cell,
    published_cell,
)

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


SEEDS_COLUMN = "test_acc_seeds"
SEED_KEYS = ("n_seeds", "test_acc_mean", "test_acc_std")  # an entry's seed spread, as SeedSpread names them


def _board_columns() -> list[str]:
    """The rendered columns: the run record's, the seeds' test accuracy after the evaluated one, the
    published reference before the MLflow run id. Rows also carry SEED_KEYS and n_classes (numbers)."""
    columns = list(RUN_COLUMNS)
    columns.insert(columns.index("test_acc") + 1, SEEDS_COLUMN)
    at = columns.index("run_id") if "run_id" in columns else len(columns)
    return [*columns[:at], *REFERENCE_COLUMNS, *columns[at:]]


LEADERBOARD_COLUMNS = _board_columns()
_HEADERS = {"arch": "architecture", "kind": "kind", "num_params": "parameters", "epochs_run": "epochs run",
            "converged": "converged or cut", "best_epoch": "best epoch", "best_val_acc": "val acc",
            "test_acc": "test acc (evaluated)",
            SEEDS_COLUMN: "test acc over seeds (mean ± std)", "n_test": "test images",
            "train_seconds": "train time (s)", "run_id": "MLflow run",
            **dict(zip(REFERENCE_COLUMNS, REFERENCE_HEADERS))}
LEADERBOARD_HEADERS = [_HEADERS.get(col, col) for col in LEADERBOARD_COLUMNS]
# What the report's leaderboard shows (board_cells): one line a row on a laptop screen; the reference's
# setting goes under the table, the full run id into each architecture's section.
BOARD_COLUMNS = ["arch", "num_params", "epochs_run", "converged", "best_epoch", "best_val_acc", "test_acc",
                 SEEDS_COLUMN, "n_test", "train_seconds", "published", "difference", "run"]
BOARD_HEADERS = [{"published": "published", "run": "MLflow run", SEEDS_COLUMN: "test acc over seeds"}.get(col)
                 or _HEADERS[col] for col in BOARD_COLUMNS]
RUN_ID_SHOWN = 8  # characters of the MLflow run id


def count_cell(count: int | None) -> str:
    """A parameter count in three figures: `7.85 k`, `235 k`, `21.3 M`."""
    if count is None:
        return ""
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if count >= size:
            return f"{count / size:.3g} {unit}"
    return str(count)


def board_cells(row: dict) -> dict:
    """A leaderboard row as the report shows it: the parameters in three figures, the published figure with
    its source's short label, a short `n/a`, the run id's first characters (leaderboard.csv and tables.json
    keep the long forms)."""
    return {**row, "num_params": count_cell(row.get("num_params")),
            "published": published_cell(row.get("reference"), row.get("source")),
            "difference": difference_cell(row["arch"], row.get("difference")),
            "run": (row.get("run_id") or "")[:RUN_ID_SHOWN]}


LEADERBOARD_NOTE = (
    "**converged or cut**: converged when the run's early-stopping point (patience run out on validation) "
    "came inside its budget; converged at N/M when its diminishing-returns point, epoch N (see the epoch "
    "tables), came before its last epoch M, so the last epochs added less than the tolerance; cut when the "
    "budget ended first. "
    "**test acc (evaluated)**: the stage's model (its first seed) "
    "scored by the evaluate stage, in fp32. **test acc over seeds**: the mean and sample standard deviation of "
    "the test accuracy of each seed's kept model, scored while training (under the run's precision, e.g. bf16 "
    "autocast, so the first seed's figure can differ from the evaluated one in the last digits), over the n "
    "seeds the train stage ran (a record without seeds counts as the evaluated model alone, n=1). "
    + REFERENCE_NOTE + f" **MLflow run**: the run id's first {RUN_ID_SHOWN} characters; the full id is in the "
    "architecture's section below, in `leaderboard.csv` and in `tables.json`.")


def spread_entry(spread: SeedSpread | None) -> dict:
    """The seed keys of a leaderboard entry (none for a record without seeds)."""
    return {} if spread is None else {key: getattr(spread, key) for key in SEED_KEYS}


def seeds_cell(mean: float | None, std: float | None, n: int | None) -> str:
    """`0.9123 ± 0.0021 (n=3)`; one seed has no spread: `0.9123 (n=1)`."""
    if n is None:
        return ""
    if mean is None:
        return f"n={n}"
    return f"{mean:.4f}{f' ± {std:.4f}' if std is not None else ''} (n={n})"


def stopping_cell(kind: str | None, converged: bool | str | None, diminishing_epoch: int | None = None,
                  epochs_run: int | None = None) -> str:
    """Whether the run reached its plateau (the early-stopping point inside the budget, or the
    diminishing-returns point before its last epoch) or the budget cut it."""
    if isinstance(converged, str):
        return converged  # already a cell (a row read back from tables.json)
    if kind == "sklearn":
        return "single fit"
    if converged is None:
        return ""
    if converged:
        return "converged"
    if diminishing_epoch is not None and epochs_run is not None and diminishing_epoch < epochs_run:
        return f"converged at {diminishing_epoch}/{epochs_run}"  # its diminishing-returns point, of the epochs run
    return "cut by the budget"


def leaderboard_row(entry: dict, diminishing_epoch: int | None = None) -> dict:
    """One row: the run record's columns, the test accuracy over seeds, the published reference.

    An entry without seed keys (a record from before several seeds) counts as one seed, the evaluated
    model. The difference to the reference uses the seeds' mean test accuracy; `n_classes` (the classes
    the run was evaluated on, None when unknown) decides whether the reference's setting allows one."""
    row = {col: entry.get(col) for col in RUN_COLUMNS}
    seeds = {key: entry.get(key) for key in SEED_KEYS}
    if seeds["n_seeds"] is None and row["test_acc"] is not None:
        seeds.update(n_seeds=1, test_acc_mean=row["test_acc"])
    ours = seeds["test_acc_mean"] if seeds["test_acc_mean"] is not None else row["test_acc"]
    row.update(seeds, n_classes=entry.get("n_classes"))
    row[SEEDS_COLUMN] = seeds_cell(seeds["test_acc_mean"], seeds["test_acc_std"], seeds["n_seeds"])
    row["converged"] = stopping_cell(row["kind"], row["converged"], diminishing_epoch, row.get("epochs_run"))
    row.update(compare(row["arch"], ours, row["n_classes"]))
    return row


def leaderboard(entries: list[dict], diminishing: dict[str, int | None] | None = None) -> list[dict]:
    """Rows sorted by test accuracy of the evaluated model, best first (leaderboard_row); `diminishing`:
    each architecture's diminishing-returns epoch, from its epoch table."""
    rows = [leaderboard_row(entry, (diminishing or {}).get(entry.get("arch"))) for entry in entries]
    return sorted(rows, key=lambda r: (r["test_acc"] is None, -(r["test_acc"] or 0.0), r["arch"]))


@dataclass
class ReportInputs:
    """What the tables are built from, whether read from DVC outputs or from MLflow."""

    architectures: list[str]
    tolerance: float
    # one per architecture: runs.leaderboard_entry rows, with SEED_KEYS (spread_entry) and n_classes
    entries: list[dict] = field(default_factory=list)
    histories: dict[str, list[EpochRecord]] = field(default_factory=dict)
    rules: dict[str, StopRule] = field(default_factory=dict)
    summaries: dict[str, RunSummary] = field(default_factory=dict)  # which model each run kept (notes.py)


@dataclass
class ReportTables:
    leaderboard: list[dict]
    epoch_tables: list[EpochTimeTable]

    def to_dict(self) -> dict:
        return {"leaderboard": self.leaderboard, "epoch_tables": [asdict(t) for t in self.epoch_tables]}


def build_tables(inputs: ReportInputs) -> ReportTables:
    tables = [epoch_time_table(arch, inputs.histories[arch], inputs.tolerance, inputs.rules[arch])
              for arch in inputs.architectures]
    board = leaderboard(inputs.entries, {t.arch: t.diminishing_epoch for t in tables})
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
