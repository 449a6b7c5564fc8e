"""The GPU command on the CPU, on a tiny budget: a part trained without MLflow into run records, packed into the
few files a lent machine sends back, unpacked at home; the time limit, the weights policy, the convergence rule."""

import json
import sys
import tarfile
from pathlib import Path
from urllib.error import URLError

import pytest
import torch

from fmnist.core.config import load_params
from fmnist.offline import part as part_module
from fmnist.offline.part import PartOptions, keep_weights, part_runs, summary_text, unpack
from fmnist.offline.records import WEIGHTS_TAG, Bundle, RunRecord
from fmnist.offline.trainer import RunResult, convergence_verdict, ends_by_design, half_budget

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_run  # noqa: E402

DEBIAN = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="module")
def smoke_out(tmp_path_factory):
    """One smoke command of the gpu profile's `small` part: two networks, a baseline, and the transfer recipe
    without its weights file."""
    out = tmp_path_factory.mktemp("out")
    with pytest.MonkeyPatch.context() as mp:
        hub = tmp_path_factory.mktemp("hub")
        mp.setattr(torch.hub, "get_dir", lambda: str(hub))
        mp.setattr(torch.hub, "download_url_to_file", lambda *a, **k: (_ for _ in ()).throw(URLError("offline")))
        code = gpu_run.main(["run", "small", "--smoke", "--recipes", "mlp,cnn1,sk_knn,resnet50_transfer",
                             "--raw-dir", str(DEBIAN), "--out", str(out)])
    assert code == 0
    return out


def test_a_smoke_command_sends_back_at_most_eight_files_and_says_what_ran(smoke_out):
    files = sorted(p.name for p in smoke_out.iterdir())
    assert len(files) <= 8 and "records-small.tar.gz" in files and "summary-small.md" in files
    summary = (smoke_out / "summary-small.md").read_text()
    for recipe in ("mlp", "cnn1", "sk_knn"):
        assert f"| {recipe} | 42 | FINISHED |" in summary
    assert "| resnet50_transfer | 42 | SKIPPED |" in summary and "weights_file" in summary
    assert "Remaining in this part: nothing." in summary and "large (to run)" in summary


def test_what_came_back_unpacks_into_complete_run_records(smoke_out, tmp_path):
    bundle = Bundle(unpack(smoke_out, tmp_path / "results" / "small"))
    manifest = bundle.manifest()
    assert manifest["smoke"] is True and manifest["profile"] == "gpu" and manifest["part"] == "small"
    records = {r.tags["arch"]: r for r in bundle.records()}
    assert set(records) == {"mlp", "cnn1", "sk_knn"}  # the skipped transfer recipe left no run
    mlp = records["mlp"]
    assert mlp.status == "FINISHED" and mlp.experiment == "fmnist-gpu" and mlp.end_time >= mlp.start_time
    assert mlp.params["recipe.precision"] == "auto" and mlp.params["epochs"] == "2"
    val_steps = [m.step for m in mlp.metrics if m.key == "val_acc"]
    assert val_steps == [1, 2]
    keys = {m.key for m in mlp.metrics}
    assert {"final_test_acc", "best_val_acc", "epoch_seconds"} <= keys
    assert {"torch_version", "device", "git_commit", "fmnist.stage"} <= set(mlp.tags)
    artifacts = bundle.run_dir(mlp.run_id) / "artifacts"
    assert (artifacts / "history.csv").is_file() and (artifacts / "evaluation" / "per_class.csv").is_file()
    assert (artifacts / "evaluation" / "confusion.png").is_file()
    for record in records.values():  # every run's weights came back (all small), the baseline's pickle too
        assert bundle.checkpoint_file(record.run_id).is_file() and WEIGHTS_TAG not in record.tags
    assert (bundle.checkpoint_file(records["sk_knn"].run_id).parent / "estimator.pkl").is_file()


def test_unpack_refuses_an_existing_target_and_a_folder_of_two_commands(smoke_out, tmp_path):
    target = tmp_path / "there"
    target.mkdir()
    with pytest.raises(Exception, match="already exists"):
        unpack(smoke_out, target)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for f in smoke_out.iterdir():
        (mixed / f.name).write_bytes(f.read_bytes())
    with tarfile.open(mixed / "w-0123456789abcdef.tar", "w"):
        pass
    with pytest.raises(Exception, match="no such run"):
        unpack(mixed, tmp_path / "new")
    assert not (tmp_path / "new").exists() and not (tmp_path / "new.partial").exists()


def test_weights_over_the_limits_stay_behind_with_the_reason_on_their_runs(tmp_path):
    bundle = Bundle(tmp_path / "b").create()
    results = []
    for name, size, val in (("big", 17 * 2**20, 0.95), ("best_small", 1000, 0.94), ("small", 1000, 0.90)):
        record = RunRecord("e", name)
        bundle.save(record)
        checkpoint = bundle.checkpoint_file(record.run_id)
        checkpoint.parent.mkdir(parents=True)
        checkpoint.write_bytes(b"0" * size)
        results.append(RunResult(name, 42, record.run_id, "FINISHED", val_acc=val))
    kept = keep_weights(bundle, results, PartOptions(max_weights_bytes=1500))
    assert kept == [results[1].run_id]  # the champion is too big; then the best that fits
    tags = {r.run_name: r.tags.get(WEIGHTS_TAG, "") for r in bundle.records()}
    assert tags["big"].startswith("left behind: 18 MB, over the 16.8 MB")
    assert tags["small"].startswith("left behind: 0.0 MB; the 5 weight files") and tags["best_small"] == ""
    assert not bundle.checkpoint_file(results[0].run_id).exists()


def test_a_recipe_that_would_end_past_the_limit_is_left_for_another_command(tmp_path, monkeypatch):
    params = load_params(ROOT / "params.yaml", [], profile="gpu")
    trained = []
    monkeypatch.setattr(part_module, "train_recipe", lambda run, *a, **k: trained.append(run.name) or [])
    monkeypatch.setattr(part_module, "_train_size", lambda paths: 54_000)
    report = part_module.run_part(params, "small", None, None, PartOptions(limit_seconds=60,
                                                                           recipes=["mlp", "resnet18"],
                                                                           assumed_tflops=40))
    assert trained == ["mlp"] and report.remaining == ["resnet18"]  # 2,954 TFLOP at 40 TFLOP/s: 74 s > 60
    text = summary_text(params, report, ["large"], [], smoke=False)
    assert "Remaining in this part: resnet18." in text and "large (done)" in text
    with pytest.raises(Exception, match="not in part 'small'"):
        part_runs(params, "small", PartOptions(recipes=["mlp", "resnet34"]))


def test_a_schedule_that_ends_by_design_is_judged_by_its_half_budget_probe():
    params = load_params(ROOT / "params.yaml", [], profile="gpu")
    resnet = params.run_of("resnet18")
    assert ends_by_design(resnet) and not ends_by_design(load_params(ROOT / "params.yaml", [], profile="full")
                                                         .run_of("mlp"))
    probe = half_budget(resnet)
    assert (probe.recipe.epochs, probe.recipe.seeds, probe.recipe.network) == (10, 1, "resnet18")
    converged, reason = convergence_verdict(0.9450, 0.9430, 20, 10, 0.005)
    assert converged and "gain +0.0020 < tolerance 0.005): converged" in reason
    converged, reason = convergence_verdict(0.9450, 0.9350, 20, 10, 0.005)
    assert not converged and reason.endswith("cut")


def test_plan_prints_every_part_with_its_estimate(capsys):
    assert gpu_run.main(["plan"]) == 0
    out = capsys.readouterr().out
    assert "part small" in out and "part large" in out and "shakeshake_resnet34" in out
    assert out.count("estimated") == 4 and "part accuracy" in out  # one line per part, and the total


def test_a_bad_part_is_one_line_before_any_work(tmp_path, capsys):
    assert gpu_run.main(["run", "medium", "--raw-dir", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "part 'medium': profile gpu has parts small, large" in err and not (tmp_path / "out").exists()


def _command(mode: str, out: Path, **env: str) -> str:
    import os
    import subprocess

    environ = {**os.environ, "OUT": str(out), "GPU_CARRY": str(out / "no-carry"), "GPU_RAW_DIR": str(DEBIAN),
               "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", **env}
    part = env.pop("GPU_PART", "small")
    environ = {k: v for k, v in environ.items() if k != "GPU_PART"}
    args = ["bash", str(ROOT / "benchmarks" / "gpu_command.sh"), part, *([mode] if mode == "smoke" else [])]
    done = subprocess.run(args, cwd=ROOT, env=environ, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout


def test_the_prepared_gpu_command_runs_its_smoke_on_the_cpu(tmp_path):
    out = _command("smoke", tmp_path / "out", GPU_RECIPES="mlp")
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert "gpu_command: small smoke done" in out and len(files) <= 8
    assert {"log-small.txt", "records-small.tar.gz", "summary-small.md"} <= set(files)
    assert "| mlp | 42 | FINISHED |" in (tmp_path / "out" / "summary-small.md").read_text()


def test_the_prepared_gpu_command_measures_throughput_and_leaves_what_does_not_fit(tmp_path):
    out = _command("measured", tmp_path / "out", GPU_RECIPES="resnet18", GPU_DEVICE="cpu", GPU_LIMIT_SECONDS="60",
                   GPU_THROUGHPUT_NETWORKS="mlp", GPU_THROUGHPUT_STEPS="2")
    files = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"throughput.md", "throughput.json", "records-small.tar.gz", "log-small.txt"} <= files and len(files) <= 8
    assert "Remaining in this part: resnet18." in out


def test_a_smoke_part_comes_home_as_mlflow_runs_the_report_tables_read(smoke_out, tmp_path, monkeypatch, capsys):
    """The whole way: the command's files unpacked, imported (twice: the second adds nothing), the tables rebuilt
    from MLflow alone, the imported model loadable."""
    from mlflow import MlflowClient

    from fmnist.cli import main

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    bundle = unpack(smoke_out, project / "results" / "gpu" / "small")
    for _ in range(2):
        with pytest.raises(SystemExit) as done:
            main(["runs", "import", str(bundle)])
        assert done.value.code == 0
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("fmnist-gpu").experiment_id])
    assert sorted(r.data.tags["arch"] for r in runs) == ["cnn1", "mlp", "sk_knn"]  # once each
    assert all(r.info.status == "FINISHED" and r.data.tags[WEIGHTS_TAG] == "logged" for r in runs)
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main(["tables", "--experiment", "fmnist-gpu", "--format", "json"])
    assert done.value.code == 0
    board = json.loads(capsys.readouterr().out)["leaderboard"]
    assert {row["arch"] for row in board} == {"cnn1", "mlp", "sk_knn"}
    assert all(row["test_acc"] is not None for row in board)
    with pytest.raises(SystemExit) as done:  # the networks' saved logits, soft-voted, chosen on validation
        main(["ensemble", "--experiment", "fmnist-gpu"])
    assert done.value.code == 0
    ensemble = client.search_runs([runs[0].info.experiment_id], filter_string="tags.kind = 'ensemble'")[0]
    members = ensemble.data.tags["fmnist.ensemble.members"].split(",")
    networks = {r.info.run_id for r in runs if r.data.tags["kind"] == "torch"}
    assert set(members) <= networks and ensemble.data.params["candidates"] == "2"
    assert ensemble.data.metrics["ensemble_val_acc"] >= ensemble.data.metrics["member_1_val_acc"]


def test_the_prepared_speed_record_command_runs_on_the_cpu_and_its_records_import(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    from fmnist.cli import main

    out = _command("smoke", tmp_path / "out", SPEED_RECIPES="fastcnn", GPU_PART="speed")
    assert "gpu_command: speed smoke done" in out and "| **mean ± std (n=1)** |" in out
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    bundle = unpack(tmp_path / "out", tmp_path / "speed")
    with pytest.raises(SystemExit) as done:
        main(["runs", "import", str(bundle)])
    assert done.value.code == 0
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("fmnist-gpu-speedrun").experiment_id])
    parent = next(r for r in runs if r.data.tags["mlflow.runName"] == "speedrun fastcnn")
    child = next(r for r in runs if r.data.tags["mlflow.runName"] == "seed 42")
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id  # the import rewrote the parent's id
    assert parent.data.metrics["speedrun_n"] == 1 and child.data.metrics["speedrun_test_acc"] > 0.5


def test_the_prepared_accuracy_command_runs_its_smoke_on_the_cpu(tmp_path):
    """acc96 at full width is a GPU's work: the smoke runs the same command on WRN-28-1."""
    out = _command("smoke", tmp_path / "out", GPU_PART="accuracy", GPU_SET="recipes.acc96.model.widen=1")
    summary = (tmp_path / "out" / "summary-accuracy.md").read_text()
    assert "gpu_command: accuracy smoke done" in out and "| acc96 | 42 | FINISHED |" in summary
    with tarfile.open(tmp_path / "out" / "records-accuracy.tar.gz") as tar:  # its logits kept, for the ensemble
        assert any(name.endswith("artifacts/evaluation/logits.npz") for name in tar.getnames())
