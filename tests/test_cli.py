"""The `fmnist` command: the error policy (one line, exit 2, no traceback), the profile switch that
keeps params.yaml's comments, and commands that call the workflows directly."""

import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT
from fmnist.cli import main, set_profile
from fmnist.core.config import load_params
from fmnist.core.errors import ConfigError


def fmnist(*args, cwd=ROOT, env=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "fmnist.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def params_copy(tmp_path):
    path = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", path)
    return path


def test_set_profile_changes_only_the_profile_and_keeps_comments(params_copy):
    before = params_copy.read_text()
    set_profile(params_copy, "quick")
    after = params_copy.read_text()
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines()) if a != b]
    assert changed == [("profile: full", "profile: quick")]
    assert len(before.splitlines()) == len(after.splitlines())
    assert load_params(params_copy).profile == "quick"


def test_set_profile_refuses_and_writes_nothing_when_the_file_is_invalid(params_copy):
    params_copy.write_text(params_copy.read_text().replace("seed: 42", "seed: -1", 1))
    before = params_copy.read_text()
    with pytest.raises(ConfigError, match="seed: got -1"):
        set_profile(params_copy, "quick")
    assert params_copy.read_text() == before


@pytest.mark.parametrize("args, message", [
    (["train", "mlp", "--set", "recipes.mlp.optimizer.lr=.nan"], "recipes.mlp.optimizer.lr: got nan, expected a finite"),
    (["train", "mlp", "--set", "train.seed=[1"], "override 'train.seed=[1': the value is not valid YAML"),
    (["train", "vgg99"], "no recipe for architecture 'vgg99'"),
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
