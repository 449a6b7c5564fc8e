"""The import directions docs/architecture.md states, enforced: the torch-free modules import with
torch made unimportable, and the lower layers never import the upper ones."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

BLOCK_TORCH = """
import importlib.abc, sys
class BlockTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("torch", "torchvision"):
            raise ImportError(f"torch is unimportable in this test: {name}")
sys.meta_path.insert(0, BlockTorch())
"""

TORCH_FREE = ["fmnist.core.config", "fmnist.core.runs", "fmnist.core.entry", "fmnist.core.errors", "fmnist.core.io",
              "fmnist.core.stopping", "fmnist.core.gate", "fmnist.models", "fmnist.models.registry", "fmnist.reporting.tables",
              "fmnist.reporting.sources", "fmnist.reporting.render", "fmnist.reporting.figures",
              "fmnist.workflows.report"]


def run_without_torch(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK_TORCH + code], cwd=ROOT, capture_output=True, text=True)


@pytest.mark.parametrize("module", TORCH_FREE)
def test_module_imports_without_torch(module):
    done = run_without_torch(f"import {module}; import sys; assert 'torch' not in sys.modules")
    assert done.returncode == 0, done.stderr


def test_the_blocker_really_blocks_torch():
    assert run_without_torch("import fmnist.training.loop").returncode != 0


def test_report_stage_starts_without_torch():
    done = run_without_torch("import runpy, sys; sys.argv = ['report.py', '--help']; sys.path.insert(0, 'stages'); "
                             "runpy.run_path('stages/report.py', run_name='__main__')")
    assert done.returncode == 0 and "usage" in done.stdout, done.stderr


def fmnist_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return {n for n in names if n.startswith("fmnist.")}


# package -> fmnist packages it must never import (the layers above it; fmnist.ci sits beside the CLI)
FORBIDDEN = {
    "core": ("fmnist.data", "fmnist.models", "fmnist.training", "fmnist.tracking", "fmnist.reporting",
             "fmnist.workflows", "fmnist.cli", "fmnist.predict", "fmnist.ci"),
    "data": ("fmnist.models", "fmnist.training", "fmnist.tracking", "fmnist.reporting", "fmnist.workflows", "fmnist.ci"),
    "models": ("fmnist.data", "fmnist.training", "fmnist.tracking", "fmnist.reporting", "fmnist.workflows", "fmnist.ci"),
    "training": ("fmnist.tracking", "fmnist.reporting", "fmnist.workflows", "fmnist.ci"),
    "tracking": ("fmnist.data", "fmnist.models", "fmnist.training", "fmnist.reporting", "fmnist.workflows", "fmnist.ci"),
    "reporting": ("fmnist.data", "fmnist.models", "fmnist.training", "fmnist.workflows", "fmnist.ci"),
    "workflows": ("fmnist.cli", "fmnist.ci"),
}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layers_import_only_downwards(package):
    wrong = {f"{path.relative_to(ROOT)} imports {name}"
             for path in (ROOT / "fmnist" / package).glob("*.py") for name in fmnist_imports(path)
             if name.startswith(FORBIDDEN[package])}
    assert not wrong, sorted(wrong)


def test_no_source_module_is_much_over_300_lines():
    long = {str(p.relative_to(ROOT)): n for p in [*ROOT.glob("fmnist/**/*.py"), *ROOT.glob("stages/*.py"),
                                                   *ROOT.glob("benchmarks/**/*.py")]
            if (n := len(p.read_text().splitlines())) > 330}
    assert not long, long
