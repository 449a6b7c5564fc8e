"""Classify image files of any size and colour, converted the way the training data looks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fmnist.data.prepare import CLASS_NAMES

SIZE = 28


def to_fashion_mnist(image: Image.Image) -> np.ndarray:
    """Any image -> uint8 [28, 28]: grayscale, light object on a black background, centred, aspect kept."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16-bit or float: rescale, do not clip
        values = np.asarray(image, dtype=np.float64)
        span = values.max() - values.min()
        scaled = (values - values.min()) * (255.0 / span) if span > 0 else np.zeros_like(values)
        image = Image.fromarray(scaled.round().astype(np.uint8))
    if image.mode in ("RGBA", "LA", "P"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)  # transparent areas count as background
    gray = np.asarray(image.convert("L"), dtype=np.uint8)
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    if np.median(border) > 127:  # photos are dark-on-light; Fashion-MNIST is light-on-black
        gray = 255 - gray
    picture = Image.fromarray(gray)
    if picture.size != (SIZE, SIZE):  # fit the longer side to 28, enlarging small images too
        scale = SIZE / max(picture.size)
        size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
        picture = picture.resize(size, Image.Resampling.LANCZOS)
    canvas = Image.new("L", (SIZE, SIZE), 0)
    canvas.paste(picture, ((SIZE - picture.width) // 2, (SIZE - picture.height) // 2))
    return np.asarray(canvas, dtype=np.uint8)


def read_image(path: str | Path) -> np.ndarray:
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
            return to_fashion_mnist(image)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read it as an image ({err})") from err


@dataclass(frozen=True)
class Prediction:
    path: str
    label: str
    probability: float


def class_names_of(model) -> list[str]:
    return list(getattr(model, "class_names", None) or CLASS_NAMES)


def classify(model, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(class index, probability) per uint8 image, for a model taking [N, 1, 28, 28] in [0, 1]."""
    import torch

    from fmnist.training.scoring import pixel_logits

    best = torch.softmax(pixel_logits(model, images), dim=1).max(dim=1)
    return best.indices.numpy(), best.values.numpy()


def predict_files(model, paths: list[str]) -> tuple[list[Prediction], list[str]]:
    """Predictions for the readable files, and one error message per unreadable one."""
    images, readable, errors = [], [], []
    for path in paths:
        try:
            images.append(read_image(path))
            readable.append(path)
        except ValueError as err:
            errors.append(str(err))
    if not images:
        return [], errors
    names = class_names_of(model)
    indices, probabilities = classify(model, np.stack(images))
    return [Prediction(p, names[i], float(q)) for p, i, q in zip(readable, indices, probabilities)], errors
