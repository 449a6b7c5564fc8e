"""Editing params.yaml in place: one value changed, everything else (comments, flow style) kept."""

import shutil

import pytest

from fmnist.core.config import load_params
from fmnist.core.errors import ConfigError
from fmnist.params_edit import set_profile

from conftest import ROOT


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
    values = [(a.split("#")[0].strip(), b.split("#")[0].strip()) for a, b in changed]
    assert values == [("profile: full", "profile: quick")]
    assert len(before.splitlines()) == len(after.splitlines())
    assert load_params(params_copy).profile == "quick"


def test_set_profile_refuses_and_writes_nothing_when_the_file_is_invalid(params_copy):
    params_copy.write_text(params_copy.read_text().replace("seed: 42", "seed: -1", 1))
    before = params_copy.read_text()
    with pytest.raises(ConfigError, match="seed: got -1"):
        set_profile(params_copy, "quick")
    assert params_copy.read_text() == before


def test_set_profile_refuses_a_profile_the_file_does_not_define(params_copy):
    before = params_copy.read_text()
    with pytest.raises(ConfigError, match="profile: got 'tpu', allowed values: full, gpu, cpu, quick"):
        set_profile(params_copy, "tpu")
    assert params_copy.read_text() == before
