"""Fetch the four official Fashion-MNIST files and verify their decompressed content.

Sources are tried in order: the official mirrors (with a timeout and retries), then local
directories such as Debian's `dataset-fashion-mnist`. Hashes are of the decompressed bytes, since
repackaged `.gz` wrappers differ while the content is the same.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fmnist.core.errors import DataError

log = logging.getLogger(__name__)

# SHA-256 of the decompressed official files.
OFFICIAL_FILES: dict[str, str] = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}

# torchvision.datasets.FashionMNIST(root=R) reads R/FashionMNIST/raw/<name>.
TORCHVISION_SUBDIR = Path("FashionMNIST") / "raw"


class DataSourceError(DataError):
    """No source delivered a file, or a file's content does not match its pinned hash."""


@dataclass(frozen=True)
class FetchedFile:
    name: str
    content: bytes
    source: str


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def decompress(raw: bytes, source: str) -> bytes:
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError) as err:
        raise DataSourceError(f"{source}: not a valid gzip file ({err}); delete it or fetch it again") from err


def verify(name: str, content: bytes, source: str, expected: str) -> None:
    actual = sha256(content)
    if actual != expected:
        raise DataSourceError(
            f"{name}: content hash mismatch for {source}\n"
            f"  expected sha256 {expected}\n  got      sha256 {actual}\n"
            "The file is corrupt, truncated or not the official Fashion-MNIST file: "
            "replace it with the official one (e.g. `apt-get install dataset-fashion-mnist`).")


def _http_get(url: str, timeout: float) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - fixed dataset mirrors
        return resp.read()


def _from_mirror(name: str, mirror: str, timeout: float, retries: int,
                 http_get: Callable[[str, float], bytes]) -> bytes | None:
    url = mirror.rstrip("/") + f"/{name}.gz"
    for attempt in range(retries + 1):
        try:
            log.info("downloading %s", url)
            return http_get(url, timeout)
        except (urllib.error.URLError, http.client.HTTPException, OSError, TimeoutError) as err:
            last = err
            if attempt < retries:
                time.sleep(min(2 ** attempt, 5))
    # one line per unreachable mirror (it is not tried again for the other files)
    log.warning("%s unreachable after %d attempts (%s); trying the next source", mirror, retries + 1,
                getattr(last, "reason", last))
    return None


def _from_local(name: str, directory: str) -> tuple[bytes, str] | None:
    for candidate in (Path(directory) / f"{name}.gz", Path(directory) / name):
        if candidate.is_file():
            return candidate.read_bytes(), str(candidate)
    return None


def fetch_file(name: str, mirrors: list[str], local_dirs: list[str], timeout: float, retries: int,
               http_get: Callable[[str, float], bytes] = _http_get, unreachable: set[str] | None = None
               ) -> FetchedFile:
    """Fetch one file, verified. A source whose content is wrong is an error, not skipped.

    Mirrors that failed every attempt are added to `unreachable` and not tried for later files.
    """
    expected = OFFICIAL_FILES[name]
    unreachable = set() if unreachable is None else unreachable
    for mirror in mirrors:
        if mirror in unreachable:
            continue
        raw = _from_mirror(name, mirror, timeout, retries, http_get)
        if raw is None:
            unreachable.add(mirror)
        else:
            source = mirror.rstrip("/") + f"/{name}.gz"
            content = decompress(raw, source)
            verify(name, content, source, expected)
            return FetchedFile(name, content, source)
    for directory in local_dirs:
        found = _from_local(name, directory)
        if found is not None:
            raw, source = found
            log.info("reading %s", source)
            content = decompress(raw, source)
            verify(name, content, source, expected)
            return FetchedFile(name, content, source)
    tried = [m for m in mirrors] + [str(Path(d)) for d in local_dirs]
    raise DataSourceError(
        f"{name}: not found in any source (tried: {', '.join(tried) or 'nothing'}). "
        "Install Debian's dataset-fashion-mnist (`make setup` does) or add a directory holding "
        "the file to download.local_dirs in params.yaml.")


def fetch_all(out_dir: str | Path, mirrors: list[str], local_dirs: list[str], timeout: float,
              retries: int, http_get: Callable[[str, float], bytes] = _http_get) -> dict[str, str]:
    """Fetch and verify all four files, then publish them atomically under `out_dir`.

    Returns {file name: source}. Nothing is written to `out_dir` unless every file verified.
    """
    out_dir = Path(out_dir)
    unreachable: set[str] = set()
    fetched = [fetch_file(n, mirrors, local_dirs, timeout, retries, http_get, unreachable) for n in OFFICIAL_FILES]
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    target = staging / TORCHVISION_SUBDIR
    target.mkdir(parents=True)
    for f in fetched:
        (target / f.name).write_bytes(f.content)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging.rename(out_dir)
    return {f.name: f.source for f in fetched}


def raw_file(raw_dir: str | Path, name: str) -> Path:
    return Path(raw_dir) / TORCHVISION_SUBDIR / name
