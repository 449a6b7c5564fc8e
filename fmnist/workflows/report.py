"""The report stage: compare all architectures from the train/evaluate outputs (Markdown and one
self-contained HTML page), record it as an MLflow run naming the training runs it was built from,
and register the best model by validation accuracy, as the `champion` when the gate lets it
(fmnist/reporting/gate.py), else as the `challenger`."""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from fmnist import tracking
from fmnist.core.io import atomic_write_text, dict_csv_text, write_json
from fmnist.core.runs import EPOCH_COLUMNS, EpochRecord
from fmnist.reporting.figures import (
    accuracy_vs_time_figure,
    leaderboard_figure,
    learning_curves_figure,
    per_class_f1_figure,
    save_figure,
    unit_weights_figure,
)
from fmnist.reporting.gate import CHAMPION, LEFT_BEHIND, WEIGHTS_TAG, Contender, GateRule, decide
from fmnist.reporting.notes import RunNote, run_notes
from fmnist.reporting.render import Heading, Image, Text, epoch_table_blocks, leaderboard_blocks, to_html, to_markdown
from fmnist.reporting.sources import from_outputs
from fmnist.reporting.tables import LEADERBOARD_COLUMNS, ReportInputs, ReportTables, build_tables
from fmnist.workflows.ui import report_sentence

log = logging.getLogger("fmnist")

TITLE = "Fashion-MNIST benchmark report"
# On the registered model: the latest report's best model, which could not be registered (no weights here).
LEFT_BEHIND_TAG = "fmnist.best_weights_left_behind"


@dataclass(frozen=True)
class ReportPaths:
    models_dir: Path  # <arch>/run.json, <arch>/unit_weights.npz
    train_metrics_dir: Path  # <arch>.json
    eval_metrics_dir: Path  # <arch>.json
    history_dir: Path  # <arch>.csv
    eval_figures_dir: Path  # <arch>/confusion.png, misclassified.png, per_class.csv
    out_dir: Path  # report.md, report.html, tables.json, figures/, leaderboard.csv, run.json, champion.json
    summary_metrics: Path  # the few numbers per architecture that `dvc exp show` / `dvc metrics diff` compare


@dataclass(frozen=True)
class ReportSettings:
    experiment: str
    profile: str
    architectures: list[str]
    tolerance: float
    registered_model: str
    gate: GateRule = GateRule()


def columns_of(history: list[EpochRecord]) -> dict[str, list]:
    """Each logged per-epoch column as a list over the epochs (the figures' input)."""
    return {key: [getattr(row, key) for row in history] for key in EPOCH_COLUMNS
            if any(getattr(row, key) is not None for row in history)}


def curve_notes(notes: dict[str, RunNote]) -> dict:
    """learning_curves_figure's options: one-shot fits out of the loss panel, diverged runs named."""
    return {"single_fits": [a for a, n in notes.items() if n.single_fit],
            "diverged": {a: n.diverged.short() for a, n in notes.items() if n.diverged}}


def _read_per_class(path: Path) -> dict[str, float]:
    with open(path, newline="") as fh:
        return {row["class"]: float(row["f1"]) for row in csv.DictReader(fh)}


def make_figures(inputs: ReportInputs, paths: ReportPaths, notes: dict[str, RunNote] | None = None
                 ) -> tuple[list[Image], dict[str, list[Image]]]:
    """Overview figures, and each architecture's own (confusion matrix, mistakes, MLP unit weights).
    `notes` leave one-shot fits out of the loss curves and keep diverged runs from setting their range."""
    figures = paths.out_dir / "figures"
    curves = {arch: columns_of(h) for arch, h in inputs.histories.items()}
    loss_notes = curve_notes(run_notes(inputs) if notes is None else notes)
    f1 = {arch: _read_per_class(paths.eval_figures_dir / arch / "per_class.csv") for arch in inputs.architectures}
    class_names = list(next(iter(f1.values()))) if f1 else []
    overview = [
        Image("Loss and accuracy against epoch",
              save_figure(learning_curves_figure(curves, **loss_notes), figures / "learning_curves.png")),
        Image("Loss and accuracy against training time",
              save_figure(learning_curves_figure(curves, x="cumulative_seconds", **loss_notes),
                          figures / "learning_curves_time.png")),
        Image("Validation accuracy against cumulative training time, all architectures",
              save_figure(accuracy_vs_time_figure(curves), figures / "accuracy_vs_time.png")),
        Image("Per-class F1 on the test set", save_figure(per_class_f1_figure(f1, class_names),
                                                          figures / "per_class_f1.png")),
    ]
    per_arch: dict[str, list[Image]] = {}
    for arch in inputs.architectures:
        eval_dir = paths.eval_figures_dir / arch
        images = [Image(f"{arch}: test confusion matrix", eval_dir / "confusion.png"),
                  Image(f"{arch}: most confident test mistakes (true and predicted labels)",
                        eval_dir / "misclassified.png")]
        probe = paths.models_dir / arch / "unit_weights.npz"
        if probe.is_file():
            with np.load(probe) as data:
                fig = unit_weights_figure(data["weights"], data["epochs"], data["units"], arch)
            images.append(Image(f"{arch}: incoming weights of first-layer units over the epochs",
                                save_figure(fig, figures / f"{arch}_unit_weights.png")))
        per_arch[arch] = images
    return overview, per_arch


def leaderboard_image(tables: ReportTables, paths: ReportPaths) -> Image:
    return Image("Test accuracy per architecture, best first (mean over seeds, the error bar their standard "
                 "deviation where there are several); the diamonds are the published figures",
                 save_figure(leaderboard_figure(tables.leaderboard), paths.out_dir / "figures" / "leaderboard.png"))


def report_tag(report_run_id: str) -> str:
    return f"fmnist.report.{report_run_id}"


def report_filter(report_run_id: str) -> str:
    """The MLflow search that selects the training runs behind one report."""
    return f"tags.`{report_tag(report_run_id)}` = 'true'"


def _contender(client: MlflowClient, run_id: str, arch: str) -> Contender:
    run = client.get_run(run_id)
    return Contender.from_run(run_id, arch, run.data.metrics, run.data.tags)


def _current_champion(client: MlflowClient, name: str):
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:  # no registered model, or no champion yet
        return None


def register_champion(client: MlflowClient, entries: list[dict], name: str, report_run_id: str,
                      rule: GateRule | None = None) -> dict:
    """Register the best model by validation accuracy (once per run) and let the gate decide its alias:
    `champion` if it beats the current champion (fmnist/reporting/gate.py), else `challenger`. The decision
    and both models' figures are tags of its model version; the result names the champion after it."""
    rule = rule or GateRule()
    best = best_entry(entries)
    behind = weights_left_behind(client, entries)
    if behind:
        return _record_left_behind(client, name, best, behind, rule)
    _forget_left_behind(client, name)
    existing = [v for v in client.search_model_versions(f"name = '{name}'") if v.run_id == best["run_id"]]
    if existing:
        version = max(existing, key=lambda v: int(v.version))
    else:
        version = mlflow.register_model(f"runs:/{best['run_id']}/model", name,
                                        tags={"arch": best["arch"], "best_val_acc": str(best["best_val_acc"])})
    held = _current_champion(client, name)
    challenger = _contender(client, best["run_id"], best["arch"])
    champion = None if held is None else _contender(client, held.run_id, held.tags.get("arch", "?"))
    decision = decide(challenger, champion, rule)
    client.set_model_version_tag(name, version.version, "report_run_id", report_run_id)
    for key, value in decision.tags(challenger, champion, rule).items():
        client.set_model_version_tag(name, version.version, key, value)
    client.set_registered_model_alias(name, decision.alias, version.version)
    kept = version if decision.promote else held
    winner = challenger if decision.promote else champion
    return {"name": name, "version": int(kept.version), "alias": CHAMPION, "arch": winner.arch,
            "run_id": winner.run_id, "best_val_acc": winner.val_acc, "uri": f"models:/{name}@{CHAMPION}",
            "gate": {"decision": decision.tags(challenger, champion, rule)["gate.decision"],
                     "promoted": decision.promote, "reason": decision.reason,
                     "challenger": {"arch": challenger.arch, "run_id": challenger.run_id,
                                    "version": int(version.version), "alias": decision.alias,
                                    "val_acc": challenger.val_acc, "test_acc": challenger.test_acc},
                     "margin": rule.margin, "test_tolerance": rule.test_tolerance}}


def best_entry(entries: list[dict]) -> dict:
    """The report's best model: by validation accuracy, then fewer parameters."""
    return max(entries, key=lambda e: (e["best_val_acc"], -e["num_params"]))


def weights_left_behind(client: MlflowClient, entries: list[dict]) -> str | None:
    """One line, when the best model's run was imported without its weights (`fmnist runs import`)."""
    best = best_entry(entries)
    weights = client.get_run(best["run_id"]).data.tags.get(WEIGHTS_TAG, "")
    if not weights.startswith(LEFT_BEHIND):
        return None
    return (f"The best model, {best['arch']} (run {best['run_id']}, validation accuracy {best['best_val_acc']:.4f}), "
            f"is not registered: its weights were {weights}.")


def _record_left_behind(client: MlflowClient, name: str, best: dict, behind: str, rule: GateRule) -> dict:
    """No model version may point at weights this store lacks: the registered model says where they are,
    and the champion stays as it was."""
    try:
        client.create_registered_model(name)
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    client.set_registered_model_tag(name, LEFT_BEHIND_TAG, behind)
    held = _current_champion(client, name)
    champion = None if held is None else _contender(client, held.run_id, held.tags.get("arch", "?"))
    gate = {"decision": "weights left behind", "promoted": False, "reason": behind,
            "challenger": {"arch": best["arch"], "run_id": best["run_id"], "version": None, "alias": None,
                           "val_acc": best["best_val_acc"], "test_acc": None},
            "margin": rule.margin, "test_tolerance": rule.test_tolerance}
    return {"name": name, "version": None if held is None else int(held.version), "alias": CHAMPION,
            "arch": champion and champion.arch, "run_id": champion and champion.run_id,
            "best_val_acc": champion and champion.val_acc,
            "uri": f"models:/{name}@{CHAMPION}" if held else None, "gate": gate}


def _forget_left_behind(client: MlflowClient, name: str) -> None:
    """A report whose best model is registered: an earlier report's left-behind note no longer applies."""
    try:
        if LEFT_BEHIND_TAG in client.get_registered_model(name).tags:
            client.delete_registered_model_tag(name, LEFT_BEHIND_TAG)
    except MlflowException as err:
        if err.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise


def summary_metrics(board: list[dict], champion: dict) -> dict:
    per_arch = {row["arch"]: {k: row[k] for k in ("test_acc", "best_val_acc", "epochs_run", "train_seconds")}
                for row in board}
    return {**per_arch, "champion_val_acc": champion["best_val_acc"]}


def write_report(settings: ReportSettings, paths: ReportPaths, root: Path = Path(".")) -> dict:
    inputs = from_outputs(settings.architectures, settings.tolerance, paths.models_dir, paths.train_metrics_dir,
                          paths.eval_metrics_dir, paths.history_dir, paths.eval_figures_dir)
    run_ids = {e["arch"]: e["run_id"] for e in inputs.entries}
    tracking.configure(root)
    for arch, arch_run_id in run_ids.items():  # fail before any work if the store lost a training run
        tracking.existing_run(MlflowClient(), arch_run_id, paths.models_dir / arch / "run.json")
    tables, notes = build_tables(inputs), run_notes(inputs)
    log.info("report: %d architectures; drawing the figures", len(inputs.architectures))
    overview, per_arch = make_figures(inputs, paths, notes)
    board_image = leaderboard_image(tables, paths)
    log.info("report: logging the report run and registering the champion")
    tags = tracking.base_tags("report", root=root)
    tags.update({"profile": settings.profile, "fmnist.training_runs": ",".join(run_ids.values())})
    with tracking.tracked_run(settings.experiment, run_name="report", tags=tags, root=root) as run:
        report_run_id = run.info.run_id
        behind = weights_left_behind(MlflowClient(), inputs.entries)
        blocks = [
            *([Text(behind)] if behind else []),
            Text(f"MLflow experiment `{settings.experiment}` (profile `{settings.profile}`), report run "
                 f"`{report_run_id}`. Every number below was measured by the training runs listed in the "
                 "leaderboard; in the MLflow UI, search "
                 f"`{report_filter(report_run_id)}` to select exactly those runs."),
            *leaderboard_blocks(tables, notes, board_image),
            Heading("Learning curves and per-class results"), *overview,
            *epoch_table_blocks(tables, per_arch, notes),
            Text(report_sentence(MlflowClient(), settings.experiment, mlflow.get_tracking_uri())),
        ]
        markdown = to_markdown([Heading(TITLE, 1), *blocks], paths.out_dir)
        page = to_html(blocks, TITLE)
        board_csv = dict_csv_text(tables.leaderboard, LEADERBOARD_COLUMNS)
        client = MlflowClient()
        for arch_run_id in run_ids.values():
            # One tag per report, never overwritten: DVC reuses training runs across reports.
            client.set_tag(arch_run_id, report_tag(report_run_id), "true")
            client.set_tag(arch_run_id, "fmnist.report_run_id", report_run_id)  # the latest report
        mlflow.log_params({"architectures": ",".join(settings.architectures),
                           "diminishing_returns_tolerance": settings.tolerance,
                           **{f"run_id.{arch}": rid for arch, rid in run_ids.items()}})
        mlflow.log_text(markdown, "report/report.md")
        mlflow.log_text(page, "report/report.html")
        mlflow.log_text(board_csv, "report/leaderboard.csv")
        mlflow.log_dict(tables.to_dict(), "report/tables.json")
        mlflow.log_artifacts(str(paths.out_dir / "figures"), "report/figures")
        mlflow.log_artifacts(str(paths.eval_figures_dir), "report/eval")  # report.md links these
        # Last, so a report that failed on the way never moves the alias.
        champion = register_champion(client, inputs.entries, settings.registered_model, report_run_id,
                                     settings.gate)
        mlflow.set_tags({"champion": champion["uri"] or "none", "champion_version": str(champion["version"]),
                         "gate.decision": champion["gate"]["decision"], "gate.reason": champion["gate"]["reason"]})
    atomic_write_text(paths.out_dir / "report.md", markdown)
    atomic_write_text(paths.out_dir / "report.html", page)
    atomic_write_text(paths.out_dir / "leaderboard.csv", board_csv)
    write_json(paths.out_dir / "tables.json", tables.to_dict())
    write_json(paths.out_dir / "champion.json", champion)
    write_json(paths.summary_metrics, summary_metrics(tables.leaderboard, champion))
    write_json(paths.out_dir / "run.json", {"run_id": report_run_id, "experiment": settings.experiment,
                                            "training_runs": run_ids})
    return {"run_id": report_run_id, "leaderboard": tables.leaderboard, "champion": champion}
