"""The saved state of an interrupted training, outside DVC's outputs (DVC deletes those at a stage's
start): `.fmnist/state/<output folder>.pt`, written atomically after every epoch (in the background, by a
`StateWriter`), removed once the stage succeeds.

A state is resumed only by the same run: the same recipe and budget, the same input data, and the
same code (its key hashes all three); anything else starts afresh and says why.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import torch

from fmnist.core.io import atomic_write_bytes, tree_sha256

STATE_DIR = Path(".fmnist") / "state"
PACKAGE = Path(__file__).resolve().parents[1]


def code_hash(package: Path = PACKAGE) -> str:
    return tree_sha256(package, "*.py")


def run_key(settings: dict[str, Any], data_hashes: dict[str, str], code: str | None = None) -> dict[str, str]:
    """What must match for a saved state to be resumed, each part hashed on its own (to say which changed)."""
    as_hash = lambda obj: hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()  # noqa: E731
    return {"recipe": as_hash(settings), "data": as_hash(data_hashes), "code": code or code_hash()}


@dataclass
class SavedState:
    run_id: str
    fitter: dict
    extra: dict


def state_path(root: Path, model_dir: Path) -> Path:
    """One saved state per output folder: trainings into other folders (seeds, profiles) never share it."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(Path(model_dir).resolve()).strip("/"))
    return root / STATE_DIR / f"{slug}.pt"


def load_state(path: Path, key: dict[str, str]) -> tuple[SavedState | None, str]:
    """The saved state if it belongs to this run, and a line saying what happens."""
    if not path.is_file():
        return None, "no saved state: starting at epoch 1"
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)  # our own file, never downloaded
    except Exception as err:  # a state cut short by a crash of the disk or the machine
        return None, f"the saved state {path} is unreadable ({type(err).__name__}): starting afresh"
    changed = [part for part, value in key.items() if saved.get("key", {}).get(part) != value]
    if changed:
        return None, f"the {' and '.join(changed)} changed since the saved state {path}: starting afresh"
    state = SavedState(saved["run_id"], saved["fitter"], saved.get("extra", {}))
    return state, f"resuming from the end of epoch {state.fitter['next_epoch'] - 1} (saved state {path})"


def save_state(path: Path, key: dict[str, str], run_id: str, fitter: dict, extra: dict) -> None:
    buffer = io.BytesIO()
    torch.save({"key": key, "run_id": run_id, "fitter": fitter, "extra": extra}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def clear_state(path: Path) -> None:
    path.unlink(missing_ok=True)


def snapshot(obj: Any) -> Any:
    """A copy of a (nested) state that training can no longer change: every tensor detached and copied to
    the CPU, every dict, list and tuple rebuilt (an optimiser's state_dict shares its per-parameter dicts)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, np.ndarray):
        return obj.copy()
    if isinstance(obj, dict):
        copied = type(obj)((key, snapshot(value)) for key, value in obj.items())
        if hasattr(obj, "_metadata"):  # a module state_dict's versions, which load_state_dict reads
            copied._metadata = obj._metadata
        return copied
    if type(obj) in (list, tuple):
        return type(obj)(snapshot(value) for value in obj)
    return obj  # numbers, strings and the like: nothing training changes in place


class StateWriter:
    """Writes states in a background thread, one at a time, so the next epoch trains while the last one's
    state is serialised and written.

    `submit` copies its arguments at once (`snapshot`), then waits for the previous write before starting
    this one: a crash loses at most the epoch being written besides the one in progress. A failed write
    raises on the next `submit` or `wait`. Used as a context manager, it waits for the last write on the way
    out, also when an error is on its way out (which then stays the error raised)."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, write: Callable[..., None], *args: Any) -> None:
        copies = snapshot(args)
        self.wait()
        self._thread = threading.Thread(target=self._run, args=(write, copies), name="fmnist-state-writer")
        self._thread.start()

    def _run(self, write: Callable[..., None], args: tuple) -> None:
        try:
            write(*args)
        except BaseException as err:  # kept for the training thread to raise: a thread's own error would vanish
            self._error = err

    def wait(self) -> None:
        """Block until the last write is on disk; raise its error, if it failed."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        error, self._error = self._error, None
        if error is not None:
            raise error

    def __enter__(self) -> StateWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if error is None:
            self.wait()
            return
        try:
            self.wait()
        except BaseException as write_error:
            error.add_note(f"the last state write failed too: {type(write_error).__name__}: {write_error}")
