"""The larger architectures: shapes, parameter counts against the reference layouts, trainability,
shake-shake's random mixing and the transfer model's weights and freezing interface."""

import os
from urllib.error import URLError

import pytest
import torch
import torchvision
from torch import nn

from fmnist.core.errors import WeightsError
from fmnist.models import create_model, list_models, model_info
from fmnist.models.checks import check_model_options
from fmnist.models.init import init_weights
from fmnist.models.shakeshake import ShakeBlock, ShakeShake, shake_shake
from fmnist.models.transfer import imagenet_weights

ZOO = ["cnn1", "cnn3", "basic_cnn", "mini_vgg", "wrn16_4", "resnet18", "resnet34", "resnet50", "mobilenet_v2",
       "shufflenet_v2", "shakeshake_resnet34", "resnet50_transfer"]
NO_DOWNLOAD = {"resnet50_transfer": {"pretrained": False}}  # never touch the network in tests
WEIGHTS = imagenet_weights()
WEIGHTS_FILE = os.path.basename(WEIGHTS.url)


def n_params(model):
    return sum(p.numel() for p in model.parameters())


conv = lambda cin, cout, k=3: cin * cout * k * k  # bias-free conv
conv_b = lambda cin, cout, k=3: cin * cout * k * k + cout  # conv with bias (Keras style)
dense = lambda nin, nout: nin * nout + nout
bn = lambda c: 2 * c


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny batches gain nothing from a second thread, and on a shared 2-core machine two spinning OpenMP
    threads made these tests up to 20x slower; restored afterwards for the other test modules."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(url, *args, **kwargs):
        raise URLError(f"tests do not download ({url})")
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


def test_all_are_registered_and_their_default_options_validate():
    assert set(ZOO) <= set(list_models())
    for name in ZOO:
        assert check_model_options(name, {}) is None, name
    assert check_model_options("shufflenet_v2", {"width": "3.0"}).startswith("options")
    assert check_model_options("wrn16_4", {"dropout": 1.5}).startswith("options")
    info = model_info("resnet50_transfer")
    assert (info.input, info.finetune, info.probe) == ("unit", ("layer1", "layer2", "layer3", "layer4"), False)


@pytest.mark.parametrize("arch", ZOO)
@pytest.mark.parametrize("num_classes", [10, 5])
@torch.no_grad()
def test_output_shape(arch, num_classes):
    torch.manual_seed(0)
    model = create_model(arch, num_classes=num_classes, **NO_DOWNLOAD.get(arch, {})).eval()
    if num_classes == 10:  # one forward per case: the big ones are slow on CPU
        init_weights(model, "he")
    out = model(torch.rand(2, 1, 28, 28))
    assert out.shape == (2, num_classes) and torch.isfinite(out).all()


def _out_size(model, module, x):
    sizes = []
    handle = module.register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape[-2:])))
    model.eval()(x)
    handle.remove()
    return sizes[0]


def test_feature_maps_end_at_the_documented_sizes():
    with torch.device("meta"):  # shapes only: no memory, no arithmetic
        x = torch.rand(1, 1, 28, 28)
        for arch, kwargs, size in [("resnet18", {}, (4, 4)), ("resnet34", {}, (4, 4)),
                                   ("resnet18", {"stem_pool": True}, (2, 2)), ("resnet50", {}, (2, 2))]:
            model = create_model(arch, **kwargs)
            assert _out_size(model, model.layer4, x) == size, (arch, kwargs)
        model = create_model("mobilenet_v2")
        assert _out_size(model, model.features, x) == (4, 4)
        model = create_model("shufflenet_v2")
        assert _out_size(model, model.conv5, x) == (4, 4)
        model = create_model("wrn16_4")
        assert _out_size(model, model.layer3, x) == (7, 7)
        model = create_model("shakeshake_resnet34")
        assert _out_size(model, model.layer4, x) == (4, 4)


def test_keras_cnn_parameter_counts():
    assert n_params(create_model("cnn1")) == conv_b(1, 32) + dense(32 * 13 * 13, 64) + dense(64, 10)
    assert n_params(create_model("cnn3")) == (conv_b(1, 32) + conv_b(32, 64) + conv_b(64, 128)
                                              + dense(128 * 3 * 3, 128) + dense(128, 10))
    cbn = lambda cin, cout: conv_b(cin, cout) + bn(cout)
    basic = (cbn(1, 64) + cbn(64, 64) + cbn(64, 128) + cbn(128, 128) + cbn(128, 256)
             + dense(256, 128) + dense(128, 10))
    assert n_params(create_model("basic_cnn")) == basic < 1_000_000
    vgg = (cbn(1, 64) + cbn(64, 64) + cbn(64, 128) + cbn(128, 128) + cbn(128, 256) + cbn(256, 256)
           + dense(256 * 9, 512) + bn(512) + dense(512, 10))
    assert n_params(create_model("mini_vgg")) == vgg


def test_wrn16_4_matches_the_published_layout():
    def block(cin, cout):
        return bn(cin) + conv(cin, cout) + bn(cout) + conv(cout, cout) + (conv(cin, cout, 1) if cin != cout else 0)

    expected = conv(1, 16)
    for cin, cout in [(16, 64), (64, 128), (128, 256)]:
        expected += block(cin, cout) + block(cout, cout)
    expected += bn(256) + dense(256, 10)
    assert n_params(create_model("wrn16_4")) == expected
    assert abs(expected - 2.75e6) < 0.01e6  # the paper's "2.7M" for WRN-16-4


@pytest.mark.parametrize("arch,reference,old_stem,new_stem", [  # 3-channel stem conv weights -> 1-channel 3x3
    ("resnet18", torchvision.models.resnet18, 64 * 3 * 7 * 7, 64 * 1 * 3 * 3),
    ("resnet34", torchvision.models.resnet34, 64 * 3 * 7 * 7, 64 * 1 * 3 * 3),
    ("resnet50", torchvision.models.resnet50, 64 * 3 * 7 * 7, 64 * 1 * 3 * 3),
    ("mobilenet_v2", torchvision.models.mobilenet_v2, 32 * 3 * 3 * 3, 32 * 1 * 3 * 3),
    ("shufflenet_v2", torchvision.models.shufflenet_v2_x1_0, 24 * 3 * 3 * 3, 24 * 1 * 3 * 3),
])
def test_torchvision_adaptations_change_only_the_stem(arch, reference, old_stem, new_stem):
    expected = n_params(reference(weights=None, num_classes=10)) - old_stem + new_stem
    assert n_params(create_model(arch)) == expected


def test_shakeshake_has_two_resnet34_branches_per_block():
    def branch(cin, cout):
        return conv(cin, cout) + bn(cout) + conv(cout, cout) + bn(cout)

    expected, cin = conv(1, 64) + bn(64), 64
    for stage, count in enumerate([3, 4, 6, 3]):
        cout = 64 * 2 ** stage
        for j in range(count):
            c = cin if j == 0 else cout
            expected += 2 * branch(c, cout) + (conv(c, cout, 1) + bn(cout) if c != cout else 0)
        cin = cout
    expected += dense(512, 10)
    model = create_model("shakeshake_resnet34")
    assert n_params(model) == expected
    # cross-check with torchvision: one more copy of every residual branch of the (adapted) ResNet-34
    resnet34 = create_model("resnet34")
    branches = sum(p.numel() for name, p in resnet34.named_parameters()
                   if name.startswith("layer") and "downsample" not in name)
    assert n_params(model) == n_params(resnet34) + branches


OVERFIT = [  # (arch, options, images, steps, lr): small batches and widths keep each case to a few seconds
    ("cnn1", {}, 20, 40, 1e-3),
    ("cnn3", {}, 20, 60, 2e-3),
    ("basic_cnn", {}, 8, 15, 3e-3),
    ("mini_vgg", {}, 8, 10, 1e-3),
    ("wrn16_4", {}, 4, 8, 1e-3),
    ("resnet18", {"stem_pool": True}, 4, 8, 1e-3),
    ("resnet34", {"stem_pool": True}, 4, 8, 1e-3),
    ("resnet50", {}, 4, 8, 1e-3),
    ("mobilenet_v2", {}, 4, 8, 3e-3),
    ("shufflenet_v2", {"width": "0.5"}, 4, 8, 3e-3),
    ("shakeshake_resnet34", {"width": 8}, 4, 25, 3e-3),
    ("resnet50_transfer", {"pretrained": False, "hidden": 64}, 8, 25, 1e-3),  # from scratch: every layer
]


@torch.no_grad()
def _recalibrate_batch_norm(model, x):
    """Set BN running statistics to the final weights' batch statistics, so eval mode sees what training saw."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = 1.0
        elif isinstance(module, nn.Dropout):
            module.eval()
    model(x)


@pytest.mark.parametrize("arch,options,images,steps,lr", OVERFIT, ids=[case[0] for case in OVERFIT])
def test_can_overfit_a_tiny_batch(arch, options, images, steps, lr):
    torch.manual_seed(0)
    model = create_model(arch, **options)
    x = torch.randn(images, 1, 28, 28)  # standardised pixels, or [0, 1] ones for a model that normalises itself
    if model_info(arch).input == "unit":
        x = torch.rand(images, 1, 28, 28)
    y = torch.arange(images) % 10
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    _recalibrate_batch_norm(model, x)
    model.eval()
    with torch.no_grad():
        assert (model(x).argmax(1) == y).float().mean() == 1.0


def test_shake_shake_mixes_at_random_in_training_and_averages_in_eval():
    torch.manual_seed(0)
    block = ShakeBlock(4, 4, stride=1)
    x = torch.randn(6, 4, 5, 5)
    block.train()
    with torch.no_grad():
        assert not torch.allclose(block(x), block(x))
    block.eval()
    with torch.no_grad():
        first, second = block(x), block(x)
        expected = torch.relu(x + 0.5 * block.branch1(x) + 0.5 * block.branch2(x))
    assert torch.equal(first, second)
    assert torch.allclose(first, expected, atol=1e-6)
    model = create_model("shakeshake_resnet34", width=4)
    z = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert not torch.allclose(model.train()(z), model(z))
        assert torch.equal(model.eval()(z), model(z))


def test_shake_shake_backward_uses_an_independent_coefficient():
    x1 = torch.randn(3, 2, requires_grad=True)
    x2 = torch.randn(3, 2, requires_grad=True)
    alpha, beta = torch.tensor([[0.1], [0.5], [0.9]]), torch.tensor([[0.7], [0.2], [0.4]])
    out = ShakeShake.apply(x1, x2, alpha, beta)
    assert torch.allclose(out, alpha * x1 + (1 - alpha) * x2)
    out.sum().backward()
    assert torch.allclose(x1.grad, beta.expand(3, 2)) and torch.allclose(x2.grad, (1 - beta).expand(3, 2))

    torch.manual_seed(0)  # through the public helper: per-sample alpha forward, a different beta backward
    a = torch.zeros(256, 3, requires_grad=True)
    b = torch.ones(256, 3, requires_grad=True)
    out = shake_shake(a, b, training=True)
    alpha_implied = 1 - out.detach()  # alpha * 0 + (1 - alpha) * 1
    out.sum().backward()
    beta_used = a.grad
    assert torch.allclose(a.grad + b.grad, torch.ones_like(a.grad))
    for coefficient in (alpha_implied, beta_used):
        assert torch.equal(coefficient, coefficient[:, :1].expand_as(coefficient))  # one per sample
        assert 0 <= coefficient.min() and coefficient.max() <= 1 and coefficient[:, 0].std() > 0.2
    assert (alpha_implied - beta_used).abs().mean() > 0.1


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty torch.hub cache under tmp_path (TORCH_HOME), whatever hub dir the session had."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)
    assert torch.hub.get_dir() == str(tmp_path / "hub")
    return tmp_path


def test_transfer_loads_the_cached_imagenet_weights(torch_home):
    torch.manual_seed(1)
    reference = torchvision.models.resnet50(weights=None)
    reference.layer4[-1].bn3.running_mean.normal_()
    checkpoints = torch_home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(reference.state_dict(), checkpoints / WEIGHTS_FILE)
    model = create_model("resnet50_transfer", num_classes=7, pretrained=True)
    assert torch.equal(model.backbone.conv1.weight, reference.conv1.weight)
    assert torch.equal(model.backbone.layer4[-1].bn3.running_mean, reference.layer4[-1].bn3.running_mean)
    assert model.backbone.fc[-1].out_features == 7
    assert model.eval()(torch.rand(2, 1, 28, 28)).shape == (2, 7)


@pytest.mark.parametrize("failure", [URLError("offline"), OSError("network unreachable"), RuntimeError("bad hash")])
def test_transfer_without_weights_says_where_to_put_them(torch_home, monkeypatch, failure):
    def fail(*args, **kwargs):
        raise failure
    monkeypatch.setattr(torch.hub, "download_url_to_file", fail)
    with pytest.raises(WeightsError) as err:
        create_model("resnet50_transfer", pretrained=True)
    message = str(err.value)
    for needle in (WEIGHTS_FILE, str(torch_home / "hub" / "checkpoints"), WEIGHTS.url, "TORCH_HOME",
                   "pretrained: false", "recipes.resnet50_transfer.model"):
        assert needle in message


def test_transfer_from_scratch_trains_every_layer():
    model = create_model("resnet50_transfer", pretrained=False)
    assert all(p.requires_grad for p in model.parameters())  # random weights: nothing worth freezing


def test_transfer_freezes_the_pretrained_backbone_until_finetuning(torch_home):
    checkpoints = torch_home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), checkpoints / WEIGHTS_FILE)
    model = create_model("resnet50_transfer", pretrained=True)
    backbone = model.backbone
    for name, module in backbone.named_modules():
        if name.startswith("fc"):
            assert all(p.requires_grad for p in module.parameters()), name
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            assert module.weight.requires_grad and module.bias.requires_grad, name
        elif isinstance(module, (nn.Conv2d, nn.Linear)):
            assert not module.weight.requires_grad, name
    model.begin_finetune(["layer3", "layer4"])
    assert all(p.requires_grad for p in backbone.layer3.parameters())
    assert all(p.requires_grad for p in backbone.layer4.parameters())
    assert not backbone.layer1[0].conv1.weight.requires_grad
    assert not backbone.conv1.weight.requires_grad
    with pytest.raises(ValueError) as err:
        model.begin_finetune(["layer5"])
    assert "layer5" in str(err.value) and "layer1" in str(err.value) and "layer4" in str(err.value)
    assert set(model.finetune_stages) == {"layer1", "layer2", "layer3", "layer4"}


def test_transfer_loads_the_weights_file_the_recipe_names(tmp_path, torch_home):
    torch.manual_seed(2)
    reference = torchvision.models.resnet50(weights=None)
    torch.save(reference.state_dict(), tmp_path / "resnet50-imagenet.pth")
    model = create_model("resnet50_transfer", num_classes=10, pretrained=True,
                         weights_file=str(tmp_path / "resnet50-imagenet.pth"))
    assert torch.equal(model.backbone.layer1[0].conv1.weight, reference.layer1[0].conv1.weight)
    assert not model.backbone.layer1[0].conv1.weight.requires_grad  # frozen until fine-tuning, as with the cache


@pytest.mark.parametrize("content, needle", [(None, "no file at"), (b"not a state dict", "not a readable"),
                                              ({"fc.weight": torch.zeros(1)}, "does not hold ResNet-50")])
def test_transfer_weights_file_problems_are_one_line(tmp_path, torch_home, content, needle):
    path = tmp_path / "weights.pth"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(WeightsError) as err:
        create_model("resnet50_transfer", pretrained=True, weights_file=str(path))
    message = str(err.value)
    assert needle in message and "recipes.resnet50_transfer.model.weights_file" in message
    assert "\n" not in message
