"""`fmnist runs import`: bundles of run records and other MLflow stores become ordinary runs of the
configured store, once; bad sources are refused in one line before anything is written."""

import json
import subprocess
import sys
import tarfile

import mlflow
import pytest
import torch
from mlflow import MlflowClient
from mlflow.entities import LoggedModelOutput, Metric

from fmnist.cli import checkpoint_classifier, main
from fmnist.core.errors import FmnistError, OutputError
from fmnist.core.runs import EpochRecord, summarise
from fmnist.importing.runs import COMPLETE_TAG, ORIGIN_PARENT_TAG, import_runs
from fmnist.models import create_model
from fmnist.offline.records import ORIGIN_RUN_TAG, ORIGIN_STORE_TAG, WEIGHTS_TAG, Bundle, RunRecord
from fmnist.offline.records import Metric as RecordMetric
from fmnist.tracking.trust import load_verified
from fmnist.training.checkpoint import save_checkpoint

from conftest import ROOT

EXP = "offline"
CLASSES = [f"c{i}" for i in range(10)]
T0 = 1_700_000_000_000


@pytest.fixture
def target(tmp_path, monkeypatch):
    """A project folder whose mlflow.db receives the imports."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    project = tmp_path / "project"
    project.mkdir()
    return project


def history(epochs=3):
    return [EpochRecord(epoch=e, train_acc=0.5 + e / 10, val_acc=0.4 + e / 10, epoch_seconds=2.0,
                        cumulative_seconds=2.0 * e, train_loss=1.0 / e, val_loss=1.1 / e) for e in range(1, epochs + 1)]


def training_record(arch, start):
    record = RunRecord(EXP, arch, start_time=start)
    record.log_params({"arch": arch, "kind": "torch", "n_test": 20, "recipe.early_stopping.monitor": "val_acc",
                       "recipe.early_stopping.patience": 5, "recipe.early_stopping.min_delta": 0.001})
    record.set_tags({"fmnist.stage": f"train@{arch}", "arch": arch})
    for row in history():
        record.metrics += [RecordMetric(k, v, start + 1000 * row.epoch, row.epoch) for k, v in row.metrics().items()]
    summary = summarise(arch, "torch", 1234, history(), best_epoch=3)
    record.metrics += [RecordMetric(k, v, start + 5000, 0) for k, v in summary.metrics().items()]
    record.metrics.append(RecordMetric("final_test_acc", 0.61, start + 6000, 0))
    return record


@pytest.fixture
def bundle(tmp_path):
    """Two training runs, mlp with its checkpoint and artifacts, cnn without either, and a report run naming
    mlp by its id in the bundle."""
    b = Bundle(tmp_path / "bundle").create(note="test")
    mlp, cnn = training_record("mlp", T0), training_record("cnn", T0 + 10_000)
    mlp.end("FINISHED")
    mlp.end_time = T0 + 9000
    cnn.status, cnn.end_time = "FAILED", T0 + 19_000
    report = RunRecord(EXP, "report", start_time=T0 + 20_000, status="FINISHED", end_time=T0 + 21_000)
    report.log_params({"architectures": "mlp", "diminishing_returns_tolerance": 0.002, "run_id.mlp": mlp.run_id})
    report.set_tags({"fmnist.stage": "report"})
    mlp.set_tags({f"fmnist.report.{report.run_id}": "true", "fmnist.report_run_id": report.run_id})
    for record in (mlp, cnn, report):
        b.save(record)
    (b.artifact_dir(mlp.run_id) / "history.csv").write_text("epoch\n1\n")
    (b.artifact_dir(mlp.run_id, "probes") / "note.txt").write_text("probe")
    torch.manual_seed(0)
    net = create_model("mlp", num_classes=10, hidden=[8]).eval()
    save_checkpoint(b.checkpoint_file(mlp.run_id), arch="mlp", network="mlp", model_kwargs={"hidden": [8]},
                    num_classes=10, class_names=CLASSES, state_dict=net.state_dict(), mean=0.3, std=0.4)
    return b, {"mlp": mlp, "cnn": cnn, "report": report}


def target_client(project):
    return MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")


def imported(project, experiment=EXP):
    client = target_client(project)
    exp = client.get_experiment_by_name(experiment)
    return {r.data.tags[ORIGIN_RUN_TAG]: r for r in client.search_runs([exp.experiment_id])} if exp else {}


def run_import(source, project, **kwargs):
    lines = []
    summary = import_runs(str(source), load_classifier=checkpoint_classifier, echo=lines.append, root=project,
                          **kwargs)
    return summary, lines


def test_a_bundle_lands_as_ordinary_runs_with_everything_it_recorded(bundle, target):
    b, records = bundle
    summary, lines = run_import(b.root, target)
    assert summary.counts["imported"] == 3 and len(lines) == 3
    client, runs = target_client(target), imported(target)
    manifest = b.manifest()
    report_id = records["report"].run_id
    new_report_id = runs[report_id].info.run_id
    for record in records.values():
        run = runs[record.run_id]
        assert run.info.run_name == record.run_name
        assert (run.info.status, run.info.start_time, run.info.end_time) == (record.status, record.start_time,
                                                                             record.end_time)
        assert run.data.tags[ORIGIN_STORE_TAG] == f"bundle {manifest['host']} {manifest['created']}"
        assert run.data.tags[COMPLETE_TAG] == "true"
        for key, value in record.tags.items():  # ids of the bundle's runs become the imported runs' ids
            key, value = key.replace(report_id, new_report_id), value.replace(report_id, new_report_id)
            assert run.data.tags[key] == value
        for key in {m.key for m in record.metrics}:
            written = sorted((m.step, m.value, m.timestamp) for m in record.metrics if m.key == key)
            assert sorted((m.step, m.value, m.timestamp) for m in client.get_metric_history(run.info.run_id, key)) \
                == written
    mlp, cnn = runs[records["mlp"].run_id], runs[records["cnn"].run_id]
    assert mlp.data.params == records["mlp"].params
    assert mlflow.artifacts.load_text(f"{mlp.info.artifact_uri}/probes/note.txt") == "probe"
    assert {f.path for f in client.list_artifacts(mlp.info.run_id)} == {"history.csv", "probes"}
    assert mlp.data.tags[WEIGHTS_TAG] == "logged"
    assert cnn.data.tags[WEIGHTS_TAG] == "left behind: not in the bundle"
    mlflow.set_tracking_uri(f"sqlite:///{target / 'mlflow.db'}")
    model = load_verified(f"runs:/{mlp.info.run_id}/model")  # its SHA-256 was recorded at the import
    expected, _ = checkpoint_classifier(b.checkpoint_file(records["mlp"].run_id))
    x = torch.rand(3, 1, 28, 28)
    assert torch.allclose(model(x), expected(x))
    report = runs[records["report"].run_id]
    assert report.data.params["run_id.mlp"] == mlp.info.run_id  # ids the runs name each other by follow them


def test_importing_twice_adds_nothing(bundle, target):
    b, _ = bundle
    run_import(b.root, target)
    before = {k: r.info.run_id for k, r in imported(target).items()}
    summary, lines = run_import(b.root, target)
    assert summary.counts == {"imported": 0, "already imported": 3, "replaced an incomplete import": 0}
    assert all(line.startswith("already imported") for line in lines)
    assert {k: r.info.run_id for k, r in imported(target).items()} == before


def test_an_import_cut_short_is_replaced(bundle, target):
    b, records = bundle
    run_import(b.root, target)
    client, cut = target_client(target), imported(target)[records["report"].run_id]
    client.delete_tag(cut.info.run_id, COMPLETE_TAG)  # as if the import was killed before its last write
    summary, _ = run_import(b.root, target)
    assert summary.counts == {"imported": 0, "already imported": 2, "replaced an incomplete import": 1}
    again = imported(target)
    assert len(again) == 3 and client.get_run(cut.info.run_id).info.lifecycle_stage == "deleted"
    report = again[records["report"].run_id]
    assert report.info.run_id != cut.info.run_id and report.data.tags[COMPLETE_TAG] == "true"
    mlp_tags = again[records["mlp"].run_id].data.tags  # the runs that named the replaced one name its successor
    assert mlp_tags["fmnist.report_run_id"] == report.info.run_id
    assert mlp_tags[f"fmnist.report.{report.info.run_id}"] == "true"
    assert f"fmnist.report.{cut.info.run_id}" not in mlp_tags


def test_a_failure_midway_leaves_no_run_behind(bundle, target):
    b, records = bundle
    b.checkpoint_file(records["mlp"].run_id).write_bytes(b"garbage")
    with pytest.raises(OutputError, match="not a readable checkpoint"):
        run_import(b.root, target)
    assert imported(target) == {}


def test_a_record_keeps_the_weights_tag_its_machine_wrote(bundle, target):
    b, records = bundle
    records["cnn"].set_tags({WEIGHTS_TAG: "left behind: 2 GB on gpu-7"})
    b.save(records["cnn"])
    run_import(b.root, target)
    assert imported(target)[records["cnn"].run_id].data.tags[WEIGHTS_TAG] == "left behind: 2 GB on gpu-7"


def test_a_tar_gz_bundle(bundle, target, tmp_path):
    b, records = bundle
    archive = tmp_path / "bundle.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(b.root, arcname="bundle")
    summary, _ = run_import(archive, target)
    assert summary.counts["imported"] == 3 and set(imported(target)) == {r.run_id for r in records.values()}


def test_fmnist_tables_reads_imported_runs(bundle, target, monkeypatch, capsys):
    b, _ = bundle
    run_import(b.root, target)
    monkeypatch.chdir(target)
    with pytest.raises(SystemExit) as done:
        main(["tables", "--experiment", EXP, "--format", "json"])
    assert done.value.code == 0
    tables = json.loads(capsys.readouterr().out)
    assert [row["arch"] for row in tables["leaderboard"]] == ["mlp"]
    assert tables["leaderboard"][0]["test_acc"] == 0.61


@pytest.fixture
def source_store(tmp_path):
    """A second SQLite store with a parent run, and a child run with params, a metric history, an artifact
    and a logged model."""
    uri = f"sqlite:///{tmp_path / 'ci' / 'mlflow.db'}"
    (tmp_path / "ci").mkdir()
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("ci", artifact_location=(tmp_path / "ci" / "artifacts").as_uri())
    client.create_experiment("other", artifact_location=(tmp_path / "ci" / "other").as_uri())
    parent = client.create_run(exp, start_time=T0, run_name="parent").info.run_id
    child = client.create_run(exp, start_time=T0 + 100, run_name="child",
                              tags={"mlflow.parentRunId": parent, "orphan": "x"}).info.run_id
    client.log_batch(child, metrics=[Metric("val_acc", 0.1 * s, T0 + 200 + s, s) for s in range(1, 4)],
                     params=[mlflow.entities.Param("lr", "0.1")])
    client.log_text(child, "hello", "notes/hello.txt")
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "MLmodel").write_text("flavors: {}\n")
    model = client.create_logged_model(exp, name="model", source_run_id=child)
    client.log_model_artifacts(model.model_id, str(model_dir))
    client.finalize_logged_model(model.model_id, "READY")
    client.log_outputs(child, [LoggedModelOutput(model.model_id, 3)])
    client.set_terminated(child, "FINISHED", end_time=T0 + 900)
    client.set_terminated(parent, "FINISHED", end_time=T0 + 1000)
    return tmp_path / "ci" / "mlflow.db", {"parent": parent, "child": child}


def test_another_store_is_copied_with_its_ids_as_tags(source_store, target):
    db, ids = source_store
    summary, _ = run_import(db, target)
    assert summary.counts["imported"] == 2
    runs, client = imported(target, "ci"), target_client(target)
    parent, child = runs[ids["parent"]], runs[ids["child"]]
    assert child.data.tags[ORIGIN_STORE_TAG] == f"sqlite:///{db}"
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id and child.data.tags["orphan"] == "x"
    assert child.data.params == {"lr": "0.1"}
    assert [(m.step, m.value, m.timestamp) for m in client.get_metric_history(child.info.run_id, "val_acc")] == \
        [(s, 0.1 * s, T0 + 200 + s) for s in range(1, 4)]
    assert (child.info.status, child.info.start_time, child.info.end_time) == ("FINISHED", T0 + 100, T0 + 900)
    assert mlflow.artifacts.load_text(f"{child.info.artifact_uri}/notes/hello.txt") == "hello"
    models = client.search_logged_models([child.info.experiment_id],
                                         filter_string=f"source_run_id = '{child.info.run_id}'")
    assert len(models) == 1 and child.data.tags[WEIGHTS_TAG] == "logged"
    assert client.get_run(child.info.run_id).outputs.model_outputs[0].step == 3
    assert run_import(f"sqlite:///{db}", target)[0].counts["already imported"] == 2  # the same store, twice


def test_a_parent_left_out_is_kept_as_a_tag(tmp_path, target):
    uri = f"sqlite:///{tmp_path / 'src.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp_a = client.create_experiment("a", artifact_location=(tmp_path / "a").as_uri())
    exp_b = client.create_experiment("b", artifact_location=(tmp_path / "b").as_uri())
    parent = client.create_run(exp_a).info.run_id
    client.create_run(exp_b, tags={"mlflow.parentRunId": parent})
    run_import(uri, target, experiment="b")
    (child,) = imported(target, "b").values()
    assert "mlflow.parentRunId" not in child.data.tags and child.data.tags[ORIGIN_PARENT_TAG] == parent


def garbage_tar(tmp_path):
    path = tmp_path / "broken.tar.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00 not really gzip")
    return path


def escaping_tar(tmp_path):
    path, evil = tmp_path / "evil.tar.gz", tmp_path / "evil.txt"
    evil.write_text("x")
    with tarfile.open(path, "w:gz") as tar:
        tar.add(evil, arcname="../evil.txt")
    return path


def plain_sqlite(tmp_path):
    import sqlite3

    path = tmp_path / "other.db"
    with sqlite3.connect(path) as db:
        db.execute("create table t (x)")
    return path


def not_a_db(tmp_path):
    path = tmp_path / "notes.db"
    path.write_text("just text")
    return path


BAD_SOURCES = {
    "missing path": (lambda tmp: tmp / "nowhere", "no such file or folder"),
    "folder neither bundle nor store": (lambda tmp: tmp, "neither a bundle"),
    "unreadable tar": (garbage_tar, "not a readable .tar.gz"),
    "tar escaping its folder": (escaping_tar, "would land outside the bundle"),
    "SQLite without MLflow": (plain_sqlite, "without MLflow's tables"),
    "a file that is no database": (not_a_db, "neither a .tar.gz bundle nor an SQLite database"),
}


@pytest.mark.parametrize("case", sorted(BAD_SOURCES))
def test_a_bad_source_is_one_line_and_writes_nothing(case, tmp_path, target):
    make, message = BAD_SOURCES[case]
    source = tmp_path / "sources"
    source.mkdir()
    with pytest.raises(FmnistError, match=message) as err:
        run_import(make(source), target)
    assert "\n" not in str(err.value)
    assert not (target / "mlflow.db").exists()


def test_an_unknown_experiment_is_refused_before_writing(source_store, target):
    with pytest.raises(FmnistError, match="no experiment 'nope' in this store; its experiments: .*ci"):
        run_import(source_store[0], target, experiment="nope")
    assert not (target / "mlflow.db").exists()


def test_a_store_is_not_imported_into_itself(source_store, target, monkeypatch):
    db, _ = source_store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    with pytest.raises(FmnistError, match="is the tracking store being imported into"):
        run_import(db, target)
    assert len(MlflowClient(tracking_uri=f"sqlite:///{db}").search_runs(
        [e.experiment_id for e in MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()])) == 2


def test_the_command_prints_a_line_per_run_and_a_summary(bundle, target):
    b, _ = bundle
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "fmnist.cli", "runs", "import", str(b.root)], cwd=target, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines[:3]] == ["imported"] * 3
    assert lines[-1].startswith("3 runs from bundle ") and lines[-1].endswith("3 imported, 0 already imported, "
                                                                              "0 replaced an incomplete import")
    missing = subprocess.run([sys.executable, "-m", "fmnist.cli", "runs", "import", "nowhere"], cwd=target, env=env,
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "no such file or folder" in missing.stderr


def test_a_best_model_whose_weights_stayed_behind_is_never_a_model_version(tmp_path):
    from sklearn.dummy import DummyClassifier

    from fmnist.workflows.report import LEFT_BEHIND_TAG, register_champion

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = MlflowClient()

    def trained(val: float, weights: str | None) -> dict:
        with mlflow.start_run() as run:
            mlflow.log_metrics({"best_val_acc": val, "final_test_acc": val})
            mlflow.set_tag("data_sha256.train", "ab12")  # the gate compares models on one data version
            if weights:
                mlflow.set_tag(WEIGHTS_TAG, weights)
            else:
                mlflow.sklearn.log_model(DummyClassifier().fit([[0], [1]], [0, 1]), name="model")
        return {"run_id": run.info.run_id, "arch": "mlp", "best_val_acc": val, "num_params": 1}

    first = trained(0.90, None)
    register_champion(client, [first], "m", "report-1")
    behind = trained(0.95, "left behind: in sqlite:///gpu-7.db")
    kept = register_champion(client, [first, behind], "m", "report-2")
    assert len(client.search_model_versions("name = 'm'")) == 1
    assert kept["gate"]["decision"] == "weights left behind" and kept["run_id"] == first["run_id"]
    note = client.get_registered_model("m").tags[LEFT_BEHIND_TAG]
    assert behind["run_id"] in note and "left behind: in sqlite:///gpu-7.db" in note
    assert client.get_model_version_by_alias("m", "champion").run_id == first["run_id"]
    better = trained(0.97, None)
    assert register_champion(client, [first, behind, better], "m", "report-3")["gate"]["promoted"]
    assert LEFT_BEHIND_TAG not in client.get_registered_model("m").tags  # the note of an older report is gone


def test_runs_without_import_still_lists_and_closes_stale_runs(target, monkeypatch, capsys):
    from fmnist import tracking

    tracking.configure(target)
    monkeypatch.chdir(target)
    for argv in (["runs"], ["runs", "--close"]):
        with pytest.raises(SystemExit) as done:
            main(argv)
        assert done.value.code == 0
        assert "no stale runs" in capsys.readouterr().out


def test_the_gate_reads_the_weights_tag_the_records_write():
    from fmnist.reporting import gate

    assert gate.WEIGHTS_TAG == WEIGHTS_TAG
