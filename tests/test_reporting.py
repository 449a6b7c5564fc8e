from fmnist.core.runs import EpochRecord, StopRule
from fmnist.reporting.tables import diminishing_returns_epoch, epoch_time_table, leaderboard, markdown_table


def history(val):
    return [EpochRecord(epoch=i, train_acc=v, val_acc=v, test_acc=v - 0.01, epoch_seconds=10.0,
                        cumulative_seconds=10.0 * i) for i, v in enumerate(val, start=1)]


def test_diminishing_returns_is_first_epoch_within_tolerance_of_best():
    assert diminishing_returns_epoch([0.80, 0.88, 0.897, 0.90, 0.899], 0.005) == 3
    assert diminishing_returns_epoch([0.80, 0.88, 0.897, 0.90], 0.0) == 4
    assert diminishing_returns_epoch([], 0.01) is None


def test_epoch_time_table_marks_and_states_rules():
    table = epoch_time_table("cnn4", history([0.80, 0.88, 0.897, 0.90, 0.899, 0.898]), 0.005,
                             StopRule("val_acc", patience=2, min_delta=0.005))
    assert (table.best_epoch, table.diminishing_epoch, table.early_stop_epoch) == (4, 3, 5)
    marks = {row["epoch"]: row["marks"] for row in table.rows}
    assert marks[3] == "diminishing returns" and marks[4] == "best" and marks[5] == "early stop"
    assert "0.5 percentage points" in table.diminishing_rule
    assert "2 consecutive epochs" in table.early_stop_rule


def test_leaderboard_sorted_by_test_accuracy():
    rows = leaderboard([{"arch": "a", "test_acc": 0.8}, {"arch": "b", "test_acc": 0.9}, {"arch": "c"}])
    assert [r["arch"] for r in rows] == ["b", "a", "c"]


def test_markdown_table_formats_cells():
    text = markdown_table([{"a": 0.123456, "b": None, "c": 3}], ["a", "b", "c"])
    assert text.splitlines() == ["| a | b | c |", "|---|---|---|", "| 0.1235 |  | 3 |"]


# ---------------------------------------------------------------------------- notes: what each row scored

import math  # noqa: E402

from fmnist.core.runs import RunSummary, summarise, with_average  # noqa: E402
from fmnist.reporting.notes import DIVERGED_RULE, divergence, epoch_bullets, epoch_rows, run_note, run_notes  # noqa: E402
from fmnist.reporting.tables import ReportInputs  # noqa: E402


def losses(val_loss, val_acc=None):
    val_acc = val_acc or [0.5] * len(val_loss)
    return [EpochRecord(epoch=i, train_acc=a, val_acc=a, epoch_seconds=10.0, cumulative_seconds=10.0 * i,
                        train_loss=0.5, val_loss=v) for i, (v, a) in enumerate(zip(val_loss, val_acc), start=1)]


def test_divergence_flags_a_non_finite_or_exploded_validation_loss():
    exploded = divergence(losses([0.9, 0.4, 0.45, 4.6e10, 3.1e9]))
    assert (exploded.epoch, exploded.peak, exploded.peak_epoch, exploded.lowest, exploded.lowest_epoch) == \
        (4, 4.6e10, 4, 0.4, 2)
    assert "4.6e+10" in exploded.short() and "lowest was 0.4" in exploded.sentence()
    assert divergence(losses([0.9, 0.5, math.nan])).epoch == 3
    assert divergence(losses([0.9, 0.5, math.inf])).peak == math.inf
    assert divergence(losses([0.5, 0.3, 41.0])).epoch == 3  # > 100 x its lowest (30)
    assert divergence(losses([30.0, 20.0, 1500.0])).epoch == 3  # above the ceiling of 1000


def test_divergence_leaves_sane_and_overfitting_runs_alone():
    assert divergence(losses([0.6, 0.3, 0.35, 0.9, 1.8])) is None  # overfitting, not diverging
    assert divergence(losses([0.01, 0.0005, 0.2])) is None  # a tiny synthetic set: below the floor of 10
    assert divergence(losses([30.0, 20.0, 900.0])) is None  # 45 x its lowest
    assert divergence(history([0.8, 0.9])) is None  # no loss logged (an SVC)
    assert "NaN or infinite" in DIVERGED_RULE and "100 times" in DIVERGED_RULE


def swa_run():
    """An SWA recipe: the best single epoch scored 0.2725, the average of epochs 3-5 scores 0.3613."""
    hist = losses([1.9, 1.8, 1.7, 1.75, 1.72], [0.20, 0.26, 0.2725, 0.25, 0.26])
    summary = with_average(summarise("resnet18", "torch", 10, hist, best_epoch=3),
                           {"swa_val_acc": 0.3613, "swa_val_loss": 1.6, "swa_start_epoch": 3.0,
                            "swa_bn_seconds": 2.0, "swa_test_acc": 0.355})
    return summary, hist


def test_swa_row_says_the_average_was_evaluated_with_the_leaderboard_val_acc():
    summary, hist = swa_run()
    note = run_note(summary, hist)
    assert (note.selected, note.swa_epochs, note.val_acc) == ("swa", (3, 5), summary.best_val_acc)
    table = epoch_time_table("resnet18", hist, 0.005, StopRule("val_acc", 3, 0.0))
    bullets = epoch_bullets(table, note)
    evaluated = [b for b in bullets if "evaluated" in b]
    assert evaluated[0].startswith("**model evaluated**: the SWA average of the weights of epochs 3-5, val acc 0.3613")
    assert "(best val_acc, not the model evaluated): epoch 3, val acc 0.2725" in bullets[1]
    assert not any("the checkpoint evaluated" in b for b in bullets)
    last = epoch_rows(table, note)[-1]
    assert (last["epoch"], last["val_acc"], last["test_acc"], last["marks"]) == \
        ("SWA 3-5", 0.3613, 0.355, "weight average, evaluated")
    assert note.flag() == "SWA average of epochs 3-5"


def test_best_epoch_row_shows_the_val_acc_of_the_checkpoint_evaluated():
    hist = losses([0.9, 0.5, 0.6], [0.80, 0.88, 0.87])
    note = run_note(summarise("mlp", "torch", 10, hist, best_epoch=2), hist)
    bullets = epoch_bullets(epoch_time_table("mlp", hist, 0.005, StopRule("val_acc", 3, 0.0)), note)
    assert bullets[0] == "**best epoch** (best val_acc, the checkpoint evaluated): epoch 2, val acc 0.8800"
    assert note.flag() == ""


def test_a_single_fit_gets_one_sentence_not_early_stopping():
    hist = [EpochRecord(epoch=1, train_acc=1.0, val_acc=0.85, epoch_seconds=3.2, cumulative_seconds=3.2,
                        train_loss=1.9e-7, val_loss=0.9)]
    summary = RunSummary("sk_knn", "sklearn", 100, 1, 1, 0.85, 0.9, 3.2, 3.2, selected="fit", converged=True,
                         extra={"fit_seconds": 3.1})
    note = run_note(summary, hist)
    table = epoch_time_table("sk_knn", hist, 0.005, StopRule("val_acc", 3, 0.0))
    bullets = epoch_bullets(table, note)
    assert bullets == ["**single fit**: the scikit-learn estimator was fitted once (3.1 s, val acc 0.8500, the "
                       "model evaluated); with no epochs, early stopping and diminishing returns do not apply."]
    assert [r["marks"] for r in epoch_rows(table, note)] == ["the fit"]
    assert note.flag() == "one fit"


def test_run_notes_cover_every_summary_and_flag_divergence():
    hist = losses([0.9, 0.4, 4.6e10])
    inputs = ReportInputs(["resnet50"], 0.005, histories={"resnet50": hist},
                          summaries={"resnet50": summarise("resnet50", "torch", 10, hist, best_epoch=2)})
    notes = run_notes(inputs)
    assert notes["resnet50"].flag() == "DIVERGED: val loss 4.6e+10 at epoch 3"
    table = epoch_time_table("resnet50", hist, 0.005, StopRule("val_loss", 3, 0.0))
    assert epoch_bullets(table, notes["resnet50"])[-1].startswith("**diverged**: validation loss reached 4.6e+10 "
                                                                 "at epoch 3")
    assert epoch_rows(table, notes["resnet50"])[2]["marks"] == "val loss 4.6e+10"


# ---------------------------------------------------------------------------- the loss plot's range


def test_loss_plot_leaves_out_single_fits_and_clips_to_runs_that_did_not_diverge(tmp_path):
    from fmnist.reporting.figures import learning_curves_figure, save_figure

    curves = {"mlp": {"epoch": [1, 2, 3], "train_loss": [0.8, 0.4, 0.3], "val_loss": [0.7, 0.45, 0.4],
                      "train_acc": [0.7, 0.85, 0.9], "val_acc": [0.72, 0.84, 0.86]},
              "resnet50": {"epoch": [1, 2, 3], "train_loss": [1.5, 0.9, 0.7], "val_loss": [1.2, 4.6e10, 2e9],
                           "train_acc": [0.5, 0.6, 0.7], "val_acc": [0.6, 0.1, 0.1]},
              "sk_knn": {"epoch": [1], "train_loss": [1.9e-7], "val_loss": [0.9], "train_acc": [1.0],
                         "val_acc": [0.85]}}
    fig = learning_curves_figure(curves, single_fits=["sk_knn"], diverged={"resnet50": "val loss 4.6e+10"})
    ax_loss, ax_acc = fig.axes[:2]
    low, high = ax_loss.get_ylim()
    assert 0.1 < low < 0.3 and 1.5 < high < 3.0, (low, high)
    assert len(ax_loss.lines) == 4  # mlp and resnet50, train and validation: no sk_knn point
    assert "diverged, off the scale: resnet50" in ax_loss.get_title() and "single fits left out" in ax_loss.get_title()
    labels = [t.get_text() for t in ax_acc.get_legend().get_texts()]
    assert labels == ["mlp", "resnet50 (diverged: val loss 4.6e+10)", "sk_knn"]
    assert save_figure(fig, tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


# ---------------------------------------------------------------------------- the leaderboard's picture


def test_leaderboard_figure_marks_the_leader_the_seeds_spread_and_the_published_figures(tmp_path):
    from matplotlib.colors import to_hex

    from fmnist.reporting.figures import OTHER_COLOR, REFERENCE_COLOR, WINNER_COLOR, leaderboard_figure, save_figure

    rows = leaderboard([{"arch": "basic_cnn", "test_acc": 0.93, "n_seeds": 3, "test_acc_mean": 0.9286,
                         "test_acc_std": 0.0021, "n_classes": 10},
                        {"arch": "cnn4", "test_acc": 0.92, "n_classes": 10},  # a 5-class reference: not compared
                        {"arch": "fastcnn", "test_acc": 0.90, "n_classes": 10}])  # no published figure
    fig = leaderboard_figure(rows)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["basic_cnn", "cnn4", "fastcnn"]
    assert ax.get_ylim()[0] > ax.get_ylim()[1]  # the leader on top
    assert [to_hex(bar.get_facecolor()) for bar in ax.patches] == [WINNER_COLOR, OTHER_COLOR, OTHER_COLOR]
    assert [bar.get_x() + bar.get_width() for bar in ax.patches] == pytest.approx([0.9286, 0.92, 0.90])
    (bars,) = [c for c in ax.containers if type(c).__name__ == "ErrorbarContainer"]
    assert len(bars.lines[2][0].get_segments()) == 1  # only the row with several seeds has an error bar
    diamonds = [line for line in ax.lines if line.get_marker() == "D" and len(line.get_xdata())]
    assert [(line.get_xdata()[0], line.get_ydata()[0], to_hex(line.get_markerfacecolor())) for line in diamonds] == [
        (0.9421, 0, REFERENCE_COLOR), (0.9028, 1, "#ffffff")]  # hollow: counted on 5 classes
    labels = [t.get_text() for t in ax.texts]
    assert labels[0] == "0.9286 ± 0.0021 (n=3)   published 94.21% [5]: -1.35 points"
    assert labels[1:] == ["0.9200   published 90.28% [3]: not compared (5 classes)", "0.9000   no published figure"]
    assert save_figure(fig, tmp_path / "board.png").read_bytes()[:4] == b"\x89PNG"


# ---------------------------------------------------------------------------- seeds: test accuracy over seeds

import pytest  # noqa: E402
from mlflow import MlflowClient  # noqa: E402

from fmnist.core.io import atomic_write_text, write_json  # noqa: E402
from fmnist.core.runs import Evaluation, RunPointer, history_csv, write_evaluation, write_pointer  # noqa: E402
from fmnist.core.seeds import PRIMARY_TAG, SEED_GROUP_TAG, SeedSpread  # noqa: E402
from fmnist.reporting.sources import find_report_run, from_mlflow, from_outputs  # noqa: E402
from fmnist.reporting.tables import build_tables, leaderboard_row, seeds_cell  # noqa: E402

SEEDS = {42: 0.9130, 43: 0.9101, 44: 0.9142}  # seed: the kept model's test accuracy; 42 is the stage's model
F1 = {f"class_{k}": 0.9 for k in range(10)}
STOP = StopRule("val_acc", 8, 0.001)
STOP_PARAMS = {"recipe.early_stopping.monitor": "val_acc", "recipe.early_stopping.patience": "8",
               "recipe.early_stopping.min_delta": "0.001"}


def seed_record(arch, test_acc):
    hist = [EpochRecord(epoch=i, train_acc=0.8 + 0.05 * i, val_acc=0.85 + 0.02 * i, val_loss=0.5 / i,
                        test_acc=test_acc - 0.01 * (2 - i), epoch_seconds=10.0, cumulative_seconds=10.0 * i)
            for i in (1, 2)]
    return summarise(arch, "torch", 1000, hist, best_epoch=2), hist


def test_seeds_cell_shows_mean_std_and_n():
    assert seeds_cell(0.91234, 0.00213, 3) == "0.9123 ± 0.0021 (n=3)"
    assert seeds_cell(0.9, None, 1) == "0.9000 (n=1)"
    assert seeds_cell(None, None, 3) == "n=3"  # no test accuracy scored while training
    assert seeds_cell(None, None, None) == ""


def test_a_record_without_seeds_counts_as_the_evaluated_model_alone():
    row = leaderboard_row({"arch": "mlp", "test_acc": 0.88, "n_classes": 10})
    assert (row["n_seeds"], row["test_acc_mean"], row["test_acc_std"]) == (1, 0.88, None)
    assert row["test_acc_seeds"] == "0.8800 (n=1)" and row["difference"] == "+1.00"


def write_dvc_outputs(root, arch, records, evaluation, run_id, seeds=True):
    """What the train and evaluate stages leave for the report: the first record is the stage's model."""
    summary, hist = records[0]
    write_pointer(root / "models" / arch, RunPointer(run_id, "fmnist", arch, "sqlite://", STOP))
    spread = SeedSpread.of(s for s, _ in records).to_dict() if seeds else {}
    write_json(root / "metrics/train" / f"{arch}.json", {**summary.to_dict(), **spread})
    write_evaluation(root / "metrics/eval" / f"{arch}.json", evaluation)
    atomic_write_text(root / "metrics/history" / f"{arch}.csv", history_csv(hist))
    atomic_write_text(root / "reports/eval" / arch / "per_class.csv",
                      "class,precision,recall,f1,support\n" + "".join(f"{c},0.9,0.9,0.9,10\n" for c in F1))


def log_run(client, exp_id, arch, summary, hist, tags, evaluation=None, status="FINISHED"):
    run_id = client.create_run(exp_id, run_name=arch, tags={**tags, **summary.tags()}).info.run_id
    for key, value in {"arch": arch, "kind": "torch", "n_test": "10000", **STOP_PARAMS}.items():
        client.log_param(run_id, key, value)
    for row in hist:
        for key, value in row.metrics().items():
            client.log_metric(run_id, key, value, step=row.epoch)
    for key, value in {**summary.metrics(), **(evaluation.metrics() if evaluation else {})}.items():
        client.log_metric(run_id, key, value)
    client.set_terminated(run_id, status)
    return run_id


@pytest.fixture
def seeded(tmp_path, monkeypatch):
    """basic_cnn trained with three seeds (one group, the first primary) and mlp from before seeds (no
    group), as DVC outputs and as MLflow runs in a temporary sqlite store, with a report run over both."""
    monkeypatch.chdir(tmp_path)
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp_id = client.create_experiment("fmnist", artifact_location=str(tmp_path / "artifacts"))
    cnn = [seed_record("basic_cnn", acc) for acc in SEEDS.values()]
    cnn_eval = Evaluation(0.9135, 0.913, 10000, 0.3, F1)
    ids = [log_run(client, exp_id, "basic_cnn", s, h, {SEED_GROUP_TAG: "basic_cnn-1", PRIMARY_TAG: str(i == 0).lower(),
                                                       "seed": str(seed)}, cnn_eval if i == 0 else None)
           for i, (seed, (s, h)) in enumerate(zip(SEEDS, cnn))]
    failed, _ = seed_record("basic_cnn", 0.5)
    log_run(client, exp_id, "basic_cnn", failed, _, {SEED_GROUP_TAG: "basic_cnn-1"}, status="FAILED")
    other, _ = seed_record("basic_cnn", 0.6)
    log_run(client, exp_id, "basic_cnn", other, _, {SEED_GROUP_TAG: "basic_cnn-0", PRIMARY_TAG: "true"})
    mlp = seed_record("mlp", 0.88)
    mlp_eval = Evaluation(0.8812, 0.88, 10000, 0.35, F1)
    mlp_id = log_run(client, exp_id, "mlp", *mlp, {}, mlp_eval)
    write_dvc_outputs(tmp_path, "basic_cnn", cnn, cnn_eval, ids[0])
    write_dvc_outputs(tmp_path, "mlp", [mlp], mlp_eval, mlp_id, seeds=False)
    report = client.create_run(exp_id, run_name="report", tags={"fmnist.stage": "report"}).info.run_id
    for key, value in {"architectures": "basic_cnn,mlp", "diminishing_returns_tolerance": "0.005",
                       "run_id.basic_cnn": ids[0], "run_id.mlp": mlp_id}.items():
        client.log_param(report, key, value)
    client.set_terminated(report, "FINISHED")
    return tmp_path, client


def outputs_of(root):
    return from_outputs(["basic_cnn", "mlp"], 0.005, root / "models", root / "metrics/train", root / "metrics/eval",
                        root / "metrics/history", root / "reports/eval")


def test_leaderboard_from_dvc_outputs_shows_test_accuracy_over_seeds(seeded):
    root, _ = seeded
    board = {r["arch"]: r for r in build_tables(outputs_of(root)).leaderboard}
    cnn = board["basic_cnn"]
    assert cnn["test_acc"] == 0.9135  # the evaluated model: the primary seed's
    assert cnn["n_seeds"] == 3 and cnn["test_acc_seeds"] == "0.9124 ± 0.0021 (n=3)"
    assert cnn["test_acc_mean"] == pytest.approx(sum(SEEDS.values()) / 3)
    assert cnn["n_classes"] == 10 and cnn["difference"] == "-2.97"  # mean 0.91243 - 0.9421
    assert board["mlp"]["test_acc_seeds"] == "0.8812 (n=1)" and board["mlp"]["reference"] == "~87%"


def test_mlflow_alone_rebuilds_the_seeds_from_the_seed_group(seeded):
    root, client = seeded
    rebuilt = build_tables(from_mlflow(client, find_report_run(client, "fmnist")))
    cnn = next(r for r in rebuilt.leaderboard if r["arch"] == "basic_cnn")
    # the failed seed and the other group's run are left out; the primary's evaluation is the test acc
    assert cnn["n_seeds"] == 3 and cnn["test_acc_seeds"] == "0.9124 ± 0.0021 (n=3)" and cnn["test_acc"] == 0.9135
    assert rebuilt.to_dict() == build_tables(outputs_of(root)).to_dict()  # the same tables as from DVC outputs


def test_divergence_sentence_names_where_the_rule_broke_and_the_peak():
    text = divergence(losses([0.9, 0.4, 90.0, 4.6e10])).sentence()
    assert text.startswith("validation loss broke the rule at epoch 3 and reached 4.6e+10 at epoch 4")


def test_converged_or_cut_reads_the_early_stop_and_the_diminishing_returns_point():
    from fmnist.reporting.tables import stopping_cell

    assert stopping_cell("sklearn", True) == "single fit"
    assert stopping_cell("network", True) == "converged"  # patience ran out inside the budget
    assert stopping_cell("network", False, 9, 15) == "converged at 9/15"  # its diminishing-returns point
    assert stopping_cell("network", False, 4, 4) == "cut by the budget"  # still gaining at the last epoch
    assert stopping_cell("network", False, None, 4) == "cut by the budget"
