import os
import stat

import numpy as np
import pytest

from fmnist.core.errors import DataError, OutputError
from fmnist.core.io import atomic_write_text, read_json, save_npz
from fmnist.data.prepare import load_arrays


def test_atomic_write_gives_normal_permissions_and_keeps_existing_ones(tmp_path):
    path = atomic_write_text(tmp_path / "a.txt", "x")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
    path.chmod(0o640)
    atomic_write_text(path, "y")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640 and path.read_text() == "y"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]  # no temporary file left behind


def test_broken_json_and_arrays_name_the_file(tmp_path):
    (tmp_path / "run.json").write_text("{not json")
    with pytest.raises(OutputError, match="run.json: not valid JSON"):
        read_json(tmp_path / "run.json")
    (tmp_path / "train.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DataError, match="train.npz: not a readable array file"):
        load_arrays(tmp_path / "train.npz")
    save_npz(tmp_path / "wrong.npz", x=np.zeros((2, 5), np.float32), y=np.zeros(2))
    with pytest.raises(DataError, match=r"wrong.npz: expected uint8 images \[N, 28, 28\]"):
        load_arrays(tmp_path / "wrong.npz")
