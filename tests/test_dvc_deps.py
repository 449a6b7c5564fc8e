"""dvc.yaml's code deps cannot go stale: every fmnist module a stage script can import (at any depth,
including imports inside functions and the registry's lazily built model modules) lies under one of
that stage's deps, so changing it reruns the stage."""

import ast
from pathlib import Path

import pytest
import yaml

from fmnist.models.registry import _REGISTRY

from conftest import ROOT


def module_file(name: str) -> Path | None:
    base = ROOT / Path(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path) -> set[str]:
    """Every fmnist module `path` names in an import statement, anywhere in the file."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.split(".")[0] == "fmnist")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "fmnist":
            names.add(node.module)
            # `from fmnist import tracking`: the imported names may be submodules
            names.update(f"{node.module}.{a.name}" for a in node.names if module_file(f"{node.module}.{a.name}"))
    return names


def with_parents(name: str) -> set[str]:
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)}


def import_closure(script: Path) -> set[Path]:
    lazy_models = {info.target.split(":")[0] for info in _REGISTRY.values()}
    seen: set[str] = set()
    todo = set(imported_modules(script))
    while todo:
        name = todo.pop()
        for module in with_parents(name) - seen:
            seen.add(module)
            path = module_file(module)
            assert path is not None, f"{script.name} imports {module}, which is not in the repository"
            todo |= imported_modules(path)
            if module == "fmnist.models.registry":
                todo |= lazy_models  # built by name: imported when a model is built
    return {module_file(m) for m in seen}


def stage_code_deps() -> dict[str, tuple[Path, list[str]]]:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    out = {}
    for name, stage in stages.items():
        body = stage.get("do", stage)
        script = next(word for word in body["cmd"].split() if word.startswith("stages/"))
        out[name] = (ROOT / script, [d for d in body["deps"] if isinstance(d, str) and "${" not in d])
    return out


@pytest.mark.parametrize("stage", sorted(stage_code_deps()))
def test_every_module_a_stage_imports_is_a_dep_of_that_stage(stage):
    script, deps = stage_code_deps()[stage]
    assert script.relative_to(ROOT).as_posix() in deps, f"{stage}: its own script is not a dep"
    uncovered = sorted(path.relative_to(ROOT).as_posix() for path in import_closure(script)
                       if not any(path.relative_to(ROOT).as_posix() == d
                                  or path.relative_to(ROOT).as_posix().startswith(d.rstrip("/") + "/") for d in deps))
    assert not uncovered, f"dvc.yaml stage {stage} imports modules that are not among its deps: {uncovered}"


def test_the_closure_follows_imports_inside_functions_and_lazy_models():
    closure = {p.relative_to(ROOT).as_posix() for p in import_closure(ROOT / "stages/train.py")}
    assert "fmnist/training/loop.py" in closure  # imported inside NetworkTrainer.fit
    assert "fmnist/models/small_cnn.py" in closure  # built by name through the registry
    report = {p.relative_to(ROOT).as_posix() for p in import_closure(ROOT / "stages/report.py")}
    assert not any(p.startswith("fmnist/models/") and not p.endswith("registry.py") for p in report), report


@pytest.mark.parametrize("stage", sorted(stage_code_deps()))
def test_a_stage_depends_on_no_code_it_does_not_import(stage):
    """A code dep that is a folder holds only modules the stage imports (else a change there would rerun
    the stage for nothing: as every train stage did for the champion gate when it sat in fmnist/core)."""
    script, deps = stage_code_deps()[stage]
    closure = {path.relative_to(ROOT).as_posix() for path in import_closure(script)}
    false = sorted(f"{dep}: {module.relative_to(ROOT).as_posix()}" for dep in deps if (ROOT / dep).is_dir()
                   and dep.startswith(("fmnist", "stages")) for module in (ROOT / dep).rglob("*.py")
                   if module.relative_to(ROOT).as_posix() not in closure)
    assert not false, f"dvc.yaml stage {stage} depends on modules it never imports: {false}"
