import json

import numpy as np
import pytest

from fmnist.core.errors import DataError
from fmnist.data import fetch
from fmnist.data.fetch import fetch_all
from fmnist.data.prepare import (
    Arrays,
    load_arrays,
    preprocess,
    select_classes,
    split,
    stratified_split,
    stratified_subset,
)

TINY = {"train": 60, "t10k": 20}


@pytest.fixture
def raw_dir(raw_source, tmp_path, monkeypatch):
    src, hashes = raw_source
    monkeypatch.setattr(fetch, "OFFICIAL_FILES", hashes)
    out = tmp_path / "raw"
    fetch_all(out, [], [str(src)], 1, 0)
    return out


def test_preprocess_writes_uint8_arrays_and_training_stats(raw_dir, tmp_path):
    out = tmp_path / "prepared"
    stats = preprocess(raw_dir, out, None, TINY)
    train = load_arrays(out / "train.npz")
    assert train.x.dtype == np.uint8 and train.x.shape == (60, 28, 28)
    assert stats["mean"] == pytest.approx(train.x.mean() / 255.0)
    assert stats["std"] == pytest.approx((train.x / 255.0).std())
    assert json.loads((out / "stats.json").read_text())["classes"][0] == "T-shirt/top"


def test_preprocess_rejects_wrong_counts(raw_dir, tmp_path):
    with pytest.raises(DataError, match="60 images, expected 60000"):
        preprocess(raw_dir, tmp_path / "p", None)


def test_class_subset_is_relabelled_in_order():
    arrays = Arrays(np.zeros((10, 28, 28), np.uint8), np.arange(10))
    subset = select_classes(arrays, [7, 2])
    assert subset.y.tolist() == [1, 0]


def test_split_is_stratified_seeded_and_disjoint():
    y = np.repeat(np.arange(10), 20)
    x = np.arange(200, dtype=np.uint8)[:, None, None].repeat(28, 1).repeat(28, 2)
    arrays = Arrays(x, y)
    train, val = stratified_split(arrays, 0.1, seed=3)
    again, _ = stratified_split(arrays, 0.1, seed=3)
    other, _ = stratified_split(arrays, 0.1, seed=4)
    assert len(val) == 20 and np.bincount(val.y).tolist() == [2] * 10
    np.testing.assert_array_equal(train.x, again.x)
    assert not np.array_equal(train.x, other.x)
    assert not set(train.x[:, 0, 0]) & set(val.x[:, 0, 0])


def test_split_stage_function_writes_both_files(raw_dir, tmp_path):
    preprocess(raw_dir, tmp_path / "p", None, TINY)
    sizes = split(tmp_path / "p" / "train.npz", tmp_path / "s", 0.5, 0)
    assert sizes == {"train": 30, "val": 30}
    assert len(load_arrays(tmp_path / "s" / "val.npz")) == 30


def test_subset_keeps_class_balance():
    arrays = Arrays(np.zeros((100, 28, 28), np.uint8), np.repeat(np.arange(10), 10))
    subset = stratified_subset(arrays, 50, seed=0)
    assert np.bincount(subset.y).tolist() == [5] * 10
    assert stratified_subset(arrays, None, 0) is arrays


def test_missing_input_names_the_file(tmp_path):
    with pytest.raises(DataError, match="train.npz: not found"):
        load_arrays(tmp_path / "train.npz")
