import pytest
import torch

from fmnist.models import UnknownModelError, create_model, list_models
from fmnist.models.init import init_weights


def n_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("arch", ["mlp", "cnn4", "qstp_cnn5", "speedrun", "fastcnn"])
@pytest.mark.parametrize("num_classes", [10, 5])
def test_output_shape(arch, num_classes):
    model = create_model(arch, num_classes=num_classes).eval()
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, num_classes)


def test_parameter_counts_match_the_reference_layouts():
    # 784-256-128-10 dense layers with biases
    assert n_params(create_model("mlp")) == 784 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10
    conv = lambda cin, cout: cin * cout * 9 + cout + 2 * cout  # conv weights+bias, BN affine
    dense = lambda nin, nout: nin * nout + nout
    cnn4 = (conv(1, 32) + conv(32, 32) + conv(32, 64) + conv(64, 128) + dense(128 * 49, 512) + 2 * 512
            + dense(512, 128) + 2 * 128 + dense(128, 10))
    assert n_params(create_model("cnn4")) == cnn4
    qstp = (conv(1, 32) + conv(32, 64) + conv(64, 128) + conv(128, 256) + conv(256, 512)
            + dense(512 * 49, 100) + 2 * 100 + dense(100, 10))
    assert n_params(create_model("qstp_cnn5")) == qstp


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(UnknownModelError) as err:
        create_model("vgg99")
    assert "unknown architecture 'vgg99'" in str(err.value)
    for name in list_models():
        assert name in str(err.value)


@pytest.mark.parametrize("scheme", ["he", "xavier"])
def test_init_schemes_reset_weights(scheme):
    torch.manual_seed(0)
    model = create_model("mlp")
    before = model[1].weight.clone()
    init_weights(model, scheme)
    assert not torch.equal(before, model[1].weight)
    assert torch.count_nonzero(model[1].bias) == 0


@pytest.mark.parametrize("arch", ["mlp", "cnn4", "qstp_cnn5", "speedrun", "fastcnn"])
def test_can_overfit_a_tiny_batch(arch):
    torch.manual_seed(0)
    model = create_model(arch)
    x = torch.randn(20, 1, 28, 28)
    y = torch.arange(20) % 10
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(40):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    assert (model(x).argmax(1) == y).float().mean() == 1.0


def test_speed_networks_pool_to_3x3_and_scale_their_logits():
    model = create_model("fastcnn", widths=[8, 16, 32]).eval()
    features = model[:-4](torch.zeros(1, 1, 28, 28))  # before global pool, flatten, linear, scale
    assert features.shape == (1, 32, 3, 3)
    assert model[-1].factor == pytest.approx(1 / 9)
    wide = create_model("speedrun")
    assert sum(isinstance(m, torch.nn.Conv2d) for m in wide.modules()) == 1 + 3 * 2  # stem + 2 convs per block
    with pytest.raises(ValueError, match="three block widths"):
        create_model("speedrun", widths=[64, 128])
