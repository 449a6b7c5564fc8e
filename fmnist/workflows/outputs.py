"""A stage's outputs as one unit: checked before any work (writable, room on the disk, nobody else
writing them), built in a staging folder and moved into place by rename.

Everything transient lives under `.fmnist/` at the project root (ignored by git and DVC), never
beside the outputs, so DVC's hashes of `models/` only ever see finished folders.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

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


def _nearest_existing(folder: Path) -> Path:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def check_writable(*paths: Path, staging_root: Path | None = None) -> None:
    """Each output's folder (or the folder it would be made in) takes a file, its disk has room, and, with
    `staging_root`, it is on the same filesystem as the staging area (the final move is a rename): before
    any work, and without creating anything."""
    for path in paths:
        folder = _nearest_existing(path.parent.absolute())
        if not folder.is_dir():
            raise OutputError(f"{path.parent} is not writable (Not a directory: {folder} is a file); choose "
                              "another output path")
        try:
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".fmnist-write-test-"):
                pass
        except OSError as err:
            raise OutputError(f"{path.parent} is not writable ({err.strerror}); fix its permissions or choose "
                              "another output path") from None
        if staging_root is not None:
            staging = _nearest_existing((staging_root / WORK_DIR).absolute())
            if os.stat(staging).st_dev != os.stat(folder).st_dev:
                raise OutputError(f"{path.parent} is on another filesystem than the project's {WORK_DIR}/ (where "
                                  "outputs are built before one rename moves them in); choose an output path "
                                  "inside the project's filesystem")
        free = shutil.disk_usage(folder).free
        if free < MIN_FREE_BYTES:
            raise OutputError(f"{folder}: only {free / 2**20:.0f} MiB free on its disk, at least "
                              f"{MIN_FREE_BYTES / 2**20:.0f} MiB needed for the checkpoint and the training "
                              "state; free some space first")


def staging_dir(root: Path, name: str) -> Path:
    staging = root / WORK_DIR / "staging"
    staging.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=staging, prefix=f"{name}."))
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(folder, 0o777 & ~mask)  # mkdtemp makes it private; the model folder gets the usual mode
    return folder


def replace_dir(staged: Path, target: Path) -> None:
    """Put the finished folder `staged` at `target`: the old folder is moved aside, the new one moved in
    (two renames, never a copy), and the old one put back if the second rename fails. Readers see the
    old folder or the new one, never a mix of files from both."""
    target.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if target.exists():
        old = staged.parent / f"{staged.name}.old"
        os.replace(target, old)
    try:
        os.replace(staged, target)
    except BaseException:
        if old is not None:
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
