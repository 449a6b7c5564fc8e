"""Which `train@ARCH` stages a CI run must retrain: the stages `dvc repro --dry` would run (DVC decides
what is out of date, downstream stages included), as a matrix for the CI's train job."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from fmnist.core.errors import FmnistError

STAGE_LINE = re.compile(r"^Running stage '([^']+)'", re.MULTILINE)


def stages_to_run(dry_output: str) -> list[str]:
    """The stage names `dvc repro --dry` says it would run, in its order."""
    return list(dict.fromkeys(STAGE_LINE.findall(dry_output)))


def architectures_to_train(dry_output: str) -> list[str]:
    return [stage.split("@", 1)[1] for stage in stages_to_run(dry_output) if stage.startswith("train@")]


def dry_run(root: Path = Path(".")) -> str:
    """`dvc repro --dry` in `root`: what would run, nothing run."""
    done = subprocess.run([sys.executable, "-m", "dvc", "repro", "--dry"], cwd=root, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise FmnistError(f"dvc repro --dry failed: {last}; run it by hand to see why")
    return done.stdout


def github_output(archs: list[str], path: str | None = None) -> str:
    """The plan as GitHub Actions step outputs (`archs` for a matrix, `any` to skip the train job)."""
    lines = f"archs={json.dumps(archs)}\nany={'true' if archs else 'false'}\n"
    path = path or os.environ.get("GITHUB_OUTPUT")
    if path:
        with open(path, "a") as fh:
            fh.write(lines)
    return lines
