"""benchmarks/bench_throughput.py runs end to end on the CPU (so the GPU session's command cannot rot), without
MLflow (the GPU machines have none), and turns bad input into one line and exit code 2."""

import gzip
import importlib.util
import json
import subprocess
import sys

import pytest
import torch

from fmnist.data.tensors import DeviceDataset, Normalizer, train_batches

from conftest import ROOT, idx_bytes, synthetic_images

SCRIPT = ROOT / "benchmarks" / "bench_throughput.py"
TRAIN_IMAGES = 600  # not a multiple of either batch size (128, 256): the last, smaller batch is warmed up too
FAST = ["--device", "cpu", "--steps", "2", "--warmup", "1", "--compile", "off", "--threads", "1"]


def load_script():
    spec = importlib.util.spec_from_file_location("bench_throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def gz_dir(tmp_path):
    """The four .gz idx files in one folder, as the GPU session's --raw-dir holds them (a few hundred images)."""
    folder = tmp_path / "gz"
    folder.mkdir()
    for prefix, n in (("train", TRAIN_IMAGES), ("t10k", 20)):
        x, y = synthetic_images(n)
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(x, 0x803)))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(y, 0x801)))
    return folder


def test_two_networks_on_the_cpu_without_mlflow_give_a_table_and_every_figure(gz_dir, tmp_path):
    out = tmp_path / "out"
    argv = ["--networks", "mlp,fastcnn", "--raw-dir", str(gz_dir), "--peak-size", "256", "--out", str(out), *FAST]
    # As on the GPU machines: no MLflow (nothing the script needs may import it), and `fmnist` not installed (the
    # editable install's finder dropped, run from outside the repository): the script finds the tree itself.
    runner = ("import runpy, sys; sys.modules['mlflow'] = None; "
              "sys.meta_path[:] = [f for f in sys.meta_path if not f.__module__.startswith('__editable__')]; "
              f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", runner, *argv], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    table = done.stdout.rstrip().splitlines()
    assert table[-4].startswith("| network | batch |")  # the table comes last
    rows = {line.split("|")[1].strip(): line for line in table[-2:]}
    assert set(rows) == {"mlp", "fastcnn"}
    assert (out / "throughput.md").read_text().rstrip().endswith(table[-1])

    record = json.loads((out / "throughput.json").read_text())
    assert record["environment"]["device"] == "cpu" and "torch" in record["environment"]["versions"]
    assert "git commit" in record["environment"] and "load average (1, 5, 15 min)" in record["environment"]
    by_name = {row["recipe"]: row for row in record["networks"]}
    assert set(by_name) == {"mlp", "fastcnn"}
    assert by_name["fastcnn"]["batch_size"] == 256
    for row in by_name.values():
        assert row["errors"] == {}
        for figure in (row["plain"]["images_per_s"], row["ours"]["images_per_s"], row["speedup"],
                       row["gflop_per_image"], row["ours_tflops"], row["share_of_peak"], row["peak"]["tflops"]):
            assert figure > 0
        assert row["plain"]["steps"] == row["ours"]["steps"] == 2
        assert 0 < row["ours"]["images"] <= 2 * row["batch_size"]  # an epoch's last batch is smaller
    assert by_name["fastcnn"]["gflop_per_image"] > 10 * by_name["mlp"]["gflop_per_image"]


@pytest.mark.parametrize("argv, says", [
    (["--networks", "mlp,no_such_net"], "unknown network 'no_such_net'"),
    (["--networks", "sk_svc"], "unknown network 'sk_svc'"),  # a scikit-learn baseline has no training steps
    (["--networks", "mlp", "--profile", "no_such_profile"], "profile"),
    (["--networks", "mlp", "--steps", "0"], "--steps 0: must be positive"),
])
def test_bad_input_is_one_line_and_exit_code_2(argv, says, capsys):
    assert load_script().main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and says in err, err


def test_cuda_asked_for_without_a_gpu_is_one_line_and_exit_code_2(capsys, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert load_script().main(["--networks", "mlp", "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "no CUDA device" in err and "--device cpu" in err


def test_a_failing_network_gets_an_error_row_and_the_rest_go_on(gz_dir, tmp_path, capsys, monkeypatch):
    bench = load_script()
    real = bench.measure_ours

    def out_of_memory_for_mlp(b, plan):
        if plan.arch == "mlp":
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(b, plan)
    monkeypatch.setattr(bench, "measure_ours", out_of_memory_for_mlp)
    argv = ["--networks", "mlp,fastcnn", "--raw-dir", str(gz_dir), "--peak-tflops", "1", "--out", str(tmp_path), *FAST]
    assert bench.main(argv) == 0
    rows = {row["recipe"]: row for row in json.loads((tmp_path / "throughput.json").read_text())["networks"]}
    assert rows["mlp"]["errors"] == {"ours": "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"}
    assert rows["mlp"]["plain"]["images_per_s"] > 0 and "speedup" not in rows["mlp"]
    assert rows["fastcnn"]["errors"] == {} and rows["fastcnn"]["speedup"] > 0
    mlp_line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| mlp |"))
    assert "ours: RuntimeError: CUDA out of memory" in mlp_line


@pytest.mark.parametrize("images, batch_size", [(600, 128), (600, 256), (512, 256), (257, 256), (513, 256), (100, 256)])
def test_the_warmed_up_last_batch_is_the_one_train_batches_ends_an_epoch_with(images, batch_size):
    load_script()
    throughput = sys.modules["datapath.throughput"]
    data = DeviceDataset(torch.zeros(images, 1, 28, 28, dtype=torch.uint8), torch.zeros(images, dtype=torch.long))
    sizes = [len(y) for _, y in train_batches(data, batch_size, torch.Generator(), Normalizer(0.0, 1.0))]
    expected = sizes[-1] if len(set(sizes)) > 1 else None
    assert throughput.last_batch_size(images, batch_size) == expected
