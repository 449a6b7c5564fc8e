"""The tracking store, checked before any work: reachable within seconds, readable, and its schema
created once under a lock (MLflow creates a new SQLite store's tables on first use, and concurrent
first users race)."""

from __future__ import annotations

import contextlib
import sqlite3
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

from filelock import FileLock

from fmnist.core.errors import StoreError

REACH_TIMEOUT_S = 5.0


def sqlite_path(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def check_store(uri: str) -> None:
    """A clear line now rather than minutes of retries and a traceback later."""
    path = sqlite_path(uri)
    if path is not None:
        _check_sqlite(path)
    elif uri.startswith(("http://", "https://")):
        _check_server(uri)


def _check_sqlite(path: Path) -> None:
    if not path.exists() or path.stat().st_size == 0:
        return  # a new store: MLflow creates it
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as db:
            db.execute("select count(*) from sqlite_master").fetchone()
    except sqlite3.DatabaseError as err:
        raise StoreError(f"{path} is not a readable MLflow store ({err}); move it aside (e.g. mv {path.name} "
                         f"{path.name}.broken) to start a new store, or set MLFLOW_TRACKING_URI") from None


def _check_server(uri: str) -> None:
    health = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(health, timeout=REACH_TIMEOUT_S) as answer:  # noqa: S310 (the user's URI)
            answer.read(64)
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise StoreError(f"tracking server {uri} did not answer within {REACH_TIMEOUT_S:g} s ({reason}); start it, "
                         "or fix MLFLOW_TRACKING_URI (unset it to use the local mlflow.db)") from None


@contextlib.contextmanager
def schema_lock(uri: str) -> Iterator[None]:
    """Serialise the first use of a SQLite store across processes; servers serialise for themselves."""
    path = sqlite_path(uri)
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock", timeout=120):
        yield
