"""Which code ran: the git commit recorded on every run (and in every benchmark's report)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def git_commit(root: str | Path = ".") -> str:
    """HEAD's commit, with '-dirty' when tracked files differ from it; else FMNIST_COMMIT (a copy of the tree sent
    without .git, e.g. to a lent GPU machine), else 'unknown'."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("FMNIST_COMMIT", "unknown")
    return commit + ("-dirty" if dirty else "")
