"""A stage's outputs as one unit: checked before any work (writable, room on the disk, nobody else
writing them), built in a staging folder and moved into place with one rename.

Everything transient lives under `.fmnist/` at the project root (ignored by git and DVC), never
beside the outputs, so DVC's hashes of `models/` only ever see finished folders.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout

from fmnist.core.errors import OutputError

WORK_DIR = Path(".fmnist")
MIN_FREE_BYTES = 256 * 2**20  # a checkpoint, its staging copy and the saved training state, with room to spare


def _slug(path: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(path.resolve()).strip("/"))


@contextlib.contextmanager
def exclusive(target: Path, root: Path) -> Iterator[None]:
    """Refuse a second writer of `target` (e.g. two trainings of one architecture at once)."""
    locks = root / WORK_DIR / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    lock_file = locks / f"{_slug(target)}.lock"
    owner = lock_file.with_suffix(".owner")
    lock = FileLock(str(lock_file), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        who = owner.read_text().strip() if owner.is_file() else "another process"
        raise OutputError(f"{target} is being written by {who}; wait for it to finish, or train into another "
                          "folder (--model-dir, --metrics, --history)") from None
    try:
        owner.write_text(f"pid {os.getpid()} on {os.uname().nodename}\n")
        yield
    finally:
        owner.unlink(missing_ok=True)
        lock.release()


def check_writable(*paths: Path) -> None:
    """Each output's folder exists (or can be made) and takes a file, and the disk has room: before any work."""
    for path in paths:
        folder = path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".fmnist-write-test-"):
                pass
        except OSError as err:
            raise OutputError(f"{folder} is not writable ({err.strerror}); fix its permissions or choose another "
                              "output path") from None
        free = shutil.disk_usage(folder).free
        if free < MIN_FREE_BYTES:
            raise OutputError(f"{folder}: only {free / 2**20:.0f} MiB free on its disk, at least "
                              f"{MIN_FREE_BYTES / 2**20:.0f} MiB needed for the checkpoint and the training "
                              "state; free some space first")


def staging_dir(root: Path, name: str) -> Path:
    staging = root / WORK_DIR / "staging"
    staging.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=staging, prefix=f"{name}."))


def replace_dir(staged: Path, target: Path) -> None:
    """Put the finished folder `staged` at `target` with renames: readers see the old folder or the new
    one, never a mix (the old one is removed afterwards)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if target.exists():
        old = staged.parent / f"{staged.name}.old"
        os.replace(target, old)
    os.replace(staged, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
