"""The report stage: compare all architectures from the train/evaluate outputs, as Markdown + PNG,
and record it as an MLflow run that names the training runs it was built from."""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path

import mlflow

from fmnist import tracking
from fmnist.io import atomic_write_text, read_json, write_json
from fmnist.reporting.figures import accuracy_vs_time_figure, learning_curves_figure, save_figure
from fmnist.reporting.tables import (LEADERBOARD_COLUMNS, EpochTimeTable, StopRule, epoch_time_table, leaderboard,
                                     markdown_table)


@dataclass(frozen=True)
class ReportPaths:
    models_dir: Path  # <arch>/run.json
    train_metrics_dir: Path  # <arch>.json
    eval_metrics_dir: Path  # <arch>.json
    history_dir: Path  # <arch>.csv
    eval_figures_dir: Path  # <arch>/confusion.png, misclassified.png
    out_dir: Path  # report.md, figures/, leaderboard.csv, run.json


def read_history(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items() if v != ""}
                for row in csv.DictReader(fh)]


def columns_of(history: list[dict]) -> dict[str, list]:
    return {key: [row.get(key) for row in history] for key in history[0]} if history else {}


def collect(architectures: list[str], paths: ReportPaths) -> tuple[list[dict], dict[str, list[dict]], dict]:
    entries, histories, runs = [], {}, {}
    for arch in architectures:
        run = read_json(paths.models_dir / arch / "run.json")
        summary = read_json(paths.train_metrics_dir / f"{arch}.json")
        evaluation = read_json(paths.eval_metrics_dir / f"{arch}.json")
        entries.append({**summary, "test_acc": evaluation["test_acc"], "run_id": run["run_id"]})
        histories[arch] = read_history(paths.history_dir / f"{arch}.csv")
        runs[arch] = run
    return entries, histories, runs


def build_tables(entries: list[dict], histories: dict[str, list[dict]], runs: dict, tolerance: float
                 ) -> tuple[list[dict], list[EpochTimeTable]]:
    board = leaderboard(entries)
    tables = [epoch_time_table(arch, histories[arch], tolerance, StopRule(**runs[arch]["early_stopping"]))
              for arch in histories]
    return board, tables


def render_markdown(board: list[dict], tables: list[EpochTimeTable], experiment: str, profile: str,
                    eval_figures_rel: str) -> str:
    shown = [{**row, "train_seconds": f"{row['train_seconds']:.1f}"} for row in board]
    parts = [
        "# Fashion-MNIST benchmark report", "",
        f"MLflow experiment: `{experiment}` (profile: `{profile}`). Every number below was measured by "
        "the pipeline run that wrote this report; the training runs are listed with their MLflow run ids.", "",
        "## Leaderboard", "",
        "Sorted by test accuracy of the best-validation checkpoint. Training time covers training and "
        "validation, not the per-epoch test evaluation.", "",
        markdown_table(shown, LEADERBOARD_COLUMNS,
                       ["architecture", "parameters", "epochs run", "best epoch", "val acc", "test acc",
                        "train time (s)", "MLflow run"]), "",
        "## Learning curves", "",
        "![learning curves](figures/learning_curves.png)", "",
        "![validation accuracy against training time](figures/accuracy_vs_time.png)", "",
        "## Epoch against time", "",
    ]
    for table in tables:
        rows = [{**r, "cumulative_seconds": f"{r['cumulative_seconds']:.1f}"} for r in table.rows]
        parts += [
            f"### {table.arch}", "",
            f"- **best epoch** (highest validation accuracy, the checkpoint evaluated): {table.best_epoch}",
            f"- **diminishing returns**: epoch {table.diminishing_epoch}. Rule: {table.diminishing_rule}.",
            f"- **early stopping**: {_epoch_or_never(table.early_stop_epoch)}. Rule: {table.early_stop_rule}.",
            "",
            markdown_table(rows, ["epoch", "train_acc", "val_acc", "test_acc", "cumulative_seconds", "marks"],
                           ["epoch", "train acc", "val acc", "test acc", "cumulative time (s)", "marks"]), "",
            f"![{table.arch} confusion matrix]({eval_figures_rel}/{table.arch}/confusion.png)", "",
            f"![{table.arch} misclassified]({eval_figures_rel}/{table.arch}/misclassified.png)", "",
        ]
    return "\n".join(parts)


def _epoch_or_never(epoch: int | None) -> str:
    return f"epoch {epoch}" if epoch is not None else "did not trigger within the epochs run"


def write_report(params_experiment: str, profile: str, architectures: list[str], tolerance: float,
                 paths: ReportPaths, root: Path = Path(".")) -> dict:
    entries, histories, runs = collect(architectures, paths)
    board, tables = build_tables(entries, histories, runs, tolerance)
    figures = paths.out_dir / "figures"
    columns = {arch: columns_of(h) for arch, h in histories.items()}
    save_figure(learning_curves_figure(columns), figures / "learning_curves.png")
    save_figure(accuracy_vs_time_figure(columns), figures / "accuracy_vs_time.png")
    eval_rel = Path(os.path.relpath(paths.eval_figures_dir, paths.out_dir)).as_posix()
    markdown = render_markdown(board, tables, params_experiment, profile, eval_rel)
    board_csv = io.StringIO()
    writer = csv.DictWriter(board_csv, fieldnames=LEADERBOARD_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(board)

    run_ids = {arch: run["run_id"] for arch, run in runs.items()}
    tags = tracking.base_tags("report", root=root)
    tags.update({"profile": profile, "fmnist.training_runs": ",".join(run_ids[a] for a in architectures)})
    with tracking.tracked_run(params_experiment, run_name="report", tags=tags, root=root) as run:
        mlflow.log_params({"architectures": ",".join(architectures), "diminishing_returns_tolerance": tolerance,
                           **{f"run_id.{arch}": rid for arch, rid in run_ids.items()}})
        mlflow.log_text(markdown, "report/report.md")
        mlflow.log_text(board_csv.getvalue(), "report/leaderboard.csv")
        mlflow.log_artifacts(str(figures), "report/figures")
        mlflow.log_dict({"training_runs": run_ids}, "report/training_runs.json")
        report_run_id = run.info.run_id
    atomic_write_text(paths.out_dir / "report.md", markdown)
    atomic_write_text(paths.out_dir / "leaderboard.csv", board_csv.getvalue())
    write_json(paths.out_dir / "run.json", {"run_id": report_run_id, "experiment": params_experiment,
                                            "training_runs": run_ids})
    return {"run_id": report_run_id, "leaderboard": board}
