"""The CI workflow played end to end on this machine (fmnist/ci/rehearsal.py): PostgreSQL and an MLflow
server on loopback, a DVC remote in a folder, a bare origin, a developer's clone and a fresh clone per
CI job. Three CI runs: the first push trains everything, a better cnn1 is retrained alone and promoted,
a worse cnn1 is retrained alone and refused."""

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from fmnist.ci.rehearsal import ARCHS, rehearse, transcript

from conftest import ROOT

pytestmark = pytest.mark.ci_rehearsal


def _committed_tree() -> Path:
    """The rehearsal clones HEAD: skip when the checkout has uncommitted changes to the code."""
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "fmnist", "stages", "dvc.yaml",
                            "params.yaml"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    if dirty:
        pytest.skip(f"uncommitted changes would not be rehearsed: {dirty.splitlines()[0]} ...")
    return ROOT


@pytest.fixture(scope="module")
def rehearsal():
    if shutil.which("initdb") is None and not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        pytest.fail("PostgreSQL is not installed: `make setup` installs it")
    work = Path(tempfile.mkdtemp(prefix="fmnist-rehearsal-", dir="/tmp"))
    work.chmod(0o755)  # as root, PostgreSQL runs as the postgres user, which must reach its folder
    try:
        yield rehearse(_committed_tree(), work / "w")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_the_first_push_trains_every_architecture_at_once_and_names_a_champion(rehearsal):
    first = rehearsal["runs"][0]
    assert sorted(first.planned) == sorted(ARCHS)
    assert first.report["gate"]["promoted"] and first.report["gate"]["reason"] == "no champion yet"
    trainings = [r for r in rehearsal["first_runs"] if r["stage"].startswith("train@")]
    assert len(trainings) == len(ARCHS)  # four trainings logged at once to the PostgreSQL-backed server
    for run in trainings:
        assert run["status"] == "FINISHED"
        assert run["epochs_run"] >= 1 and run["val_acc_points"] == run["epochs_run"], run  # every epoch arrived
    assert max(r["start"] for r in trainings) < min(r["end"] for r in trainings)  # all four were running together
    for arch in ARCHS:  # no dvc.lock on the branch yet: the data comes from the run cache, or is built
        assert {"download", "preprocess", "split"} <= set(first.restored[arch]) | set(first.rebuilt[arch])


def test_a_changed_recipe_retrains_only_its_architecture(rehearsal):
    for run in rehearsal["runs"][1:]:
        assert run.planned == ["cnn1"]
        assert run.rebuilt == {"cnn1": []}  # the data came by dvc.lock from the remote
        assert run.report["merged"] == ["train@cnn1"]
        assert not any(s.startswith("train@") for s in run.report["ran"])  # the report job never trains
        assert "evaluate@cnn1" in run.report["ran"] and "report" in run.report["ran"]
        assert not any(s.startswith("evaluate@") and s != "evaluate@cnn1" for s in run.report["ran"])


def test_the_gate_promotes_the_better_model_and_keeps_the_champion_against_a_worse_one(rehearsal):
    first, better, worse = rehearsal["champions"]
    assert better["arch"] == "cnn1" and better["version"] != first["version"]
    assert rehearsal["runs"][1].report["gate"]["promoted"]
    assert not rehearsal["runs"][2].report["gate"]["promoted"]
    assert worse == better  # the champion stays
    assert rehearsal["runs"][2].report["gate"]["challenger"]["alias"] == "challenger"


def test_the_comment_holds_the_metrics_diff_the_decision_and_the_plots(rehearsal):
    comment = rehearsal["runs"][2].comment
    assert "| Path" in comment and "cnn1.test_acc" in comment  # dvc metrics diff --md against main
    assert "Champion gate: kept the champion" in comment
    assert "![accuracy_vs_time](reports/figures/accuracy_vs_time.png)" in comment


def test_no_run_is_left_running_and_the_transcript_says_so(rehearsal):
    assert all(r["status"] != "RUNNING" for r in rehearsal["all_runs"])
    assert "left RUNNING: 0." in transcript(rehearsal)
