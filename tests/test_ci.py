"""CI retraining: the plan (which train stages are out of date) and the champion gate."""

import json

import pytest

from fmnist.ci.gate import CHALLENGER, CHAMPION, Contender, GateRule, decide
from fmnist.ci.plan import architectures_to_train, github_output, stages_to_run
from fmnist.cli import main

DATA = {"train": "a" * 64, "val": "b" * 64, "test": "c" * 64}
# As `dvc repro --dry` prints it (DVC 3.x): stages that would run, and those it skips.
DRY = """Stage 'download' didn't change, skipping
Stage 'preprocess' didn't change, skipping
Stage 'split' didn't change, skipping
Running stage 'train@cnn4':
> python stages/train.py --arch cnn4 --split data/split --prepared data/prepared --model-dir models/cnn4
Stage 'train@mlp' didn't change, skipping
Running stage 'evaluate@cnn4':
> python stages/evaluate.py --arch cnn4 --model-dir models/cnn4
Running stage 'report':
> python stages/report.py --out reports --summary metrics/summary.json
"""


def contender(run_id="new", val=0.93, test=0.92, data=DATA):
    return Contender(run_id, "cnn4", val, test, dict(data))


def test_plan_lists_only_the_train_stages_dvc_would_run():
    assert stages_to_run(DRY) == ["train@cnn4", "evaluate@cnn4", "report"]
    assert architectures_to_train(DRY) == ["cnn4"]
    assert architectures_to_train("Stage 'train@mlp' didn't change, skipping\n") == []


def test_plan_writes_a_matrix_for_github_actions(tmp_path):
    out = tmp_path / "github_output"
    github_output(["cnn4", "mlp"], str(out))
    assert out.read_text() == 'archs=["cnn4", "mlp"]\nany=true\n'
    assert github_output([], str(tmp_path / "other")).endswith("any=false\n")


def test_ci_plan_command_reads_a_saved_dry_run(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("GITHUB_OUTPUT", raising=False)
    saved = tmp_path / "dry.txt"
    saved.write_text(DRY)
    with pytest.raises(SystemExit) as done:
        main(["ci", "plan", "--dry-output", str(saved)])
    assert done.value.code == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == ["cnn4"]


def test_gate_promotes_the_first_model_and_a_clear_improvement():
    assert decide(contender(), None).alias == CHAMPION
    better = decide(contender(val=0.935), contender("old", val=0.930), GateRule(margin=0.002))
    assert better.promote and "+0.0050" in better.reason


@pytest.mark.parametrize("challenger, why", [
    (contender(val=0.931), "below the margin 0.002"),  # +0.001 only
    (contender(val=0.940, test=0.90), "more than the tolerance 0.005"),  # better on val, 2 points worse on test
    (contender(val=0.950, data={**DATA, "train": "d" * 64}), "compared on one data version only"),
    (contender(val=0.950, data={}), "compared on one data version only"),  # no data recorded: never promoted
])
def test_gate_keeps_the_champion_and_says_why(challenger, why):
    decision = decide(challenger, contender("old", val=0.930, test=0.92), GateRule(margin=0.002,
                                                                                    test_tolerance=0.005))
    assert not decision.promote and decision.alias == CHALLENGER
    assert why in decision.reason


def test_gate_decision_is_recorded_with_both_runs_and_figures():
    champion = contender("old", val=0.930)
    decision = decide(contender(val=0.931), champion)
    tags = decision.tags(contender(val=0.931), champion, GateRule())
    assert tags["gate.decision"] == "kept the champion"
    assert (tags["gate.challenger_run_id"], tags["gate.champion_run_id"]) == ("new", "old")
    assert tags["gate.champion_val_acc"] == "0.93" and tags["gate.reason"] == decision.reason


def test_contender_reads_the_training_runs_metrics_and_data_tags():
    c = Contender.from_run("r1", "mlp", {"best_val_acc": 0.9, "final_test_acc": 0.89},
                           {"data_sha256.train": "t", "data_sha256.val": "v", "git_commit": "abc"})
    assert (c.val_acc, c.test_acc, c.data) == (0.9, 0.89, {"train": "t", "val": "v"})
