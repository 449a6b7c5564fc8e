"""The page `dvc plots show` writes carries the pinned Vega, Vega-Lite and Vega-Embed (vendor/vega), and every
history has the columns dvc.yaml plots from it. Drawing it offline: tests/test_e2e_plots.py."""

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dvc_render.vega import VegaRenderer

from fmnist.core.runs import PLOTTED_COLUMNS, EpochRecord, history_csv

from conftest import ROOT

PAGE = ROOT / "vendor/vega/dvc-plots.html"
PINS = json.loads((ROOT / "vendor/vega/pins.json").read_text())["packages"]


def build_page_module():
    spec = importlib.util.spec_from_file_location("build_page", ROOT / "vendor/vega/build_page.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_page_inlines_exactly_the_pinned_files():
    done = subprocess.run([sys.executable, "vendor/vega/build_page.py", "--check"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_an_edited_page_is_refused():
    build_page = build_page_module()
    page = PAGE.read_text(encoding="utf-8")
    with pytest.raises(build_page.PinError, match="inlined vega@"):
        build_page.check_page(PINS, page.replace('"5.20.2"', '"5.20.3"', 1))
    with pytest.raises(build_page.PinError, match="differs"):
        build_page.check_page(PINS, page.replace("<title>", "<script src=x></script><title>"))


def test_the_pins_are_the_versions_dvc_render_loads():
    loaded = dict(re.findall(r"cdn\.jsdelivr\.net/npm/([a-z-]+)@([0-9.]+)", VegaRenderer.SCRIPTS))
    assert loaded == {pin["name"]: pin["version"] for pin in PINS}


def test_dvc_config_names_the_page():
    done = subprocess.run([str(Path(sys.executable).parent / "dvc"), "config", "plots.html_template"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert (ROOT / ".dvc" / done.stdout.strip()).resolve() == PAGE
    assert "{plot_divs}" in PAGE.read_text(encoding="utf-8") and "{scripts}" not in PAGE.read_text(encoding="utf-8")


def test_a_history_without_losses_has_every_plotted_column():
    plots = yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]
    history = next(p["metrics/history"] for p in plots if "metrics/history" in p)
    assert {history["x"], *history["y"]} <= set(PLOTTED_COLUMNS)
    svc = EpochRecord(epoch=1, train_acc=0.99, val_acc=0.88, epoch_seconds=2.0, cumulative_seconds=2.0)
    header, row = history_csv([svc]).splitlines()
    assert header.split(",")[:5] == list(PLOTTED_COLUMNS)
    assert row.split(",")[:5] == ["1", "", "0.99", "", "0.88"]  # no loss, not a zero one
