"""CI retraining: the plan (which train stages are out of date) and the champion gate."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fmnist.ci.plan import architectures_to_train, github_output, stages_to_run
from fmnist.cli import main
from fmnist.reporting.gate import CHALLENGER, CHAMPION, Contender, GateRule, decide

from conftest import ROOT

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


# -- the CI steps' pieces --------------------------------------------------------------------------------

def test_lock_entries_from_other_jobs_merge_without_touching_the_rest(tmp_path):
    from fmnist.ci.dvc import lock_entry, merge_lock_entries

    (tmp_path / "dvc.lock").write_text("schema: '2.0'\nstages:\n  split:\n    cmd: python stages/split.py\n"
                                       "  train@mlp:\n    cmd: old\n")
    merge_lock_entries({"train@mlp": {"cmd": "new", "outs": [{"path": "models/mlp", "md5": "x.dir"}]},
                        "train@cnn1": {"cmd": "c"}}, tmp_path)
    assert lock_entry("split", tmp_path) == {"cmd": "python stages/split.py"}
    assert lock_entry("train@mlp", tmp_path)["cmd"] == "new" and lock_entry("train@cnn1", tmp_path) == {"cmd": "c"}


def test_bundles_carry_the_small_outputs_and_the_lock_entry(tmp_path):
    from fmnist.ci.steps import ENTRY_FILE, merge_bundles

    bundle, work = tmp_path / "bundle" / "mlp", tmp_path / "work"
    (bundle / "metrics/train").mkdir(parents=True)
    (bundle / "metrics/train/mlp.json").write_text('{"best_val_acc": 0.9}')
    entry = {"cmd": "train", "outs": [{"path": "models/mlp", "md5": "a.dir"},
                                      {"path": "metrics/train/mlp.json", "md5": "b"}]}
    (bundle / ENTRY_FILE).write_text(json.dumps({"train@mlp": entry}))
    work.mkdir()
    assert merge_bundles([bundle], work) == ["train@mlp"]
    assert (work / "metrics/train/mlp.json").read_text() == '{"best_val_acc": 0.9}'
    assert "train@mlp:" in (work / "dvc.lock").read_text()


def test_a_folder_that_is_not_a_bundle_is_refused_before_anything_is_merged(tmp_path):
    from fmnist.ci.steps import read_bundles
    from fmnist.core.errors import ConfigError

    with pytest.raises(ConfigError, match="not a train bundle"):
        read_bundles([tmp_path])


def test_the_comment_has_the_decision_the_diff_the_stages_and_the_plots(tmp_path):
    from fmnist.ci.steps import PLOTS, comment_text

    for plot in PLOTS:
        (tmp_path / plot).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / plot).write_bytes(b"png")
    gate = {"decision": "kept the champion", "reason": "gain below the margin", "margin": 0.002,
            "test_tolerance": 0.005, "challenger": {"arch": "cnn1", "run_id": "r2", "version": 3,
                                                      "alias": "challenger"}}
    record = {"merged": ["train@cnn1"], "ran": ["evaluate@cnn1", "report"], "skipped": ["split"],
              "from_run_cache": []}
    text = comment_text("| Path | Metric |", gate, record, tmp_path)
    assert "**Champion gate: kept the champion.** gain below the margin." in text
    assert "| Path | Metric |" in text and "run by the report job: evaluate@cnn1, report" in text
    assert "![learning_curves](reports/figures/learning_curves.png)" in text


WORKFLOW = ROOT / ".github" / "workflows" / "retrain.yml"
OUR_COMMANDS = ("make ", ".venv/bin/fmnist ", "cml comment ")  # cml only posts the comment file


def test_the_workflow_matches_githubs_schema():
    done = subprocess.run([str(Path(sys.executable).parent / "check-jsonschema"), "--builtin-schema",
                           "vendor.github-workflows", str(WORKFLOW)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_workflow_step_runs_our_commands():
    import yaml

    flow = yaml.safe_load(WORKFLOW.read_text())
    assert set(flow[True]) >= {"push", "pull_request", "workflow_dispatch", "schedule"}  # YAML 1.1: on -> True
    assert flow[True]["workflow_dispatch"]["inputs"]["profile"]
    runs = [step["run"] for job in flow["jobs"].values() for step in job["steps"] if "run" in step]
    assert runs and all(run.startswith(OUR_COMMANDS) for run in runs), runs
    assert any("fmnist ci plan" in r for r in runs) and any("fmnist ci train" in r for r in runs)
    assert any("fmnist ci report" in r for r in runs)
    credentials = {k: v for k, v in flow["env"].items() if any(w in k for w in ("PASSWORD", "KEY", "TOKEN", "URI"))}
    assert "MLFLOW_TRACKING_URI" in credentials
    assert all(v == f"${{{{ secrets.{k} }}}}" for k, v in credentials.items()), credentials  # none in the repo


def test_the_report_stage_registers_through_the_gate(tmp_path):
    import mlflow
    from mlflow import MlflowClient
    from sklearn.dummy import DummyClassifier

    from fmnist.workflows.report import register_champion

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = MlflowClient()

    def trained(val: float, test: float) -> dict:
        with mlflow.start_run() as run:
            mlflow.log_metrics({"best_val_acc": val, "final_test_acc": test})
            mlflow.set_tags({f"data_sha256.{k}": v for k, v in DATA.items()})
            mlflow.sklearn.log_model(DummyClassifier().fit([[0], [1]], [0, 1]), name="model")
        return {"run_id": run.info.run_id, "arch": "mlp", "best_val_acc": val, "num_params": 1}

    first = trained(0.90, 0.89)
    assert register_champion(client, [first], "m", "report-1")["gate"]["promoted"]
    slightly = trained(0.901, 0.90)
    kept = register_champion(client, [first, slightly], "m", "report-2", GateRule(margin=0.002))
    assert not kept["gate"]["promoted"] and kept["run_id"] == first["run_id"] and kept["version"] == 1
    challenger = client.get_model_version_by_alias("m", CHALLENGER)
    assert challenger.run_id == slightly["run_id"] and "below the margin" in challenger.tags["gate.reason"]
    assert challenger.tags["gate.champion_run_id"] == first["run_id"]
    better = trained(0.93, 0.92)
    promoted = register_champion(client, [first, slightly, better], "m", "report-3")
    assert promoted["gate"]["promoted"] and promoted["version"] == 3
    assert client.get_model_version_by_alias("m", CHAMPION).run_id == better["run_id"]


def test_server_commands_without_a_server_say_how_to_start_one(tmp_path, capsys):
    for action in ("status", "stop"):
        with pytest.raises(SystemExit) as done:
            main(["server", action, "--dir", str(tmp_path)])
        assert done.value.code == 2
        assert f"no server started from {tmp_path}; start one with: fmnist server start" in capsys.readouterr().err


# -- each job's system packages, on a distribution that lacks some ---------------------------------------

FAKE_APT = """#!/bin/bash
echo "apt-get $*" >> "$FAKE_DIR/apt.log"
[ "$1" = update ] && exit 0
if [ "$2" = -s ]; then  # the dry run that asks the archive for a candidate
    grep -qx "${@: -1}" "$FAKE_DIR/archive" && exit 0
    echo "E: Unable to locate package ${@: -1}" >&2; exit 100
fi
shift 3; printf '%s\\n' "$@" >> "$FAKE_DIR/installed"
"""
FAKE_DPKG_QUERY = """#!/bin/bash
grep -qx "${@: -1}" "$FAKE_DIR/installed" && { printf 'install ok installed'; exit 0; }
echo "dpkg-query: no packages found matching ${@: -1}" >&2; exit 1
"""
ALL_PACKAGES = {"dataset-fashion-mnist", "chromium", "postgresql"}


def setup_commands() -> dict[str, str]:
    """Each job's `make setup ...` line of the workflow, and .ci/run's."""
    import yaml

    flow = yaml.safe_load(WORKFLOW.read_text())
    lines = {name: next(s["run"] for s in job["steps"] if s.get("run", "").startswith("make setup"))
             for name, job in flow["jobs"].items()}
    assert "make setup\n" in (ROOT / ".ci" / "run").read_text()
    return {**lines, ".ci/run": "make setup"}


def system_deps(command: str, tmp_path: Path, archive: set[str]) -> tuple[subprocess.CompletedProcess, set, str]:
    """The system-deps part of a setup line, on a machine with none of the packages, whose archive has only
    `archive`: a PATH of the tools make needs and a fake apt-get and dpkg-query (the real ones are not touched)."""
    fake = tmp_path / "bin"
    fake.mkdir(parents=True)
    for tool in ("make", "bash", "sh", "python3", "id", "sed", "grep", "env"):
        (fake / tool).symlink_to(shutil.which(tool))
    for name, script in (("apt-get", FAKE_APT), ("dpkg-query", FAKE_DPKG_QUERY)):
        (fake / name).write_text(script)
        (fake / name).chmod(0o755)
    (tmp_path / "archive").write_text("".join(f"{p}\n" for p in archive))
    (tmp_path / "installed").write_text("")
    args = command.split()[2:]  # after `make setup`: the job's variables
    done = subprocess.run(["make", "-s", "-C", str(ROOT), "system-deps", "SUDO=", *args], capture_output=True,
                          text=True, env={"PATH": str(fake), "FAKE_DIR": str(tmp_path)}, timeout=60)
    log = (tmp_path / "apt.log").read_text() if (tmp_path / "apt.log").exists() else ""
    return done, set((tmp_path / "installed").read_text().split()), log


@pytest.mark.parametrize("job, installs", [("plan", {"dataset-fashion-mnist"}), ("train", {"dataset-fashion-mnist"}),
                                           ("report", set()), (".ci/run", ALL_PACKAGES)])
def test_each_job_installs_only_what_it_needs(job, installs, tmp_path):
    done, installed, log = system_deps(setup_commands()[job], tmp_path, archive=ALL_PACKAGES)
    assert done.returncode == 0, done.stderr
    assert installed == installs
    assert ("apt-get" in log) == bool(installs)  # nothing missing that the job wants: apt is not even updated


def test_on_ubuntu_the_ci_jobs_skip_chromium_and_a_missing_dataset_package_in_one_line(tmp_path):
    for job in ("plan", "train", "report"):
        done, installed, log = system_deps(setup_commands()[job], tmp_path / job, archive={"postgresql"})
        assert done.returncode == 0 and installed == set() and "install -y" not in log, done.stderr
        lines = (done.stdout + done.stderr).splitlines()
        if job == "report":
            assert lines == []
        else:
            assert len(lines) == 1 and "skipped dataset-fashion-mnist" in lines[0], lines
            assert "download.mirrors" in lines[0]


def test_a_needed_package_the_distribution_lacks_is_one_line_before_anything_is_installed(tmp_path):
    done, installed, log = system_deps("make setup", tmp_path, archive={"dataset-fashion-mnist", "postgresql"})
    assert done.returncode != 0 and installed == set() and "install -y" not in log
    error = [line for line in done.stderr.splitlines() if line.startswith("system-deps:")]
    assert len(error) == 1 and "chromium is needed here" in error[0], done.stderr
    assert "snap install chromium" in error[0]
