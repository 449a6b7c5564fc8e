"""The CUDA path, exercised on the CPU: cuDNN settings per recipe, evaluation without per-batch host
syncs, fp16 with a gradient scaler, the CUDA generators in the saved state, and the state written in the
background while training goes on."""

import io
import threading

import pytest
import torch
from torch import nn

from fmnist.core.errors import DeviceError
from fmnist.core.recipe import OptimizerConfig, RecipeConfig
from fmnist.data.prepare import Arrays
from fmnist.data.tensors import DeviceDataset, Normalizer, eval_batches, train_batches
from fmnist.models import create_model
from fmnist.training import devices
from fmnist.training.loop import Fitter
from fmnist.training.resume import StateWriter, snapshot
from fmnist.training.runtime import Runtime, resolve_precision, seed_everything
from fmnist.training.steps import DivergenceWatch, evaluate, train_steps

from conftest import synthetic_images

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
NORM = Normalizer(0.2, 0.3)
FP16 = Runtime(CPU, amp_dtype=torch.float16)  # fp16 is refused on a CPU by the recipe, but the scaler path runs
RECIPE = RecipeConfig(model={"hidden": [32]}, batch_size=32, optimizer=OptimizerConfig(name="adam", lr=1e-3),
                      precision="fp32")


def data(n, seed=1):
    x, y = synthetic_images(n, seed=seed)
    return DeviceDataset.from_arrays(Arrays(x, y.astype("int64")), CPU)


@pytest.fixture
def global_determinism():
    """Leave torch's global determinism settings as the test found them."""
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    yield
    torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[2:]


def test_seeding_sets_both_determinism_choices_whichever_came_before(global_determinism):
    for deterministic in (True, False, True):
        seed_everything(0, deterministic)
        assert torch.are_deterministic_algorithms_enabled() is deterministic
        assert torch.backends.cudnn.deterministic is deterministic
        assert torch.backends.cudnn.benchmark is not deterministic  # autotuned kernels where bits may differ


def test_evaluation_gives_the_figures_of_a_per_batch_reference():
    torch.manual_seed(0)
    model, d = create_model("cnn1").eval(), data(70)  # 70 images in batches of 32: a short last batch
    loss, acc, logits = evaluate(model, d, NORM, 32)
    total, outputs = 0.0, []
    with torch.no_grad():
        for x, y in eval_batches(d, 32, NORM):
            out = model(x).float()
            total += nn.functional.cross_entropy(out, y, reduction="sum").item()
            outputs.append(out.cpu())
    expected = torch.cat(outputs)
    assert loss == total / len(d)  # to the bit, as before the sums stayed on the device
    assert acc == (expected.argmax(1) == d.y).float().mean().item()
    assert 0 < acc < 1 and torch.equal(logits, expected)


def test_precision_auto_is_fp16_on_a_cuda_gpu_without_bf16_and_fp16_is_refused_on_a_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    assert resolve_precision("auto", CUDA) == torch.float16
    assert resolve_precision("fp16", CUDA) == torch.float16
    assert Runtime(CUDA, torch.float16).precision == "fp16" and Runtime(CUDA, torch.float16).scales_gradients
    assert not Runtime(CUDA, torch.bfloat16).scales_gradients and not Runtime(CPU).grad_scaler().is_enabled()
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: False)
    assert resolve_precision("auto", CPU) is None
    with pytest.raises(DeviceError, match="precision fp16 is for CUDA GPUs; on this CPU it would be emulated"):
        resolve_precision("fp16", CPU)


def test_an_fp16_step_with_inf_gradients_is_skipped_not_reported_as_divergence():
    torch.manual_seed(0)
    model = create_model("mlp", hidden=[32])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**127)  # the scaled loss overflows: every gradient is inf
    batches = train_batches(data(32), 32, torch.Generator().manual_seed(0), NORM, None)
    watch = DivergenceWatch(epoch=1)
    loss, _ = train_steps(model, batches, optimizer, FP16, observers=(watch,), scaler=scaler)
    watch.check()  # the loss itself was finite
    assert loss == pytest.approx(2.3, abs=0.3)
    assert scaler.get_scale() == 2.0**126  # backed off
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name  # the step was skipped


def test_fp16_training_keeps_its_loss_scale_through_a_saved_state():
    train, val = data(96), data(40, seed=2)

    def fitter():
        torch.manual_seed(0)
        return Fitter(create_model("mlp", hidden=[32]), RECIPE, 2, train, val, NORM, torch.Generator().manual_seed(0),
                      runtime=FP16)

    first = fitter()
    assert first.scaler.is_enabled()
    record = first.run_epoch()
    assert 0 < record.train_loss < 3 and record.val_acc > 0
    first.scaler.update(new_scale=512.0)  # as after backing off from overflows
    buffer = io.BytesIO()
    torch.save(snapshot(first.state_dict()), buffer)  # as the state file holds it
    resumed = fitter()
    resumed.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=False))
    assert resumed.scaler.get_scale() == 512.0
    assert resumed.run_epoch().epoch == 2


def test_the_saved_state_holds_and_restores_the_cuda_generators(monkeypatch):
    cuda_states = [torch.arange(4, dtype=torch.uint8), torch.arange(4, 8, dtype=torch.uint8)]
    restored = []
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [s.clone() for s in cuda_states])
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.append)
    fitter = Fitter(create_model("mlp", hidden=[8]), RECIPE, 1, data(40), data(20), NORM, torch.Generator())
    state = fitter.state_dict()
    assert [torch.equal(a, b) for a, b in zip(state["rng"]["cuda"], cuda_states, strict=True)] == [True, True]
    fitter.load_state_dict(state)
    assert len(restored) == 1 and all(torch.equal(a, b) for a, b in zip(restored[0], cuda_states, strict=True))
    del state["rng"]["cuda"]  # a state saved before the CUDA generators were kept
    fitter.load_state_dict(state)
    assert len(restored) == 1


class Killed(BaseException):
    pass


def test_the_state_is_copied_when_submitted_while_training_goes_on():
    weights = {"w": torch.zeros(3)}
    release, written = threading.Event(), []

    def write(state):
        release.wait()
        written.append(state["w"].clone())

    with StateWriter() as writer:
        writer.submit(write, weights)
        weights["w"].add_(1)  # the next epoch trains while the write waits
        release.set()
    assert torch.equal(written[0], torch.zeros(3))


def test_one_write_at_a_time():
    release, second_started, order = threading.Event(), threading.Event(), []

    def first():
        release.wait()
        order.append("first done")

    def second():
        second_started.set()
        order.append("second")

    writer = StateWriter()
    writer.submit(first)
    submitter = threading.Thread(target=writer.submit, args=(second,))
    submitter.start()
    try:
        # The second write must wait for the first, still blocked, so it cannot have started.
        assert not second_started.wait(timeout=0.5)
    finally:
        release.set()
    submitter.join()
    writer.wait()
    assert order == ["first done", "second"]


def test_a_failed_write_raises_on_the_next_submit_or_wait():
    def fail():
        raise OSError("disk full")

    writer = StateWriter()
    writer.submit(fail)
    with pytest.raises(OSError, match="disk full"):
        writer.submit(lambda: None)
    writer.submit(fail)
    with pytest.raises(OSError, match="disk full"):
        writer.wait()
    writer.wait()  # raised once


def test_an_error_in_training_waits_for_the_last_write_and_stays_the_error(tmp_path):
    state_file = tmp_path / "state.pt"

    def slow_write(state):
        threading.Event().wait(0.3)  # still writing when the training fails
        torch.save(state, state_file)

    with pytest.raises(Killed):
        with StateWriter() as writer:
            writer.submit(slow_write, {"next_epoch": 3})
            raise Killed
    assert torch.load(state_file)["next_epoch"] == 3  # epoch 2's state is there to resume

    def fail(_):
        raise OSError("disk full")

    with pytest.raises(Killed) as raised:
        with StateWriter() as writer:
            writer.submit(fail, {})
            raise Killed
    assert "the last state write failed too: OSError: disk full" in raised.value.__notes__[0]
