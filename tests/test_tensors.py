import numpy as np
import torch

from fmnist.data.prepare import Arrays
from fmnist.data.tensors import (
    BatchAugment,
    DeviceDataset,
    Normalizer,
    eval_batches,
    random_hflip,
    random_translate,
    train_batches,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_hflip_probability_one_and_zero():
    x = torch.arange(2 * 28 * 28, dtype=torch.uint8).view(2, 1, 28, 28)
    assert torch.equal(random_hflip(x, 1.0, gen()), x.flip(-1))
    assert torch.equal(random_hflip(x, 0.0, gen()), x)
    flipped = random_hflip(torch.zeros(4000, 1, 1, 2, dtype=torch.uint8) + torch.tensor([0, 1], dtype=torch.uint8),
                           0.5, gen())
    assert 0.45 < (flipped[:, 0, 0, 0] == 1).float().mean() < 0.55


def test_translate_shifts_each_image_and_fills_black():
    x = torch.zeros(64, 1, 28, 28, dtype=torch.uint8)
    x[:, :, 14, 14] = 255
    out = random_translate(x, 3, gen())
    for image in out:
        (ys, xs) = torch.nonzero(image[0] == 255, as_tuple=True)
        assert len(ys) == 1 and abs(ys.item() - 14) <= 3 and abs(xs.item() - 14) <= 3
        assert int(image.sum()) == 255  # nothing else appears
    shifts = {tuple(torch.nonzero(image[0]).tolist()[0]) for image in out}
    assert len(shifts) > 10


def test_translate_matches_a_manual_shift():
    x = torch.randint(0, 255, (1, 1, 28, 28), dtype=torch.uint8)
    g = gen(5)
    out = random_translate(x, 2, g)
    g = gen(5)
    dy = torch.randint(0, 5, (1,), generator=g).item() - 2
    dx = torch.randint(0, 5, (1,), generator=g).item() - 2
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    expected = padded[:, :, 2 + dy:30 + dy, 2 + dx:30 + dx]
    assert torch.equal(out, expected)


def test_epoch_visits_every_sample_once_and_normalises():
    arrays = Arrays(np.full((10, 28, 28), 255, np.uint8), np.arange(10))
    data = DeviceDataset.from_arrays(arrays, torch.device("cpu"))
    seen, sizes = [], []
    for x, y in train_batches(data, 3, gen(), Normalizer(0.5, 0.5), BatchAugment(0.5, 1)):
        assert x.dtype == torch.float32 and x.shape[1:] == (1, 28, 28)
        seen += y.tolist()
        sizes.append(len(y))
    assert sorted(seen) == list(range(10))
    assert sizes == [3, 3, 4]  # no batch of one image: batch norm could not train on it
    x, _ = next(eval_batches(data, 4, Normalizer(0.5, 0.5)))
    assert torch.allclose(x, torch.ones_like(x))
