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
