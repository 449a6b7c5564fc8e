"""Atomic file output: write to a temporary name beside the target, then rename."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fmnist.core.errors import OutputError


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        # mkstemp makes the file private (0600): give it the mode a plain open() would, or keep the old one.
        os.chmod(tmp, path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as err:  # a full disk, a file-size limit, a read-only folder: the old file stays as it was
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot be written ({err.strerror or err}); free space or fix permissions, "
                          "then run again (the previous file, if any, is unchanged)") from None
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise OutputError(f"{path}: not found; run the stage that writes it first (`dvc repro`)")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise OutputError(f"{path}: not valid JSON ({err}); re-run the stage that writes it") from None


def save_npz(path: str | Path, **arrays: np.ndarray) -> Path:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return atomic_write_bytes(path, buf.getvalue())


def csv_text(header: list[str], rows: Iterable[Sequence]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def dict_csv_text(rows: Iterable[dict], columns: list[str]) -> str:
    """CSV of `columns` from dict rows; a missing key is an empty cell."""
    return csv_text(columns, ([row.get(c) for c in columns] for row in rows))


def tree_sha256(folder: str | Path, pattern: str = "*", skip: tuple[str, ...] = ()) -> str:
    """SHA-256 over the relative paths and contents of every file under `folder` matching `pattern`
    (files whose relative path is in `skip` left out)."""
    import hashlib

    folder = Path(folder)
    digest = hashlib.sha256()
    files = (p for p in folder.rglob(pattern) if p.is_file() and p.relative_to(folder).as_posix() not in skip)
    for path in sorted(files):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
