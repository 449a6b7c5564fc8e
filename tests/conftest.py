import gzip
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def synthetic_images(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Tiny learnable data: class k is a bright horizontal band at a class-specific row."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 10
    x = rng.integers(0, 40, size=(n, 28, 28), dtype=np.uint8)
    for i, label in enumerate(y):
        x[i, 2 + 2 * label: 4 + 2 * label, 4:24] = 220
    return x, y.astype(np.uint8)


@pytest.fixture
def raw_source(tmp_path):
    """A directory of four small, valid IDX .gz files, and their decompressed SHA-256 values."""
    src = tmp_path / "source"
    src.mkdir()
    hashes = {}
    for prefix, n in (("train", 60), ("t10k", 20)):
        x, y = synthetic_images(n, seed=len(prefix))
        for name, content in ((f"{prefix}-images-idx3-ubyte", idx_bytes(x, 0x803)),
                              (f"{prefix}-labels-idx1-ubyte", idx_bytes(y, 0x801))):
            (src / f"{name}.gz").write_bytes(gzip.compress(content))
            hashes[name] = hashlib.sha256(content).hexdigest()
    return src, hashes


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory):
    """The real DAG, `dvc repro`, on a tiny budget: built once, shared by every end-to-end test file."""
    from e2e_support import build_pipeline

    return build_pipeline(tmp_path_factory)
