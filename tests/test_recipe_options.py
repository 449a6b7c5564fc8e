"""Each recipe option takes effect: schedules' values, SWA's averaged weights, augmentation's output,
label smoothing, gradient clipping, optimisers, the two-phase fine-tuning, bf16 / channels_last /
compile on the CPU, and test-time flips."""

import math

import pytest
import torch
from torch import nn

from fmnist.core.errors import DeviceError
from fmnist.core.recipe import (
    AugmentConfig,
    EarlyStoppingConfig,
    FinetuneConfig,
    OptimizerConfig,
    RecipeConfig,
    SchedulerConfig,
    SwaConfig,
)
from fmnist.data.prepare import Arrays
from fmnist.data.tensors import BatchAugment, DeviceDataset, Normalizer, random_erasing, random_zoom, zoom
from fmnist.models import create_model
from fmnist.training.loop import fit
from fmnist.training.optim import LrSchedule, build_optimizer, recompute_batch_norm
from fmnist.training.runtime import Runtime, seed_everything
from fmnist.training.steps import StepRules, evaluate, train_one_epoch

from conftest import synthetic_images

CPU = torch.device("cpu")
NORM = Normalizer(0.2, 0.3)


def _replace(config, **changes):
    return config.model_copy(update=changes)


def data(n=120, seed=1):
    x, y = synthetic_images(n, seed=seed)
    return DeviceDataset.from_arrays(Arrays(x, y.astype("int64")), CPU)


def lrs(cfg: SchedulerConfig, epochs: int, steps: int, lr: float = 1.0) -> list[list[float]]:
    """The learning rate of every batch of every epoch."""
    param = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=lr)
    schedule = LrSchedule(optimizer, cfg, epochs, steps, mode="max")
    out = []
    for _ in range(epochs):
        epoch = []
        for _ in range(steps):
            epoch.append(schedule.lr)
            optimizer.step()
            schedule.after_batch()
        out.append(epoch)
        schedule.after_epoch(0.5)
    return out


def test_step_and_multistep_schedules():
    step = lrs(SchedulerConfig(name="step", step_size=2, factor=0.5), 5, 3)
    assert [e[0] for e in step] == pytest.approx([1, 1, 0.5, 0.5, 0.25])
    assert all(len(set(e)) == 1 for e in step)  # constant within an epoch
    multi = lrs(SchedulerConfig(name="multistep", milestones=[2, 4], factor=0.1), 5, 2)
    assert [e[0] for e in multi] == pytest.approx([1, 1, 0.1, 0.1, 0.01])


def test_cosine_schedule():
    cos = lrs(SchedulerConfig(name="cosine", min_lr=0.0), 4, 2)
    assert [e[0] for e in cos] == pytest.approx([(1 + math.cos(math.pi * t / 4)) / 2 for t in range(4)])


def test_onecycle_starts_at_lr_peaks_at_max_lr_then_anneals():
    flat = sum(lrs(SchedulerConfig(name="onecycle", max_lr=2.0, pct_start=0.25), 4, 10, lr=0.1), [])
    assert flat[0] == pytest.approx(0.1)
    peak = flat.index(max(flat))
    assert max(flat) == pytest.approx(2.0) and peak == pytest.approx(0.25 * 40 - 1, abs=1)
    assert flat[-1] < 0.1 / 100  # final lr = initial / final_div_factor
    assert all(a <= b for a, b in zip(flat[:peak], flat[1:peak + 1]))  # rises, then
    assert all(a >= b for a, b in zip(flat[peak:], flat[peak + 1:]))  # falls


def test_cyclic_schedule_is_triangular_per_batch():
    flat = sum(lrs(SchedulerConfig(name="cyclic", max_lr=1.0, cycle_epochs=1.0), 4, 4, lr=0.2), [])
    # half cycle = 1 epoch = 4 batches: 0.2 -> 1.0 -> 0.2 -> 1.0
    assert flat[:9] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 0.8, 0.6, 0.4, 0.2])
    assert flat[10] == pytest.approx(0.6) and flat[12] == pytest.approx(1.0)  # the second cycle repeats it


def test_plateau_still_follows_the_monitored_metric():
    out = lrs(SchedulerConfig(name="plateau", factor=0.5, patience=0), 4, 1)
    assert [e[0] for e in out] == pytest.approx([1, 1, 0.5, 0.25])  # 0.5 every epoch = no improvement


def test_optimizers_from_the_recipe():
    model = nn.Linear(3, 2)
    sgd = build_optimizer(model, OptimizerConfig(name="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4))
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.defaults["nesterov"] and sgd.defaults["momentum"] == 0.9 and sgd.defaults["weight_decay"] == 5e-4
    adamw = build_optimizer(model, OptimizerConfig(name="adamw", lr=0.01, weight_decay=0.05))
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["weight_decay"] == 0.05
    assert isinstance(build_optimizer(model, OptimizerConfig(name="adam")), torch.optim.Adam)


RECIPE = RecipeConfig(model={"hidden": [16]}, batch_size=40, optimizer=OptimizerConfig(name="sgd", lr=0.05),
                      early_stopping=EarlyStoppingConfig(patience=10, stop=False))


def test_swa_keeps_the_average_of_the_weights_from_its_start_epoch():
    seed_everything(0, True)
    model = create_model("mlp", hidden=[16])
    snapshots = []
    recipe = _replace(RECIPE, swa=SwaConfig(enabled=True, start=0.5, lr=0.01, anneal_epochs=1))
    result = fit(model, recipe, 4, data(), data(60, seed=2), NORM, torch.Generator().manual_seed(0),
                 on_epoch=lambda r: snapshots.append(model[1].weight.detach().clone()))
    # start 0.5 of 4 epochs: averaging after epochs 3 and 4
    assert result.swa["swa_start_epoch"] == 3
    assert torch.allclose(result.best_state["1.weight"], (snapshots[2] + snapshots[3]) / 2, atol=1e-6)
    assert not torch.allclose(result.best_state["1.weight"], snapshots[3])
    # the SWA lr: epoch 3 still at the schedule's lr, epoch 4 annealed to swa.lr
    assert [r.lr for r in result.history] == pytest.approx([0.05, 0.05, 0.05, 0.01])
    assert 0 <= result.swa["swa_val_acc"] <= 1


def test_swa_recomputes_batch_norm_statistics():
    bn = nn.Sequential(nn.BatchNorm1d(2))
    batches = [torch.tensor([[1.0, 10.0], [3.0, 30.0]]), torch.tensor([[5.0, 50.0], [7.0, 70.0]])]
    bn[0].running_mean.fill_(-100)
    recompute_batch_norm(bn, batches)
    assert bn[0].running_mean.tolist() == pytest.approx([4.0, 40.0])  # the plain mean over all batches
    assert bn[0].momentum == 0.1 and bn.training  # left as it was


def test_zoom_scales_about_the_centre():
    x = torch.zeros(2, 1, 28, 28, dtype=torch.uint8)
    x[..., 10:18, 10:18] = 200  # an 8x8 square in the middle
    out = zoom(x, torch.tensor([1.5, 0.5]))
    assert out.dtype == torch.uint8
    bright = (out > 100).flatten(1).sum(1)
    assert bright[0] == pytest.approx(12 * 12, abs=16) and bright[1] == pytest.approx(4 * 4, abs=8)
    assert torch.equal(zoom(x, torch.ones(2)), x)
    assert torch.equal(random_zoom(x, 0.0, torch.Generator()), x)
    sizes = (random_zoom(x[:1].expand(200, 1, 28, 28), 0.25, torch.Generator().manual_seed(0)) > 100).flatten(1).sum(1)
    assert sizes.min() >= (8 * 0.75) ** 2 - 8 and sizes.max() <= (8 * 1.25) ** 2 + 12 and len(set(sizes.tolist())) > 3


def test_random_erasing_blanks_one_rectangle_per_chosen_image():
    x = torch.ones(64, 1, 28, 28)
    out = random_erasing(x, 1.0, 0.33, torch.Generator().manual_seed(0))
    erased = (out == 0).flatten(1).sum(1)
    assert (erased > 0).all() and (erased <= 0.4 * 28 * 28).all()
    for img in out[:8, 0]:  # the erased pixels form one filled rectangle
        rows, cols = torch.nonzero(img == 0, as_tuple=True)
        box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert box == len(rows)
    half = random_erasing(x, 0.5, 0.33, torch.Generator().manual_seed(0))
    chosen = ((half == 0).flatten(1).sum(1) > 0).float().mean()
    assert 0.25 < chosen < 0.75
    assert torch.equal(random_erasing(x, 0.0, 0.33, torch.Generator()), x)


def test_batch_augment_applies_the_configured_ops():
    x = data(32).x
    aug = BatchAugment.from_config(AugmentConfig(hflip=1.0))
    assert torch.equal(aug.pixels(x, torch.Generator()), x.flip(-1))
    erase = BatchAugment.from_config(AugmentConfig(erasing=1.0))
    out = erase.normalized(NORM(x), torch.Generator().manual_seed(0))
    assert ((out == 0).flatten(1).sum(1) > 0).all()


def _one_epoch(model, rules=None, runtime=None, lr=0.1, batch_size=120):
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    return train_one_epoch(model, data(), optimizer, batch_size, torch.Generator().manual_seed(0), NORM,
                           BatchAugment(), runtime, rules)


def test_label_smoothing_changes_the_training_loss_as_defined():
    torch.manual_seed(0)
    model = create_model("mlp", hidden=[8], dropout=0.0)
    for _ in range(15):  # confident, mostly right predictions: where smoothing matters
        _one_epoch(model, lr=0.5, batch_size=30)
    plain, _ = _one_epoch(model, lr=0.0)  # lr 0: the weights stay as they are
    smooth, _ = _one_epoch(model, StepRules(label_smoothing=0.2), lr=0.0)
    d = data()
    with torch.no_grad():
        logits = model(NORM(d.x))
    assert plain == pytest.approx(nn.functional.cross_entropy(logits, d.y).item(), rel=1e-4)
    assert smooth == pytest.approx(nn.functional.cross_entropy(logits, d.y, label_smoothing=0.2).item(), rel=1e-4)
    assert abs(smooth - plain) > 0.05 * plain


def test_gradient_clipping_bounds_the_step():
    torch.manual_seed(0)
    model = create_model("mlp", hidden=[8], dropout=0.0)
    start = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    _one_epoch(model, StepRules(grad_clip=1e-3), lr=1.0)
    clipped = torch.cat([p.detach().flatten() for p in model.parameters()]) - start
    assert clipped.norm() <= 1e-3 + 1e-6
    torch.manual_seed(0)
    free = create_model("mlp", hidden=[8], dropout=0.0)
    _one_epoch(free, lr=1.0)
    assert (torch.cat([p.detach().flatten() for p in free.parameters()]) - start).norm() > 10 * clipped.norm()


def test_compile_builds_the_network_with_inductor_and_keeps_its_weights_plain():
    """`compile: true` on the CPU, with the real backend (inductor generates and builds C++ kernels: about 20 s
    for this tiny network): the compiled fit computes what the eager one does, and the kept state loads
    strictly into a freshly built network."""
    import torch._dynamo

    recipe = _replace(RECIPE, model={}, channels_last=True)
    losses, kept = {}, {}
    for compiled in (False, True):
        seed_everything(0, True)
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        model = create_model("fastcnn", stem=4, widths=[4, 4, 4])
        run = _replace(recipe, compile=compiled)
        result = fit(model, run, 2, data(), data(60, seed=2), NORM, torch.Generator().manual_seed(0),
                     runtime=Runtime.for_recipe(run, CPU))
        losses[compiled] = [r.train_loss for r in result.history]
        kept[compiled] = result.best_state
    assert sum(torch._dynamo.utils.counters["inductor"].values()) > 0  # inductor built it (eager counts none)
    assert losses[True] == pytest.approx(losses[False], rel=1e-3)
    fresh = create_model("fastcnn", stem=4, widths=[4, 4, 4])
    fresh.load_state_dict(kept[True])  # strict: no _orig_mod. prefixes
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)


def test_swa_keeps_averaged_weights_with_batch_norm_statistics_recomputed_for_them():
    seed_everything(0, True)
    recipe = _replace(RECIPE, model={}, eval_batch_size=50,
                                 swa=SwaConfig(enabled=True, start=0.5, lr=0.01, anneal_epochs=1))
    model = create_model("fastcnn", widths=[8, 8, 8])
    train = data()
    result = fit(model, recipe, 4, train, data(60, seed=2), NORM, torch.Generator().manual_seed(0))
    kept = create_model("fastcnn", widths=[8, 8, 8])
    kept.load_state_dict(result.best_state)
    expected = create_model("fastcnn", widths=[8, 8, 8])
    expected.load_state_dict(result.best_state)
    recompute_batch_norm(expected, [NORM(train.x[i:i + 50]) for i in range(0, len(train), 50)])
    assert torch.allclose(kept[1].running_mean, expected[1].running_mean, atol=1e-6)
    assert torch.allclose(kept[1].running_var, expected[1].running_var, atol=1e-6)
    assert not torch.allclose(kept[1].running_mean, torch.zeros_like(kept[1].running_mean))
    # the averaged weights differ from the last epoch's
    assert not torch.equal(kept[0].weight, model[0].weight)


def test_bf16_autocast_and_channels_last_run_on_the_cpu():
    seen = []
    model = create_model("cnn1")
    model[0].register_forward_hook(lambda m, i, o: seen.append((o.dtype, i[0].is_contiguous(
        memory_format=torch.channels_last))))
    runtime = Runtime(CPU, amp_dtype=torch.bfloat16, channels_last=True)
    net = runtime.prepare_model(model)
    loss, _ = _one_epoch(net, runtime=runtime, batch_size=60)
    assert math.isfinite(loss)
    assert seen[0] == (torch.bfloat16, True)
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)


def test_precision_auto_is_bf16_where_the_device_has_native_bf16(monkeypatch):
    from fmnist.training import devices

    auto, bf16 = _replace(RECIPE, precision="auto"), _replace(RECIPE, precision="bf16")
    for native, expected in ((True, torch.bfloat16), (False, None)):
        monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda n=native: n)
        assert Runtime.for_recipe(auto, CPU).amp_dtype == expected
        assert Runtime.for_recipe(_replace(RECIPE, precision="fp32"), CPU).amp_dtype is None
    with pytest.raises(DeviceError, match="precision bf16 needs native bf16 arithmetic, which this CPU lacks"):
        Runtime.for_recipe(bf16, CPU)  # emulated bf16 is slower than fp32: refused, not silently used
    for supported, expected in ((True, torch.bfloat16), (False, torch.float16)):  # pre-Ampere GPUs: fp16, scaled
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True, s=supported: s)
        assert Runtime.for_recipe(auto, torch.device("cuda")).amp_dtype == expected


def test_native_bf16_is_read_from_the_cpu_flags(tmp_path):
    from fmnist.training.devices import cpu_has_native_bf16

    with_flag, without = tmp_path / "a", tmp_path / "b"
    with_flag.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16 avx512_vnni\n")
    without.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512bw\n")
    assert cpu_has_native_bf16(str(with_flag)) and not cpu_has_native_bf16(str(without))
    assert not cpu_has_native_bf16(str(tmp_path / "missing"))


def test_evaluation_under_bf16_gives_fp32_logits_and_loss():
    torch.manual_seed(0)
    model = create_model("cnn1").eval()
    d = data(40)
    loss32, acc32, logits32 = evaluate(model, d, NORM, 20)
    loss16, acc16, logits16 = evaluate(model, d, NORM, 20, runtime=Runtime(CPU, amp_dtype=torch.bfloat16,
                                                                              channels_last=True))
    assert logits16.dtype == torch.float32 and math.isfinite(loss16)
    assert loss16 == pytest.approx(loss32, rel=0.05)


def test_tta_flip_averages_the_mirror_image():
    torch.manual_seed(0)
    model = create_model("cnn1").eval()
    d = data(20)
    _, _, plain = evaluate(model, d, NORM, 50)
    _, _, tta = evaluate(model, d, NORM, 50, tta_flip=True)
    with torch.no_grad():
        mirror = model(NORM(d.x).flip(-1))
    assert torch.allclose(tta, (plain + mirror) / 2, atol=1e-5)
    # the evaluate stage's and the MLflow model's classifier average the same way
    from fmnist.models.wrapper import NormalizedClassifier, pixels_to_input
    classifier = NormalizedClassifier(model, 0.2, 0.3, [str(i) for i in range(10)], tta_flip=True).eval()
    with torch.no_grad():
        assert torch.allclose(classifier(pixels_to_input(d.x[:, 0].numpy())), tta, atol=1e-5)


class _TwoPhase(nn.Module):
    """A fine-tunable model (the loop's `Finetunable`): a frozen backbone, one stage to unfreeze."""

    finetune_stages = ("layer4",)

    def __init__(self):
        super().__init__()
        self.backbone = nn.Linear(784, 16)
        self.head = nn.Linear(16, 10)
        self.backbone.requires_grad_(False)
        self.calls = []

    def begin_finetune(self, stages):
        self.calls.append(list(stages))
        self.backbone.requires_grad_(True)

    def forward(self, x):
        return self.head(torch.relu(self.backbone(x.flatten(1))))


def test_finetune_unfreezes_and_switches_to_the_small_lr():
    model = _TwoPhase()
    frozen = model.backbone.weight.clone()
    recipe = _replace(RECIPE, optimizer=OptimizerConfig(name="adam", lr=1e-2),
                                 finetune=FinetuneConfig(enabled=True, start=0.5, lr=1e-4, stages=["layer4"]))
    snapshots = []
    result = fit(model, recipe, 4, data(), data(60, seed=2), NORM, torch.Generator().manual_seed(0),
                 on_epoch=lambda r: snapshots.append(model.backbone.weight.detach().clone()))
    assert model.calls == [["layer4"]]
    assert [r.lr for r in result.history] == pytest.approx([1e-2, 1e-2, 1e-4, 1e-4])
    assert torch.equal(snapshots[1], frozen)  # phase 1: backbone untouched
    assert not torch.equal(snapshots[3], frozen)  # phase 2: fine-tuned


def test_the_gpu94_recipe_runs_end_to_end_on_the_cpu():
    """params.yaml's GPU recipe (one-cycle, SWA, label smoothing, channels_last, TTA, precision auto) on
    small learnable data and a narrow net: it learns, and its SWA average is what gets scored."""
    from fmnist.core.config import load_params

    from conftest import ROOT

    recipe = load_params(ROOT / "params.yaml").recipe("gpu94")
    recipe = _replace(recipe, batch_size=40, eval_batch_size=60,
                                 model={**recipe.model, "stem": 8, "widths": [8, 16, 16]})
    seed_everything(0, True)
    model = create_model("speedrun", **recipe.model)
    result = fit(model, recipe, 4, data(600), data(60, seed=2), NORM, torch.Generator().manual_seed(0),
                 test=data(60, seed=3))
    losses = [r.train_loss for r in result.history]
    assert len(losses) == 4 and losses[-1] < 0.8 * losses[0]  # it learns (chance is a loss of 2.30)
    assert result.swa is not None and result.swa["swa_start_epoch"] == 3
    assert result.swa["swa_test_acc"] > 0.8 and result.swa["swa_val_acc"] > 0.8
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
