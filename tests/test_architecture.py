"""The import directions docs/architecture.md states, enforced: the torch-free modules import with
torch made unimportable, and the lower layers never import the upper ones."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

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
              "fmnist.core.stopping", "fmnist.reporting.gate", "fmnist.models", "fmnist.models.registry",
              "fmnist.reporting.tables",
              "fmnist.reporting.sources", "fmnist.reporting.render", "fmnist.reporting.figures",
              "fmnist.workflows.report", "fmnist.sweep.space"]


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
             "fmnist.workflows", "fmnist.cli", "fmnist.predict", "fmnist.ci", "fmnist.params_edit"),
    "data": ("fmnist.models", "fmnist.training", "fmnist.tracking", "fmnist.reporting", "fmnist.workflows",
             "fmnist.ci"),
    "models": ("fmnist.data", "fmnist.training", "fmnist.tracking", "fmnist.reporting", "fmnist.workflows",
               "fmnist.ci"),
    "training": ("fmnist.tracking", "fmnist.reporting", "fmnist.workflows", "fmnist.ci"),
    "tracking": ("fmnist.data", "fmnist.models", "fmnist.training", "fmnist.reporting", "fmnist.workflows",
                 "fmnist.ci"),
    "reporting": ("fmnist.data", "fmnist.models", "fmnist.training", "fmnist.workflows", "fmnist.ci"),
    "workflows": ("fmnist.cli", "fmnist.ci", "fmnist.params_edit"),
    # CI drives DVC and the CLI's commands from beside the CLI: it runs stages as processes, never in-process
    "ci": ("fmnist.cli", "fmnist.data", "fmnist.training", "fmnist.tracking", "fmnist.reporting", "fmnist.workflows",
           "fmnist.predict"),
    # runs where MLflow is not installed: never the MLflow layers
    "offline": ("fmnist.tracking", "fmnist.importing", "fmnist.cli", "fmnist.ci", "fmnist.workflows.train",
                "fmnist.workflows.evaluate", "fmnist.workflows.report"),
    "importing": ("fmnist.cli", "fmnist.ci", "fmnist.workflows"),
    "sweep": ("fmnist.cli", "fmnist.ci", "fmnist.params_edit", "fmnist.reporting"),
}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layers_import_only_downwards(package):
    wrong = {f"{path.relative_to(ROOT)} imports {name}"
             for path in (ROOT / "fmnist" / package).glob("*.py") for name in fmnist_imports(path)
             if name.startswith(FORBIDDEN[package])}
    assert not wrong, sorted(wrong)


def test_the_offline_trainer_and_the_gpu_command_import_without_mlflow():
    code = ("import sys\nfor m in ('mlflow', 'dvc', 'ruamel', 'omegaconf'): sys.modules[m] = None\n"
            f"sys.path.insert(0, {str(ROOT / 'benchmarks')!r})\n"
            "import gpu_run, fmnist.offline.part, fmnist.offline.trainer, fmnist.reporting.figures\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-1500:]


def test_no_source_module_is_much_over_300_lines():
    long = {str(p.relative_to(ROOT)): n for p in [*ROOT.glob("fmnist/**/*.py"), *ROOT.glob("stages/*.py"),
                                                   *ROOT.glob("benchmarks/**/*.py")]
            if (n := len(p.read_text().splitlines())) > 330}
    assert not long, long


def runtime_imports(path: Path) -> set[str]:
    """fmnist_imports without those under `if TYPE_CHECKING:` (annotations only: never executed)."""
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING"
                   for n in ast.walk(node)}
    names = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.update([node.module, *(f"{node.module}.{a.name}" for a in node.names)])
    return {n for n in names if n.startswith("fmnist.")}


def import_graph() -> dict[str, set[str]]:
    """fmnist module -> the fmnist modules it imports when run, anywhere in its file (inside functions too)."""
    modules = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
               for p in (ROOT / "fmnist").rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imported in runtime_imports(path):  # `from fmnist.a import b`: fmnist.a, and fmnist.a.b if a module
            targets |= {imported} & modules.keys()
        graph[name] = targets - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circles_anywhere_in_fmnist():
    assert cycles(import_graph()) == []


def test_the_circle_finder_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    graph = import_graph()
    assert "fmnist.core.config" in graph["fmnist.training.plan"]  # the graph sees real imports
    assert "fmnist.training.plan" not in graph["fmnist.training.trainers"]  # an annotation's import is not one


# The config boundary (resolves profiles; the CLI lists them and sets the active one) and the CI rehearsal,
# a scenario that picks a profile as a user does.
BOUNDARY = {"fmnist/core/config.py", "fmnist/core/layers.py", "fmnist/cli.py", "fmnist/params_edit.py",
            "fmnist/ci/rehearsal.py"}


def profile_branches(path: Path) -> list[str]:
    """Comparisons involving a profile (`x.profile == ...`, `profile in ...`) and the profile names the
    project's params define written out as strings ("cpu" left out: it is also a device)."""
    names = set(yaml.safe_load((ROOT / "params.yaml").read_text())["profiles"]) - {"cpu"}
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(getattr(s, "attr", getattr(s, "id", None)) == "profile" for s in sides):
                found.append(f"line {node.lineno}: compares a profile")
        elif isinstance(node, ast.Constant) and node.value in names:
            found.append(f"line {node.lineno}: the profile name {node.value!r}")
    return found


def test_nothing_below_the_config_branches_on_a_profile_name():
    found = {f"{p.relative_to(ROOT)} {what}" for p in (ROOT / "fmnist").rglob("*.py")
             if p.relative_to(ROOT).as_posix() not in BOUNDARY
             for what in profile_branches(p)}
    assert not found, sorted(found)


def test_the_profile_branch_finder_finds_one(tmp_path):
    code = tmp_path / "x.py"
    code.write_text('if params.profile == "cpu":\n    epochs = 3\nlabel = "quick"\n')
    assert profile_branches(code) == ["line 1: compares a profile", "line 3: the profile name 'quick'"]
