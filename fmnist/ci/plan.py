"""The plan job: the data once for every train job (pulled, or built and pushed), then which
`train@ARCH` stages are out of date: those `dvc repro --dry` would run (DVC decides, from dvc.lock
and the workspace), as a matrix for the CI's train job."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from fmnist.ci import dvc as dvc_steps

STAGE_LINE = re.compile(r"^Running stage '([^']+)'", re.MULTILINE)


def stages_to_run(dry_output: str) -> list[str]:
    """The stage names `dvc repro --dry` says it would run, in its order."""
    return list(dict.fromkeys(STAGE_LINE.findall(dry_output)))


def architectures_to_train(dry_output: str) -> list[str]:
    return [stage.split("@", 1)[1] for stage in stages_to_run(dry_output) if stage.startswith("train@")]


DATA_STAGES = ("download", "preprocess", "split")
DATA_STAGE = DATA_STAGES[-1]  # the last data stage; its deps chain back to the download
RESOLVE_STAGE = "resolve"  # the recipes as the profile runs them: cheap, run wherever a train stage needs it


def prepare_data(root: Path = Path(".")) -> None:
    """Pull the data stages' outputs (or restore them from the run cache, or build them), then push them,
    so that every train job pulls the data instead of downloading and preprocessing it again."""
    dvc_steps.pull(DATA_STAGE, "--with-deps", root=root)
    dvc_steps.dvc("repro", DATA_STAGE, root=root)
    dvc_steps.push(DATA_STAGE, "--with-deps", root=root)


def dry_run(root: Path = Path(".")) -> str:
    """`dvc repro --dry --allow-missing` of the train stages (and what they depend on) in `root`: what would
    run, nothing run. Outputs that are only in the remote (not pulled here) count as up to date when
    their stage's deps and params match dvc.lock. The stages downstream of training are left out: their
    deps (the models) are not here, and they run in the report job anyway."""
    dvc_steps.dvc("repro", RESOLVE_STAGE, root=root)  # the recipes' files first: a dry run cannot tell if they change
    return dvc_steps.dvc("repro", "--dry", "--allow-missing", "--glob", "train@*", root=root, echo=False).stdout


def github_output(archs: list[str], path: str | None = None) -> str:
    """The plan as GitHub Actions step outputs (`archs` for a matrix, `any` to skip the train job)."""
    lines = f"archs={json.dumps(archs)}\nany={'true' if archs else 'false'}\n"
    path = path or os.environ.get("GITHUB_OUTPUT")
    if path:
        with open(path, "a") as fh:
            fh.write(lines)
    return lines
