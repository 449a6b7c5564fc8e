"""Stage scripts fail at start-up with one clear line for bad input, before doing any work."""

import os
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT


def run_stage(script, *args, cwd=ROOT):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(ROOT / "stages" / script), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_bad_param_override_fails_before_any_work(tmp_path):
    result = run_stage("train.py", "--arch", "mlp", "--set", "recipes.mlp.budgets.full.epochs=0",
                       "--model-dir", str(tmp_path / "m"))
    assert result.returncode == 2
    assert "recipes.mlp.budgets.full.epochs: got 0, allowed range [1, inf]" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "m").exists()


def test_unknown_architecture_lists_known_ones(tmp_path):
    result = run_stage("train.py", "--arch", "vgg99", "--model-dir", str(tmp_path / "m"))
    assert result.returncode == 2
    assert "recipes.vgg99: no recipe 'vgg99'; params.yaml has recipes: acc96, basic_cnn" in result.stderr


def test_a_resolved_file_cannot_be_overridden_or_missing(tmp_path):
    from fmnist.core.entry import add_recipe_arguments, load_run, parser
    from fmnist.core.errors import ConfigError

    p = parser("a stage")
    add_recipe_arguments(p)
    with pytest.raises(ConfigError, match="mlp.json: no resolved recipe; run `dvc repro resolve`"):
        load_run(p.parse_args(["--run", str(tmp_path / "mlp.json")]))
    with pytest.raises(ConfigError, match="--set applies to --arch NAME"):
        load_run(p.parse_args(["--run", str(tmp_path / "mlp.json"), "--set", "train.seed=1"]))
    assert load_run(p.parse_args(["--arch", "mlp", "--params", str(ROOT / "params.yaml")])).recipe.network == "mlp"


def test_corrupt_raw_file_is_named(tmp_path):
    raw = tmp_path / "raw" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (raw / name).write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 6)
    result = run_stage("preprocess.py", "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "train-images-idx3-ubyte: truncated" in result.stderr
    assert not (tmp_path / "out").exists()


def test_download_from_a_wrong_local_file_names_it(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["download"] = {"mirrors": [], "local_dirs": [str(tmp_path / "src")], "timeout_s": 1, "retries": 0}
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "train-images-idx3-ubyte").write_bytes(b"wrong")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = run_stage("download.py", "--params", str(tmp_path / "params.yaml"), "--out", str(tmp_path / "raw"))
    assert result.returncode == 2
    assert "train-images-idx3-ubyte: content hash mismatch" in result.stderr
    assert not (tmp_path / "raw").exists()
