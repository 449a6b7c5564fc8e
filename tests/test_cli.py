"""The `fmnist` command: the error policy (one line, exit 2, no traceback), the profile switch that
keeps params.yaml's comments, and commands that call the workflows directly."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from fmnist.cli import main
from fmnist.params_edit import set_profile

from conftest import ROOT


def fmnist(*args, cwd=ROOT, env=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "fmnist.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def params_copy(tmp_path):
    path = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", path)
    return path


@pytest.mark.parametrize("args, message", [
    (["train", "mlp", "--set", "recipes.mlp.optimizer.lr=.nan"],
     "recipes.mlp.optimizer.lr: got nan, expected a finite"),
    (["train", "mlp", "--set", "train.seed=[1"], "override 'train.seed=[1': the value is not valid YAML"),
    (["train", "vgg99"], "no recipe 'vgg99'"),
    (["train", "mlp", "--set", "recipes.mlp.model.hiden=[3]"], "recipes.mlp.model: unknown option 'hiden'"),
    (["tables", "--tracking-uri", "sqlite:////nonexistent/mlflow.db"], "no MLflow database at /nonexistent"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    result = fmnist(*args, "--params", str(ROOT / "params.yaml")) if args[0] == "train" else fmnist(*args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_models_lists_the_registry(capsys):
    with pytest.raises(SystemExit) as done:
        main(["models"])
    assert done.value.code == 0
    names = capsys.readouterr().out.split()
    assert {"mlp", "cnn4", "resnet18", "sk_svc"} <= set(names)


def test_a_bug_keeps_its_traceback(monkeypatch):
    """Only expected failures are one line: anything else is a bug and must show where it happened."""
    import fmnist.cli as cli

    monkeypatch.setattr(cli, "print_tables", lambda *a: (_ for _ in ()).throw(KeyError("bug")))
    with pytest.raises(KeyError):
        main(["tables"])


def test_tables_reads_the_experiment_of_the_profile_in_params(params_copy, monkeypatch):
    import fmnist.cli as cli

    set_profile(params_copy, "quick")
    assert cli.tables_experiment(None, params_copy) == ("fmnist-quick", f"the quick profile in {params_copy}")
    assert cli.tables_experiment("other", params_copy) == ("other", "--experiment")
    seen = []
    monkeypatch.setattr(cli, "print_tables", lambda *a: seen.append(a))
    with pytest.raises(SystemExit):
        main(["tables", "--params", str(params_copy)])
    assert seen[0][1] is None and seen[0][4] == params_copy  # no hard-coded `full` experiment


def exp_rev(rev, epochs, mlp_acc, cnn_val, name=None, error=None):
    """One revision as `dvc exp show --json` (DVC 3.x) records it."""
    summary = {"mlp": {"test_acc": mlp_acc, "best_val_acc": 0.85, "epochs_run": epochs, "train_seconds": 12.5 * epochs},
               "cnn4": {"test_acc": 0.9, "best_val_acc": cnn_val, "epochs_run": 20, "train_seconds": 300.0},
               "champion_val_acc": max(0.85, cnn_val)}
    return {"rev": rev, "name": name, "error": error,
            "data": {"rev": rev, "timestamp": None if rev == "workspace" else "2026-11-24T14:18:42",
                     "params": {"params.yaml": {"data": {"profile": "full", "seed": 42,
                                                         "recipes": {"mlp": {"epochs": epochs, "milestones": [3, 6]},
                                                                     "cnn4": {"epochs": 20}}}}},
                     "metrics": {"metrics/summary.json": {"data": summary},
                                 "metrics/eval/mlp.json": {"data": {"test_acc": mlp_acc, "n_test": 10000}},
                                 "metrics/eval/cnn4.json": {"data": {"test_acc": 0.9, "n_test": 10000}}}}}


EXP_SHOW = [
    {**exp_rev("workspace", 10, 0.81, 0.91), "experiments": None},
    {**exp_rev("d2c8bf7ff08c75439db7904a3ae53cfcd934edaf", 10, 0.81, 0.91, name="main"),
     "experiments": [{"name": "more-epochs", "executor": None,
                      "revs": [exp_rev("419a2296eb4f8d2affa59caaedac91ba05cef98a", 30, 0.83, 0.80,
                                       name="more-epochs")]}]},
]


def test_exps_keeps_params_that_differ_and_headline_metrics(tmp_path, capsys):
    from fmnist.reporting.experiments import parse_exp_show

    rows, columns = parse_exp_show(EXP_SHOW)
    assert [r["Experiment"] for r in rows] == ["workspace", "main", "more-epochs"]
    assert "metrics/eval/mlp.json:test_acc" in columns["metrics"] and "mlp.test_acc" in columns["metrics"]
    saved = tmp_path / "show.json"
    saved.write_text(json.dumps(EXP_SHOW))
    with pytest.raises(SystemExit) as done:
        main(["exps", "--input", str(saved)])
    assert done.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ("| Experiment | rev | created | recipes.mlp.epochs | champion | champion val acc | "
                        "mlp test acc (train s) | cnn4 test acc (train s) |")
    assert lines[2] == "| workspace |  |  | 10 | cnn4 | 0.9100 | 0.8100 (125 s) | 0.9000 (300 s) |"
    assert lines[3].startswith("| main | d2c8bf7 | 2026-11-24 14:18 | 10 |")
    assert lines[4] == ("| more-epochs | 419a229 | 2026-11-24 14:18 | 30 | mlp | 0.8500 | 0.8300 (375 s) | "
                        "0.9000 (300 s) |")
    assert "params that differ: recipes.mlp.epochs (of 5)" in lines[-1]
    with pytest.raises(SystemExit):
        main(["exps", "--input", str(saved), "--all-columns"])
    header = capsys.readouterr().out.splitlines()[0]
    assert "| seed |" in header and "| recipes.mlp.milestones |" in header
    assert "| metrics/eval/cnn4.json:n_test |" in header


def test_exps_bad_input_is_one_line(tmp_path):
    (tmp_path / "show.json").write_text("{not json")
    for args, message in ((["--input", str(tmp_path / "show.json")], "not JSON"),
                          (["--input", str(tmp_path / "missing.json")], "no such file")):
        result = fmnist("exps", *args)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_tables_says_which_experiment_it_read_and_carries_the_notes(params_copy, monkeypatch, capsys):
    """The MLflow-only tables say what the report says: the experiment read, the SWA row, divergence."""
    from types import SimpleNamespace

    from test_render import report_inputs

    import fmnist.reporting.sources as sources
    import fmnist.tracking as tracking

    monkeypatch.chdir(params_copy.parent)  # the MLflow client it builds looks here, not in the repository
    set_profile(params_copy, "quick")
    asked = []
    monkeypatch.setattr(tracking, "configure", lambda **kw: None)
    monkeypatch.setattr(sources, "find_report_run", lambda client, name, run_id: asked.append(name) or
                        SimpleNamespace(info=SimpleNamespace(run_id="r1")))
    monkeypatch.setattr(sources, "from_mlflow", lambda client, run: report_inputs())
    with pytest.raises(SystemExit) as done:
        main(["tables", "--params", str(params_copy)])
    out = capsys.readouterr().out
    assert done.value.code == 0 and asked == ["fmnist-quick"]
    assert out.startswith(f"Tables of report run r1 in experiment 'fmnist-quick' (from the quick profile in "
                          f"{params_copy})")
    assert "| SWA 3-5 | 0.3613 |" in out and "| DIVERGED |" in out and "**single fit**" in out
    assert "**Diverged runs**: `resnet50` (val loss 4.6e+10 at epoch 3)" in out
