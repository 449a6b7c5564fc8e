import gzip
import urllib.error

import pytest

from fmnist.data import fetch
from fmnist.data.fetch import DataSourceError, fetch_all, raw_file


@pytest.fixture
def pinned(raw_source, monkeypatch):
    src, hashes = raw_source
    monkeypatch.setattr(fetch, "OFFICIAL_FILES", hashes)
    return src, hashes


def test_local_source_is_verified_and_laid_out_for_torchvision(pinned, tmp_path):
    src, hashes = pinned
    out = tmp_path / "raw"
    sources = fetch_all(out, mirrors=[], local_dirs=[str(src)], timeout=1, retries=0)
    assert set(sources) == set(hashes)
    for name in hashes:
        assert raw_file(out, name) == out / "FashionMNIST" / "raw" / name
        assert fetch.sha256(raw_file(out, name).read_bytes()) == hashes[name]


def test_repackaged_gzip_with_same_content_is_accepted(pinned, tmp_path):
    """The pinned hash is of the decompressed content: another gzip wrapper of the same bytes verifies."""
    src, hashes = pinned
    name = "t10k-labels-idx1-ubyte"
    original = (src / f"{name}.gz").read_bytes()
    content = gzip.decompress(original)
    repackaged = gzip.compress(content, mtime=12345, compresslevel=1)
    assert repackaged != original and fetch.sha256(repackaged) != fetch.sha256(original)
    (src / f"{name}.gz").write_bytes(repackaged)
    out = tmp_path / "raw"
    sources = fetch_all(out, [], [str(src)], 1, 0)
    assert sources[name] == str(src / f"{name}.gz")  # taken from the repackaged file, not skipped
    assert raw_file(out, name).read_bytes() == content  # written decompressed, the official bytes
    assert fetch.sha256(raw_file(out, name).read_bytes()) == hashes[name]


def test_hash_mismatch_names_file_both_hashes_and_source_and_writes_nothing(pinned, tmp_path):
    src, hashes = pinned
    name = "train-labels-idx1-ubyte"
    (src / f"{name}.gz").write_bytes(gzip.compress(b"not the official labels"))
    out = tmp_path / "raw"
    with pytest.raises(DataSourceError) as err:
        fetch_all(out, [], [str(src)], 1, 0)
    text = str(err.value)
    assert name in text and hashes[name] in text and str(src / f"{name}.gz") in text
    assert fetch.sha256(b"not the official labels") in text
    assert not out.exists() and not (tmp_path / "raw.partial").exists()


def test_existing_output_survives_a_failed_fetch(pinned, tmp_path):
    src, _ = pinned
    out = tmp_path / "raw"
    fetch_all(out, [], [str(src)], 1, 0)
    before = sorted(p.read_bytes() for p in out.rglob("*") if p.is_file())
    (src / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b truncated")
    with pytest.raises(DataSourceError, match="not a valid gzip file"):
        fetch_all(out, [], [str(src)], 1, 0)
    assert sorted(p.read_bytes() for p in out.rglob("*") if p.is_file()) == before


def test_mirror_is_used_first_with_retries_then_local_fallback(pinned, tmp_path, monkeypatch):
    src, hashes = pinned
    monkeypatch.setattr(fetch.time, "sleep", lambda s: None)
    calls = []

    def flaky(url, timeout):
        calls.append(url)
        if len(calls) == 1:
            raise urllib.error.URLError("temporary failure")
        return (src / url.rsplit("/", 1)[1]).read_bytes()

    sources = fetch_all(tmp_path / "a", ["http://mirror.test/"], [], timeout=1, retries=1, http_get=flaky)
    assert all(s.startswith("http://mirror.test/") for s in sources.values())
    assert len(calls) == 5  # one retry, then one call per file

    calls.clear()

    def down(url, timeout):
        calls.append(url)
        raise urllib.error.URLError("unreachable")

    sources = fetch_all(tmp_path / "b", ["http://mirror.test/"], [str(src)], timeout=1, retries=2, http_get=down)
    assert all(s.startswith(str(src)) for s in sources.values())
    assert len(calls) == 3  # an unreachable mirror is not tried again for the other files


def test_no_source_at_all_says_how_to_fix(pinned, tmp_path):
    with pytest.raises(DataSourceError, match="dataset-fashion-mnist"):
        fetch_all(tmp_path / "raw", [], [str(tmp_path / "empty")], 1, 0)
