import numpy as np
import pytest

from fmnist.data.idx import IdxFormatError, read_images, read_labels, read_pair

from conftest import idx_bytes, synthetic_images


def write(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_round_trip(tmp_path):
    x, y = synthetic_images(12)
    images = write(tmp_path, "img", idx_bytes(x, 0x803))
    labels = write(tmp_path, "lbl", idx_bytes(y, 0x801))
    got_x, got_y = read_pair(images, labels, expected_count=12)
    assert got_x.dtype == np.uint8 and got_x.shape == (12, 28, 28)
    np.testing.assert_array_equal(got_x, x)
    np.testing.assert_array_equal(got_y, y)


@pytest.mark.parametrize("mutate, reader, message", [
    (lambda b: b[:10], read_images, "truncated"),
    (lambda b: b[:-5], read_images, "truncated: header says (3, 28, 28)"),
    (lambda b: b + b"xx", read_images, "has trailing bytes"),
    (lambda b: (0x801).to_bytes(4, "big") + b[4:], read_images, "magic number 0x00000801, expected 0x00000803"),
])
def test_corrupt_image_files_name_the_file(tmp_path, mutate, reader, message):
    x, _ = synthetic_images(3)
    path = write(tmp_path, "bad-images", mutate(idx_bytes(x, 0x803)))
    with pytest.raises(IdxFormatError) as err:
        reader(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_wrong_image_size(tmp_path):
    path = write(tmp_path, "img", idx_bytes(np.zeros((2, 32, 32), np.uint8), 0x803))
    with pytest.raises(IdxFormatError, match="images are 32x32, expected 28x28"):
        read_images(path)


def test_label_out_of_range(tmp_path):
    path = write(tmp_path, "lbl", idx_bytes(np.array([1, 2, 10], np.uint8), 0x801))
    with pytest.raises(IdxFormatError, match=r"label 10 out of range 0\.\.9"):
        read_labels(path)


def test_count_mismatch_and_expected_count(tmp_path):
    x, y = synthetic_images(5)
    images = write(tmp_path, "img", idx_bytes(x, 0x803))
    labels = write(tmp_path, "lbl", idx_bytes(y[:4], 0x801))
    with pytest.raises(IdxFormatError, match="holds 5 images but .* holds 4 labels"):
        read_pair(images, labels)
    labels = write(tmp_path, "lbl", idx_bytes(y, 0x801))
    with pytest.raises(IdxFormatError, match="5 images, expected 60000"):
        read_pair(images, labels, expected_count=60000)
