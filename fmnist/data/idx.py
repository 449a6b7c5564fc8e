"""Parse IDX files (the MNIST format) with full validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fmnist.core.errors import DataError

IMAGE_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
LABEL_MAGIC = 0x00000801  # unsigned byte, 1 dimension
NUM_CLASSES = 10
IMAGE_SHAPE = (28, 28)


class IdxFormatError(DataError):
    """An IDX file is corrupt, truncated or not the kind of file expected."""


def _header(data: bytes, path: Path, magic: int, ndim: int) -> tuple[int, ...]:
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise IdxFormatError(f"{path}: truncated: {len(data)} bytes, shorter than the {header_len}-byte IDX header")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise IdxFormatError(f"{path}: magic number 0x{found:08x}, expected 0x{magic:08x} "
                             f"({'images' if magic == IMAGE_MAGIC else 'labels'} file); wrong or corrupt file")
    return tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))


def _body(data: bytes, path: Path, dims: tuple[int, ...]) -> np.ndarray:
    offset = 4 + 4 * len(dims)
    expected = int(np.prod(dims))
    actual = len(data) - offset
    if actual != expected:
        state = "truncated" if actual < expected else "has trailing bytes"
        raise IdxFormatError(f"{path}: {state}: header says {dims} = {expected} bytes of data, file holds {actual}")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims).copy()


def read_images(path: str | Path) -> np.ndarray:
    path = Path(path)
    data = path.read_bytes()
    dims = _header(data, path, IMAGE_MAGIC, 3)
    if dims[1:] != IMAGE_SHAPE:
        raise IdxFormatError(f"{path}: images are {dims[1]}x{dims[2]}, expected 28x28")
    return _body(data, path, dims)


def read_labels(path: str | Path) -> np.ndarray:
    path = Path(path)
    data = path.read_bytes()
    dims = _header(data, path, LABEL_MAGIC, 1)
    labels = _body(data, path, dims)
    if labels.size and labels.max() >= NUM_CLASSES:
        raise IdxFormatError(f"{path}: label {int(labels.max())} out of range 0..{NUM_CLASSES - 1}")
    return labels


def read_pair(images_path: str | Path, labels_path: str | Path, expected_count: int | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    images, labels = read_images(images_path), read_labels(labels_path)
    if len(images) != len(labels):
        raise IdxFormatError(f"{images_path} holds {len(images)} images but {labels_path} holds "
                             f"{len(labels)} labels; the pair does not belong together")
    if expected_count is not None and len(images) != expected_count:
        raise IdxFormatError(f"{images_path}: {len(images)} images, expected {expected_count}")
    return images, labels
