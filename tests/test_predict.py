import numpy as np
import torch
from PIL import Image

from fmnist.predict import predict_files, read_image, to_fashion_mnist


def test_dark_object_on_white_photo_is_inverted_centred_and_keeps_aspect():
    photo = np.full((100, 200), 255, np.uint8)
    photo[25:75, 50:150] = 0  # a dark 2:1 box on white
    out = to_fashion_mnist(Image.fromarray(photo).convert("RGB"))
    assert out.shape == (28, 28) and out.dtype == np.uint8
    assert out[0].max() == 0 and out[-1].max() == 0  # background is black, padded top and bottom
    assert out[14, 14] > 200  # the object is light
    rows = np.flatnonzero(out.max(1) > 128)
    cols = np.flatnonzero(out.max(0) > 128)
    assert (cols[-1] - cols[0] + 1) > 1.6 * (rows[-1] - rows[0] + 1)


def test_fashion_mnist_style_image_passes_through_unchanged():
    image = np.zeros((28, 28), np.uint8)
    image[5:20, 8:18] = 180
    np.testing.assert_array_equal(to_fashion_mnist(Image.fromarray(image)), image)


def test_small_images_are_enlarged_and_16_bit_ones_rescaled():
    small = np.zeros((14, 7), np.uint8)
    small[2:12, 2:5] = 200  # a light object 10 pixels tall on black
    out = to_fashion_mnist(Image.fromarray(small))
    assert (out > 100).sum(axis=0).max() >= 18  # enlarged 2x, not pasted at 10 pixels
    wide = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    out16 = to_fashion_mnist(Image.fromarray(wide))  # a 16-bit grayscale image
    assert out16.max() > 200 and (out16 > 0).mean() > 0.5  # not clipped to black


def test_transparent_background_counts_as_background():
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[10:30, 10:30] = (20, 20, 20, 255)  # opaque dark square, the rest fully transparent
    out = to_fashion_mnist(Image.fromarray(rgba, "RGBA"))
    assert out[0, 0] == 0 and out[14, 14] > 200


class Fixed(torch.nn.Module):
    class_names = ["dark", "light"]

    def forward(self, x):
        mean = x.mean(dim=(1, 2, 3))
        return torch.stack([-mean, mean], dim=1) * 50


def test_unreadable_files_are_reported_and_the_others_still_classified(tmp_path):
    bright = tmp_path / "bright.png"
    light_object = np.zeros((28, 28), np.uint8)
    light_object[2:26, 2:26] = 250
    Image.fromarray(light_object).save(bright)
    dark = tmp_path / "dark.jpg"
    Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(dark)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG but not really")
    missing = tmp_path / "missing.png"
    predictions, errors = predict_files(Fixed(), [str(bright), str(broken), str(dark), str(missing)])
    assert [(p.path, p.label) for p in predictions] == [(str(bright), "light"), (str(dark), "dark")]
    assert len(errors) == 2 and "broken.png: cannot read it as an image" in errors[0]
    assert "missing.png" in errors[1]
    assert all(0.0 <= p.probability <= 1.0 for p in predictions)


def test_read_image_names_the_file(tmp_path):
    bad = tmp_path / "x.jpg"
    bad.write_text("hello")
    try:
        read_image(bad)
    except ValueError as err:
        assert str(bad) in str(err)
    else:
        raise AssertionError("no error")
