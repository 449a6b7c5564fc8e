"""The tracking store, checked before any work: reachable within seconds, readable, and its schema
created once under a lock (MLflow creates a new SQLite store's tables on first use, and concurrent
first users race)."""

from __future__ import annotations

import contextlib
import sqlite3
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

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


def is_store_failure(err: BaseException) -> bool:
    """The store itself failed (its database, its disk, the connection), as opposed to a bug of ours."""
    import sqlalchemy.exc

    seen = err
    while seen is not None:
        if isinstance(seen, (sqlalchemy.exc.OperationalError, sqlite3.DatabaseError, ConnectionError)):
            return True
        if type(seen).__module__.startswith(("requests", "urllib3")) and "Connection" in type(seen).__name__:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@contextlib.contextmanager
def store_errors(uri: str) -> Iterator[None]:
    """Failures of the store as one line (StoreError); anything else from MLflow keeps its traceback."""
    from filelock import Timeout
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as err:
        if not is_store_failure(err):
            raise
        raise StoreError(f"the tracking store {uri} failed ({str(err).splitlines()[0][:200]}); check its disk and "
                         "that it is reachable, then run again") from err
    except Timeout:
        raise StoreError(f"the tracking store {uri} stayed locked for 2 minutes by another process creating its "
                         "tables; run again when that process is done") from None
